"""spikelab.kernels.sparse_linear: the sparse-input product gives F.linear's values and gradients
(float32 and float64, every output width, graded and signed inputs, empty rows, NaN), takes the
dense path where it would not pay or cannot run, and its kernels write only their own places
and stay in bounds; spikelab.layers.Linear uses it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import spikelab.layers as L
from spikelab.kernels import sparse_linear as S
from spikelab.kernels.numba import sparse as K

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.float64: dict(rtol=1e-12, atol=1e-11)}


@pytest.fixture
def sparse_calls(monkeypatch) -> list:
    """Counts the sparse products (forward and no-grad) that ran."""
    calls = []
    real = S._product
    monkeypatch.setattr(S, "_product", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    return calls


@pytest.fixture
def always_sparse(monkeypatch):
    """The cost model out of the way: every eligible input takes the sparse path."""
    monkeypatch.setattr(S, "MARGIN", float("inf"))
    monkeypatch.setattr(S, "MIN_WORK", 0)


def _spikes(shape, density, dtype=torch.float32, graded=False) -> torch.Tensor:
    x = (torch.rand(shape) < density).to(dtype)
    return x * torch.randn(shape, dtype=dtype) if graded else x


def _against_dense(x, weight, bias, dtype):
    """Values and every gradient of S.linear against F.linear on copies of the same tensors."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    copies = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    ours = S.linear(*leaves)
    theirs = F.linear(*copies)
    assert ours.dtype == dtype and ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, **TOL[dtype])
    g = torch.randn_like(theirs)
    ours.backward(g)
    theirs.backward(g)
    for a, b in zip(leaves, copies):
        if a is not None:
            assert a.grad.dtype == dtype
            torch.testing.assert_close(a.grad, b.grad, **TOL[dtype])
    return ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows, k, n, density, graded", [
    (3200, 1024, 1024, 0.15, False),  # the deep MLP's hidden layer
    (600, 700, 1000, 0.05, True),  # a partial last tile (1000 = 15 * 64 + 40), graded values
    (513, 129, 64, 0.2, True),  # one tile; rows not a multiple of any block
    (300, 70, 20, 0.1, False),  # narrower than one tile: all padding
    (1100, 300, 130, 0.02, True),  # many empty rows
])
def test_matches_f_linear_values_and_gradients(always_sparse, sparse_calls, dtype, rows, k, n, density, graded):
    x = _spikes((rows, k), density, dtype, graded)
    weight = torch.randn(n, k, dtype=dtype) / k ** 0.5
    bias = torch.randn(n, dtype=dtype)
    y = _against_dense(x, weight, bias, dtype)
    assert sparse_calls == [rows]
    assert type(y.grad_fn).__name__ == "SparseLinearBackward"


def test_no_bias_and_partial_gradients(always_sparse, sparse_calls):
    x = _spikes((400, 256), 0.1)
    weight = torch.randn(96, 256)
    _against_dense(x, weight, None, torch.float32)
    frozen = weight.clone()  # only the input wants gradients (a frozen layer) ...
    xi = x.clone().requires_grad_()
    S.linear(xi, frozen).sum().backward()
    torch.testing.assert_close(xi.grad, torch.ones(400, 96) @ frozen)
    wi = weight.clone().requires_grad_()  # ... and only the weight (the first layer)
    S.linear(x, wi).sum().backward()
    torch.testing.assert_close(wi.grad, torch.ones(400, 96).t() @ x, rtol=1e-5, atol=1e-4)
    assert len(sparse_calls) == 3


def test_leading_dimensions_and_strided_input(always_sparse, sparse_calls):
    x = _spikes((20, 16, 200), 0.1).requires_grad_()  # [T, B, features]
    weight = torch.randn(128, 200, requires_grad=True)
    y = S.linear(x, weight)
    assert y.shape == (20, 16, 128)
    torch.testing.assert_close(y, F.linear(x, weight), rtol=1e-5, atol=1e-4)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(20, 16, 128) @ weight.detach())
    xt = _spikes((200, 320), 0.1).t()  # not contiguous
    torch.testing.assert_close(S.linear(xt, weight.detach()), F.linear(xt, weight.detach()), rtol=1e-5, atol=1e-4)
    assert len(sparse_calls) == 2


def test_all_zero_input_gives_the_bias(always_sparse, sparse_calls):
    weight, bias = torch.randn(128, 300), torch.randn(128)
    x = torch.zeros(500, 300, requires_grad=True)
    y = S.linear(x, weight.requires_grad_(), bias.requires_grad_())
    assert torch.equal(y, bias.detach().expand(500, 128))
    y.sum().backward()
    assert torch.equal(weight.grad, torch.zeros(128, 300))
    torch.testing.assert_close(x.grad, torch.ones(500, 128) @ weight.detach())
    assert sparse_calls == [500]


def test_nan_and_inf_inputs_spread_as_in_the_dense_product(always_sparse):
    x = _spikes((300, 200), 0.1)
    x[7, 3], x[11, 5] = float("nan"), float("inf")
    weight = torch.randn(128, 200)
    ours, theirs = S.linear(x, weight), F.linear(x, weight)
    assert torch.equal(ours.isnan(), theirs.isnan()) and torch.equal(ours.isinf(), theirs.isinf())
    assert ours[7].isnan().all() and not ours[6].isnan().any()
    finite = theirs.isfinite()
    torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-5, atol=1e-4)


# ----- when the sparse path runs ------------------------------------------------------------------

def test_the_cost_model_sends_dense_and_narrow_inputs_to_torch(sparse_calls):
    weight = torch.randn(1024, 1024)
    with torch.no_grad():
        S.linear(_spikes((3200, 1024), 0.1), weight)  # sparse, wide: pays
        assert sparse_calls == [3200]
        S.linear(_spikes((3200, 1024), 0.5), weight)  # half the inputs nonzero: dense
        S.linear(torch.randn(3200, 1024), weight)  # analog input: dense
        S.linear(_spikes((3200, 1024), 0.1), torch.randn(20, 1024))  # a 20-class readout: dense
        S.linear(_spikes((8, 64), 0.1), torch.randn(128, 64))  # too small to matter
    assert sparse_calls == [3200]
    assert S.relative_cost(0.05, 3200, 1024) < S.relative_cost(0.15, 3200, 1024) < S.MARGIN
    assert S.relative_cost(0.15, 32, 1024) > S.MARGIN  # one step of a small batch: packing the weight dominates
    assert S.relative_cost(0.0, 3200, 20) > S.MARGIN  # a narrow layer never pays


@pytest.mark.parametrize("density, rows, n_out, sparse", [
    # measured on the 2-core machine, ms sparse / dense under no_grad (docs/kernels.md)
    (0.15, 3200, 1024, True),  # 21.3 / 37.2
    (0.05, 3200, 256, True),  # 5.3 / 10.3
    (0.15, 3200, 256, True),  # 7.1 / 9.5
    (0.15, 3200, 128, False),  # 5.8 / 5.0
    (0.25, 3200, 1024, False),  # 38.9 / 37.2
    (0.05, 3200, 64, False),  # 3.6 / 3.4
    (0.15, 128, 1024, True),  # 1.89 / 2.71
    (0.15, 32, 1024, False),  # 0.98 / 1.01: one step of a batch of 32
])
def test_the_cost_model_follows_the_measured_crossovers(density, rows, n_out, sparse):
    assert (S.relative_cost(density, rows, n_out) <= S.MARGIN) == sparse


def test_small_products_stay_dense(sparse_calls, monkeypatch):
    monkeypatch.setattr(S, "MARGIN", float("inf"))  # only MIN_WORK decides
    weight = torch.randn(256, 512)
    S.linear(_spikes((20, 512), 0.1), weight)  # 20 * 512 * 256 below MIN_WORK: dense
    S.linear(_spikes((32, 512), 0.1), weight)  # exactly MIN_WORK
    S.linear(_spikes((40, 512), 0.1), weight)  # above it
    assert 32 * 512 * 256 == S.MIN_WORK and sparse_calls == [32, 40]


@pytest.mark.parametrize("case", ["half", "mixed dtypes", "integer", "1-D", "3-D weight", "in_features",
                                  "2-D bias", "bias size", "no rows", "no inputs", "no outputs", "autocast"])
def test_inputs_it_cannot_take_run_f_linear_unchanged(always_sparse, sparse_calls, case):
    x, weight, bias = _spikes((300, 200), 0.1), torch.randn(128, 200), None
    if case == "half":
        x, weight = x.half(), weight.half()
    elif case == "mixed dtypes":
        x = x.double()
    elif case == "integer":
        x = x.long()
    elif case == "1-D":
        x = x[0]
    elif case == "in_features":
        weight = weight[:, :150]
    elif case == "2-D bias":
        bias = torch.randn(300, 128)  # F.linear broadcasts it
    elif case == "bias size":
        bias = torch.randn(1)
    elif case == "no rows":
        x = x[:0]
    elif case == "no inputs":
        x, weight = x[:, :0], weight[:, :0]
    elif case == "no outputs":
        weight = weight[:0]
    elif case == "3-D weight":
        weight = weight[None]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        try:
            expected = F.linear(x, weight, bias)
        except RuntimeError as error:  # torch's own error, raised by torch
            with pytest.raises(RuntimeError, match=re.escape(str(error)[:30])):
                S.linear(x, weight, bias)
        else:
            ours = S.linear(x, weight, bias)
            assert ours.dtype == expected.dtype and torch.equal(ours, expected)
    assert sparse_calls == []


def test_traced_and_transformed_calls_use_torch(always_sparse, sparse_calls, fresh_dynamo):
    layer = L.Linear(200, 128)
    x = _spikes((10, 30, 200), 0.1)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-4)
    assert sparse_calls == [300]  # the eager call only
    batched = torch.func.vmap(lambda xi: S.linear(xi, layer.weight, layer.bias))(x)
    torch.testing.assert_close(batched, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-4)
    assert sparse_calls == [300]


def test_double_backward_is_refused_not_wrong(always_sparse):
    x = _spikes((300, 200), 0.1).requires_grad_()
    weight = torch.randn(128, 200, requires_grad=True)
    (gx,) = torch.autograd.grad(S.linear(x, weight).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        gx.sum().backward()


# ----- the kernels on their own -------------------------------------------------------------------

@pytest.mark.parametrize("graded", [True, False])
def test_nonzero_lists_are_exact(always_sparse, graded):
    x = _spikes((1100, 77), 0.3, graded=graded)
    x[5] = 0  # an empty row inside a task, and rows ending a task (64 rows each)
    x[63, -1] = 1.5 if graded else 1.0
    ptr, idx, val, binary = S._nonzeros(x, 10 ** 6)
    assert binary is not graded and val.shape == ((0,) if binary else idx.shape)
    _check_list(x, ptr, idx, val, binary)


@pytest.mark.parametrize("value", [2.0, -1.0, 0.5, float("nan"), float("inf")])
def test_one_value_other_than_one_in_any_block_keeps_the_values(always_sparse, value):
    """Binary means every nonzero is exactly 1: one other value anywhere (here in the last of
    three count blocks) and the list keeps the values."""
    x = _spikes((2 * K.ROW_BLOCK + 7, 50), 0.2)
    assert S._nonzeros(x, 10 ** 6)[3] is True
    x[-1, 3] = value
    ptr, idx, val, binary = S._nonzeros(x, 10 ** 6)
    assert binary is False and val.shape == idx.shape
    last = slice(ptr[-2], ptr[-1])
    got = val[last][idx[last].tolist().index(3)]
    assert got == value or (np.isnan(got) and np.isnan(value))
    assert set(np.delete(val, ptr[-2] + idx[last].tolist().index(3)).tolist()) == {1.0}


def _listed(x: torch.Tensor):
    """The nonzero list of ``x`` from the kernels, in whatever form they are patched to."""
    xn = x.numpy()
    ptr = np.zeros(x.shape[0] + 1, np.int64)
    graded = np.empty(K.count_blocks(x.shape[0]), np.int64)
    K.row_counts.py_func(xn, ptr, graded)
    np.cumsum(ptr, out=ptr)
    binary = not graded.any()
    return ptr, np.empty(ptr[-1], np.int32), np.empty(0 if binary else ptr[-1], xn.dtype), binary


def _check_list(x, ptr, idx, val, binary):
    for r in range(x.shape[0]):
        cols = torch.nonzero(x[r]).flatten()
        assert idx[ptr[r]:ptr[r + 1]].tolist() == cols.tolist()
        if binary:
            assert (x[r, cols] == 1).all()
        else:
            assert val[ptr[r]:ptr[r + 1]].tolist() == x[r, cols].tolist()


def _with_tail_of_empty_rows(rows, k, graded=True):
    x = _spikes((rows, k), 0.3, torch.float64, graded=graded)
    x[40:64] = 0  # the first task's last rows: nothing after them in their task
    x[-5:] = 0  # and the last task's
    return x


@pytest.mark.parametrize("graded", [True, False])
@pytest.mark.parametrize("order", [1, -1])
@pytest.mark.parametrize("rows", [2, 64, 130, 200])
def test_fill_tasks_in_any_order_write_only_their_own_places(order, rows, graded):
    """Tasks run concurrently: each may write only its rows' places. Run one after another in
    either order, as plain Python (NumPy checks every index), the list must come out exact."""
    for x in (_with_tail_of_empty_rows(rows, 9, graded), torch.zeros(rows, 9, dtype=torch.float64)):
        ptr, idx, val, binary = _listed(x)
        assert binary is (not graded or not x.any())
        starts = list(range(0, rows, K.FILL_BLOCK))[::order]
        for r0 in starts:
            K._fill_task.py_func(x.numpy(), ptr, idx, val, binary, r0, min(rows, r0 + K.FILL_BLOCK))
        _check_list(x, ptr, idx, val, binary)


@pytest.mark.parametrize("graded", [True, False])
@pytest.mark.parametrize("rows, k, n", [(130, 9, 70), (64, 5, 64), (3, 4, 1), (600, 7, 130)])
def test_kernels_run_as_python_stay_in_bounds_and_agree(monkeypatch, rows, k, n, graded):
    """The packing, product and weight-gradient kernels as plain Python: an index past a tile, a
    row or the list raises there (compiled, it would read or write whatever lies next to it)."""
    for name in ("_fill_task", "_product_tile", "_weight_grad_tile", "_scatter_rows", "pack", "count_blocks"):
        monkeypatch.setattr(K, name, getattr(K, name).py_func)
    monkeypatch.setattr(K, "prange", lambda n: range(n - 1, -1, -1))  # tasks in reverse order
    x = _with_tail_of_empty_rows(rows, k, graded)
    ptr, idx, val, binary = _listed(x)
    assert binary is (not graded or not x.any())
    K.fill_rows.py_func(x.numpy(), ptr, idx, val, binary)
    _check_list(x, ptr, idx, val, binary)
    weight = torch.randn(n, k, dtype=torch.float64)
    y = torch.empty(rows, n, dtype=torch.float64)
    bias = torch.randn(n, dtype=torch.float64)
    bp = torch.zeros(tiles := -(-n // K.TILE), K.TILE, dtype=torch.float64)
    bp.view(-1)[:n] = bias
    for threads in (1, 2, 3, 64):  # rows in parts, one per thread: every (tile, row block) once
        y.fill_(float("nan"))
        K.product.py_func(ptr, idx, val, binary, S._pack(weight), bp.numpy(), y.numpy(), threads)
        torch.testing.assert_close(y, x @ weight.t() + bias, **TOL[torch.float64])
    g = torch.randn(rows, n, dtype=torch.float64)
    out = torch.zeros(tiles, k, K.TILE, dtype=torch.float64)
    K.weight_grad.py_func(ptr, idx, val, binary, g.numpy(), out.numpy())
    torch.testing.assert_close(out.transpose(1, 2).reshape(-1, k)[:n], g.t() @ x, **TOL[torch.float64])
    assert not out.transpose(1, 2).reshape(-1, k)[n:].any()  # the padding columns stay zero


@pytest.mark.parametrize("graded", [True, False])
def test_weight_gradient_kernel_partial_tile(graded):
    x = _spikes((200, 50), 0.2, graded=graded)
    g = torch.randn(200, K.TILE + 7)
    rows = _listed(x)
    K.fill_rows(x.numpy(), *rows)
    torch.testing.assert_close(S._weight_grad(rows, g, 50), g.t() @ x, rtol=1e-5, atol=1e-4)


# ----- the layer ----------------------------------------------------------------------------------

def test_layer_matches_its_dense_twin_and_keeps_its_state_dict(sparse_calls):
    layer = L.Linear(1024, 512)
    dense = L.Linear(1024, 512, sparse_input=False)
    dense.load_state_dict(layer.state_dict())
    assert layer.state_dict().keys() == dense.state_dict().keys() == {"weight", "bias"}
    assert "sparse_input=False" in repr(dense) and "sparse_input" not in repr(layer)
    x = _spikes((25, 32, 1024), 0.1)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-4)
    assert sparse_calls == [800]
    layer(x).square().mean().backward()
    dense(x).square().mean().backward()
    torch.testing.assert_close(layer.weight.grad, dense.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad, dense.bias.grad, rtol=1e-5, atol=1e-6)
    assert len(sparse_calls) == 2
    with torch.no_grad():  # single steps for streaming take the same path
        torch.testing.assert_close(layer.step(x[0].repeat(4, 1)), dense.step(x[0].repeat(4, 1)),
                                   rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="Linear input"):
        layer(torch.zeros(3, 1024))


@pytest.mark.parametrize("graded", [False, True])
def test_training_keeps_the_columns_of_spikes_and_the_values_of_graded_inputs(always_sparse, graded):
    """What the backward keeps: the weight and the list; for spikes the columns only (4 bytes
    per nonzero), for graded inputs the values too."""
    x = _spikes((400, 256), 0.1, graded=graded)
    weight = torch.randn(96, 256, requires_grad=True)
    y = S.linear(x, weight)
    kept_weight, ptr, idx, val = y.grad_fn.saved_tensors
    nnz = int((x != 0).sum())
    assert kept_weight is weight or torch.equal(kept_weight, weight)
    assert ptr.shape == (401,) and idx.shape == (nnz,) and idx.dtype == torch.int32
    assert val.shape == ((nnz,) if graded else (0,))
    y.sum().backward()
    torch.testing.assert_close(weight.grad, torch.ones(400, 96).t() @ x, rtol=1e-5, atol=1e-4)
