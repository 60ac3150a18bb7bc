"""spikelab.layers.pooling: the fast path gives torch's pooling (values and gradients), and every
case it does not cover goes to torch unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import spikelab.layers.pooling as pooling
from spikelab.layers.pooling import FastAvgPool2d, avg_pool2d

CASES = [  # (shape, kernel, stride, padding, ceil_mode, divisor_override)
    ((3, 4, 8, 8), 2, None, 0, False, None),
    ((2, 3, 9, 7), 2, 2, 0, False, None),  # odd sizes: the last row and column are dropped
    ((2, 3, 9, 9), 3, None, 0, False, None),
    ((2, 5, 12, 8), (3, 2), (3, 2), 0, False, None),
    ((2, 5, 12, 8), (1, 2), None, 0, False, None),
    ((2, 5, 12, 8), (4, 1), None, 0, False, None),
    ((4, 10, 10), 2, None, 0, False, None),  # unbatched [C, H, W]
    ((4, 10, 7), (2, 3), None, 0, False, None),  # unbatched, not square
    ((3, 8, 9), (2, 3), None, 0, True, None),  # unbatched, ceil mode, no partial window
    ((2, 3, 8, 8), 2, None, 0, True, None),  # ceil mode without a partial window
    ((2, 3, 8, 8), 2, None, 0, False, 1),  # sum pooling
    ((2, 3, 9, 9), 3, None, 0, False, 4),
]


def _fast_calls(monkeypatch) -> list:
    calls = []
    real = pooling._tiled
    monkeypatch.setattr(pooling, "_tiled", lambda *a: calls.append(a[1:]) or real(*a))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil, divisor", CASES)
def test_fast_path_matches_torch_values_and_gradients(monkeypatch, shape, kernel, stride, padding, ceil, divisor,
                                                      dtype):
    calls = _fast_calls(monkeypatch)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    with torch.no_grad():  # never written: compare a no-grad call's input with its copy
        plain = x.detach().clone()
        avg_pool2d(plain, kernel, stride, padding, ceil, True, divisor)
        assert torch.equal(plain, x.detach())
    calls.clear()
    ours = avg_pool2d(x, kernel, stride, padding, ceil, True, divisor)
    assert len(calls) == 1  # the fast path ran
    theirs = F.avg_pool2d(x, kernel, stride, padding, ceil, True, divisor)
    assert ours.shape == theirs.shape and ours.dtype == dtype
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-6}
    torch.testing.assert_close(ours, theirs, **tol)
    g = torch.randn_like(theirs)
    (ga,) = torch.autograd.grad(ours, x, g)
    (gb,) = torch.autograd.grad(theirs, x, g)
    torch.testing.assert_close(ga, gb, **tol)


@pytest.mark.parametrize("args", [((2,),), ((2,), (2,)), (np.int64(2),), (2, [], 0), (2, (), 0), (2, 2, (0,)),
                                  ([2, 3],), ((np.int32(2), 2), None)])
def test_argument_forms_torch_takes(monkeypatch, args):
    calls = _fast_calls(monkeypatch)
    x = torch.randn(2, 3, 8, 9)
    torch.testing.assert_close(avg_pool2d(x, *args), F.avg_pool2d(x, *args))
    assert len(calls) == 1


@pytest.mark.parametrize("divisor", [2.5, True, 0])
def test_divisors_torch_refuses_are_refused_by_torch(divisor):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises((TypeError, RuntimeError)) as ours:
        avg_pool2d(x, 2, divisor_override=divisor)
    with pytest.raises((TypeError, RuntimeError)) as theirs:
        F.avg_pool2d(x, 2, divisor_override=divisor)
    assert type(ours.value) is type(theirs.value)


def test_a_negative_divisor_gives_torchs_values():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(avg_pool2d(x, 2, divisor_override=-1), F.avg_pool2d(x, 2, divisor_override=-1))


def test_two_by_two_windows_of_spikes_are_bit_identical():
    theta = torch.rand(1, 16, 1, 1) + 0.3  # per-channel amplitudes, as a converted network's sites emit
    spikes = (torch.rand(64, 16, 34, 34) < 0.3).float() * theta
    assert torch.equal(avg_pool2d(spikes, 2), F.avg_pool2d(spikes, 2))


@pytest.mark.parametrize("why, x, args", [
    ("overlapping windows", torch.randn(2, 3, 8, 8), (3, 2)),
    ("padding", torch.randn(2, 3, 8, 8), (2, 2, 1)),
    ("ceil mode with a partial window", torch.randn(2, 3, 9, 9), (2, 2, 0, True)),
    ("ceil mode with a partial column", torch.randn(2, 3, 8, 9), (2, 2, 0, True)),
    ("ceil mode with a partial row, unbatched", torch.randn(3, 9, 8), (2, 2, 0, True)),
    ("channels last", torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last), (2,)),
    ("not contiguous", torch.randn(2, 3, 8, 16)[..., ::2], (2,)),
    ("half precision", torch.randn(2, 3, 8, 8).bfloat16(), (2,)),
    ("a 1x1 window", torch.randn(2, 3, 8, 8), (1,)),
])
def test_other_cases_go_to_torch(monkeypatch, why, x, args):
    calls = _fast_calls(monkeypatch)
    ours = avg_pool2d(x, *args)
    assert calls == [], why
    assert torch.equal(ours, F.avg_pool2d(x, *args)), why


@pytest.mark.parametrize("shape, kernel", [((2, 3, 1, 8), 2), ((2, 3, 8, 1), 2), ((2, 3, 2, 8), (3, 2)), ((3, 1, 8), 2),
                                           ((2, 3, 8, 8), (2, 2, 2))])
def test_torch_errors_stay_torch_errors(shape, kernel):
    """A window larger than the map (either side), or a kernel of three sizes: torch's error."""
    with pytest.raises(RuntimeError) as theirs:
        F.avg_pool2d(torch.randn(shape), kernel)
    with pytest.raises(RuntimeError) as ours:
        avg_pool2d(torch.randn(shape), kernel)
    assert str(ours.value) == str(theirs.value)


def test_module_and_layers_use_it(monkeypatch):
    import spikelab as sl

    calls = _fast_calls(monkeypatch)
    pool = torch.nn.AvgPool2d((2, 3), divisor_override=2)
    fast = FastAvgPool2d.like(pool)
    x = torch.randn(4, 3, 8, 9)
    assert isinstance(fast, torch.nn.AvgPool2d)
    torch.testing.assert_close(fast(x), pool(x))
    assert calls[-1] == (2, 3, 2)
    seq = torch.randn(3, 2, 4, 8, 8)  # [T, B, C, H, W]
    torch.testing.assert_close(sl.layers.AvgPool2d(2)(seq), F.avg_pool2d(seq.flatten(0, 1), 2).unflatten(0, (3, 2)))
    assert calls[-1] == (2, 2, 4)
    torch.testing.assert_close(sl.layers.SumPool2d(2)(seq), 4 * F.avg_pool2d(seq.flatten(0, 1), 2).unflatten(0, (3, 2)))
    assert calls[-1] == (2, 2, 1)
    torch.testing.assert_close(sl.layers.AvgPool2d(2).step(seq[0]), F.avg_pool2d(seq[0], 2))
    assert calls[-1] == (2, 2, 4)
