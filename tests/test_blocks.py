"""Fused layer blocks (BatchNorm -> neuron -> pooling in one kernel) against the same layers run
one by one: outputs, gradients (input, BN affine, neuron parameters), running statistics; the
patterns that must not fuse; fallbacks; torch.compile."""

from __future__ import annotations

import copy
import logging
import os

import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab import layers as L
from spikelab.kernels.generated import channels_last as is_channels_last
from spikelab.layers import fusion, unfused
from spikelab.neurons.base import BaseNeuron

FAMILIES = {
    "LIF": lambda: sl.LIF(tau=2.0, reset="zero", detach_reset=True),
    "LIF-learn": lambda: sl.LIF(beta=0.7, learn_threshold=True, num_channels=4),
    "PLIF": lambda: sl.PLIF(num_channels=4, learn_threshold=True),
    "AdaptiveLIF": lambda: sl.AdaptiveLIF(beta=0.9, tau_adapt=10.0, adaptation=0.4),
    "CurrentLIF": lambda: sl.CurrentLIF(alpha=0.5, beta=0.8),
    "ProbabilisticLIF": lambda: sl.ProbabilisticLIF(temperature=0.3),
    "EIF": lambda: sl.EIF(learn=True),
    "MPRLIF": lambda: sl.MPRLIF(reset="zero"),
    "LIF-trsg": lambda: sl.LIF(beta=0.8, learn_threshold=True, threshold_robust=True),
}


class Counting:
    """Counts fused-block runs (monkeypatched onto BaseNeuron.forward_block)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = BaseNeuron.forward_block

        def wrapped(neuron, x, block):
            result = original(neuron, x, block)
            self.calls += result is not None
            return result

        monkeypatch.setattr(BaseNeuron, "forward_block", wrapped)


def _pair(model: nn.Module, x: torch.Tensor, train: bool = True):
    """Run ``model`` fused and a deep copy unfused, its neurons on the reference (the oracle;
    no second set of kernels to compile), on ``x``; return both results."""
    model.zero_grad(set_to_none=True)
    other = copy.deepcopy(model)
    for m in other.modules():
        if isinstance(m, BaseNeuron):
            m.backend = "torch"
    results = []
    for net, ctx in ((model, None), (other, unfused())):
        net.train(train)
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(5)
        if ctx is None:
            out = net(xi)
        else:
            with ctx:
                out = net(xi)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view(out.shape)
        (out * weight).sum().backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        results.append((out.detach(), xi.grad.clone(), grads, buffers))
    return results


def _assert_same(fused, plain, rtol, atol):
    (out, dx, grads, buffers), (out2, dx2, grads2, buffers2) = fused, plain
    torch.testing.assert_close(out, out2, rtol=rtol, atol=atol)
    torch.testing.assert_close(dx, dx2, rtol=rtol, atol=atol)
    assert grads.keys() == grads2.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads2[name], rtol=rtol, atol=atol, msg=name)
    for name in buffers:
        torch.testing.assert_close(buffers[name].double(), buffers2[name].double(), rtol=rtol, atol=atol, msg=name)


def _input(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.3).to(dtype)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bn_neuron_pool_matches_unfused_for_every_family(name, monkeypatch):
    counting = Counting(monkeypatch)
    torch.manual_seed(0)
    model = L.Sequential(L.Conv2d(2, 4, 3, padding=1), L.BatchNorm2d(4), FAMILIES[name](), L.AvgPool2d(2),
                         L.Flatten(), L.Linear(4 * 3 * 3, 3)).double()
    with torch.no_grad():  # a non-trivial affine
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.3, 0.3)
    x = _input((5, 3, 2, 7, 7), torch.float64)  # 7x7 -> 3x3: a cropped border
    fused, plain = _pair(model, x)
    assert counting.calls == 1
    assert fused[0].abs().sum() > 0
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("bn,pool,dtype", [(True, None, torch.float64), (False, "avg", torch.float64),
                                           (True, "sum", torch.float64), (True, "avg", torch.float64),
                                           (True, "avg", torch.float32)])  # each dtype compiles anew
def test_lif_block_variants(bn, pool, dtype, monkeypatch):
    counting = Counting(monkeypatch)
    torch.manual_seed(1)
    layers = [L.Conv2d(3, 6, 3, padding=1, bias=False)]
    layers += [L.BatchNorm2d(6)] if bn else []
    layers += [sl.PLIF(num_channels=6, learn_threshold=True)]
    layers += {"avg": [L.AvgPool2d(2)], "sum": [L.SumPool2d(2)], None: []}[pool]
    model = L.Sequential(*layers).to(dtype)
    x = _input((6, 4, 3, 10, 9), dtype, seed=2)
    fused, plain = _pair(model, x)
    assert counting.calls == 1
    tol = (1e-9, 1e-10) if dtype == torch.float64 else (2e-4, 2e-5)
    if dtype == torch.float32:
        # batch statistics summed in another order can move a membrane across the threshold:
        # allow a few flipped spikes, compare gradients only when none flipped
        flipped = (fused[0] != plain[0]).sum().item()
        assert flipped <= max(1, fused[0].numel() // 2000)
        if flipped:
            return
    _assert_same(fused, plain, *tol)
    assert fused[0].dtype == dtype


def test_running_statistics_and_eval_mode(monkeypatch):
    counting = Counting(monkeypatch)
    torch.manual_seed(2)
    model = L.Sequential(L.BatchNorm2d(3, momentum=None), sl.LIF(beta=0.5), L.AvgPool2d(2)).double()
    other = copy.deepcopy(model)
    for i in range(3):  # cumulative averages over three batches
        x = _input((4, 2, 3, 6, 6), torch.float64, seed=i)
        model(x)
        with unfused():
            other(x)
    assert counting.calls == 3
    for (n, b), (_, b2) in zip(model.named_buffers(), other.named_buffers()):
        torch.testing.assert_close(b.double(), b2.double(), rtol=1e-12, atol=1e-12, msg=n)
    assert model[0].num_batches_tracked.item() == 3
    fused, plain = _pair(model, _input((4, 2, 3, 6, 6), torch.float64, seed=9), train=False)
    assert counting.calls == 4
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", ["linear_bn1d", "conv1d_bn1d_pool1d", "no_affine", "untracked", "torch_layers"])
def test_other_block_layouts(case, monkeypatch):
    counting = Counting(monkeypatch)
    torch.manual_seed(3)
    x = _input((5, 3, 4, 8), torch.float64)
    if case == "linear_bn1d":
        model = L.Sequential(L.Flatten(), L.Linear(32, 6), L.BatchNorm1d(6), sl.LIF(beta=0.5))
    elif case == "conv1d_bn1d_pool1d":
        model = L.Sequential(L.Conv1d(4, 5, 3, padding=1), L.BatchNorm1d(5), sl.LIF(beta=0.5), L.AvgPool1d(2))
    elif case == "no_affine":
        model = L.Sequential(L.Conv1d(4, 5, 3), L.BatchNorm1d(5, affine=False), sl.LIF(beta=0.5))
    elif case == "untracked":
        model = L.Sequential(L.Conv1d(4, 5, 3), L.BatchNorm1d(5, track_running_stats=False), sl.LIF(beta=0.5))
    else:  # plain torch layers inside a spikelab Sequential
        x = _input((5, 3, 4, 8, 8), torch.float64)
        model = L.Sequential(nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), sl.LIF(beta=0.5), nn.AvgPool2d(3))
    model = model.double()
    fused, plain = _pair(model, x)
    assert counting.calls == 1
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)
    fused, plain = _pair(model, x, train=False)
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", ["overlapping_pool", "padded_pool", "ceil_pool", "max_pool", "monitor",
                                  "smooth_surrogate", "reference_backend", "subclass_forward", "subclass_run",
                                  "integrator", "backward_hook"])
def test_patterns_that_must_run_unfused(case, monkeypatch):
    counting = Counting(monkeypatch)
    torch.manual_seed(4)
    neuron = sl.LIF(beta=0.5)
    pool: nn.Module = L.AvgPool2d(2)
    if case == "overlapping_pool":
        pool = L.AvgPool2d(3, stride=1)
    elif case == "padded_pool":
        pool = L.AvgPool2d(2, padding=1)
    elif case == "ceil_pool":
        pool = nn.AvgPool2d(2, ceil_mode=True)
    elif case == "max_pool":
        pool = L.MaxPool2d(2)
    elif case == "smooth_surrogate":
        neuron = sl.LIF(beta=0.5, surrogate=sl.surrogate.Sigmoid(smooth_forward=True))
    elif case == "reference_backend":
        neuron = sl.LIF(beta=0.5, backend="torch")
    elif case == "subclass_forward":
        class Doubled(sl.LIF):
            def forward(self, x_seq):
                return super().forward(x_seq) * 2
        neuron = Doubled(beta=0.5)
    elif case == "subclass_run":
        class Clamped(sl.LIF):
            def _run(self, x_seq, state, record=False):
                return super()._run(x_seq.clamp(max=0.5), state, record)
        neuron = Clamped(beta=0.5)
    elif case == "integrator":
        neuron = sl.LeakyIntegrator(beta=0.5)
    bn = L.BatchNorm2d(3)
    seen = []
    if case == "backward_hook":
        bn.register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape))
    if case in ("overlapping_pool", "padded_pool", "ceil_pool", "max_pool"):
        bn = nn.Identity()  # BN -> neuron would still fuse; the pooling alone must not
    model = L.Sequential(bn, neuron, pool).double()
    x = _input((4, 2, 3, 7, 7), torch.float64)
    if case == "monitor":
        with sl.Monitor(model, layers=[type(neuron)]) as mon:
            out = model(x)
        assert mon.spikes  # the monitor saw the neuron's own output
    else:
        out = model(x)
    with unfused():
        expected = copy.deepcopy(model)(x) if case != "monitor" else out
    # a hooked batch norm runs on its own; the neuron and pooling after it may still fuse
    assert counting.calls == (1 if case == "backward_hook" else 0)
    torch.testing.assert_close(out, expected)
    if case == "backward_hook":
        out.sum().backward()
        assert seen  # the hook ran: the layers were not fused past it


def test_unfusable_input_falls_back_with_a_debug_note(monkeypatch, caplog):
    counting = Counting(monkeypatch)
    fusion._NOTED.clear()
    model = L.Sequential(L.BatchNorm1d(4), sl.LIF(beta=0.5))
    x = torch.randn(3, 2, 5)  # 5 features, BN expects 4: torch's own error, unfused
    with caplog.at_level(logging.DEBUG, logger="spikelab.layers"):
        for _ in range(2):
            with pytest.raises(RuntimeError, match="running_mean"):
                model(x)
    notes = [r for r in caplog.records if "unfused" in r.getMessage()]
    assert len(notes) == 1 and "BatchNorm1d(4) on input shape (3, 2, 5)" in notes[0].getMessage()
    assert counting.calls == 0


@pytest.mark.parametrize("shape,bn", [((2, 2, 3, 4, 4, 4), "2d"), ((2, 2, 3), "2d"), ((2, 2, 3, 4, 4), "1d")])
def test_batch_norm_of_the_wrong_rank_is_left_to_torch(shape, bn, monkeypatch):
    """A BatchNorm2d on 6-D or 3-D input, a BatchNorm1d on 5-D input: torch's own error, unfused."""
    counting = Counting(monkeypatch)
    model = L.Sequential(L.BatchNorm2d(3) if bn == "2d" else L.BatchNorm1d(3), sl.LIF(beta=0.5))
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(*shape))
    assert counting.calls == 0


def test_models_fuse_their_blocks(monkeypatch):
    counting = Counting(monkeypatch)
    model = sl.models.SpikingCNN(2, 10, 16, channels=(4, 8))
    model(torch.rand(3, 2, 2, 16, 16))
    assert counting.calls == 2
    model = sl.models.SEWResNet(2, 10, 16, stages=(4,), blocks=1)
    model(torch.rand(3, 2, 2, 16, 16))
    assert counting.calls == 2 + 3


@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_fused_block_matches_eager(channels_last, fresh_dynamo):
    torch.manual_seed(6)
    model = L.Sequential(L.Conv2d(2, 4, 3, padding=1, channels_last=channels_last), L.BatchNorm2d(4),
                         sl.LIF(beta=0.5), L.AvgPool2d(2))
    x = torch.rand(4, 2, 2, 8, 8) * 2
    eager = copy.deepcopy(model)
    out = eager(x)
    assert is_channels_last(out) == channels_last
    out.sum().backward()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out2 = compiled(x)
    out2.sum().backward()
    torch.testing.assert_close(out2, out)
    for (n, p), (_, q) in zip(eager.named_parameters(), model.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=n)
    for (n, b), (_, c) in zip(eager.named_buffers(), model.named_buffers()):
        torch.testing.assert_close(c, b, msg=n)


TRITON_FAMILIES = {
    "LIF": lambda: sl.LIF(beta=0.6, num_channels=3, learn_threshold=True, backend="triton"),
    "CurrentLIF": lambda: sl.CurrentLIF(alpha=0.5, beta=0.8, backend="triton"),
    "EIF": lambda: sl.EIF(learn=True, backend="triton"),
}


@pytest.mark.parametrize("name", sorted(TRITON_FAMILIES))
@pytest.mark.parametrize("bn,pool", [(True, True), (True, False), (False, True)])
def test_triton_blocks_match_unfused(name, bn, pool, monkeypatch):
    """The Triton block kernels (a GPU, or Triton's interpreter on CPU)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1")
    counting = Counting(monkeypatch)
    torch.manual_seed(7)
    layers = [L.BatchNorm2d(3)] if bn else []
    layers += [TRITON_FAMILIES[name]()] + ([L.AvgPool2d(2)] if pool else [])
    model = L.Sequential(*layers).double().to(device)
    x = _input((4, 2, 3, 5, 6), torch.float64).to(device)
    fused, plain = _pair(model, x)
    assert counting.calls == 1
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)


def test_trainer_rates_keep_blocks_fused_and_exact(monkeypatch):
    """The trainer's firing-rate monitor sees every neuron's rate, also inside fused blocks (from
    the pooled output when the windows tile the plane; the pooling runs apart when they crop),
    and the rate regulariser's gradient equals the unfused one."""
    from spikelab.train.trainer import RateMonitor

    counting = Counting(monkeypatch)
    torch.manual_seed(8)
    model = sl.models.SpikingCNN(2, 10, 12, channels=(3, 4), neuron=lambda: sl.LIF(beta=0.5)).double()
    x = _input((4, 2, 2, 12, 12), torch.float64)  # 12 -> 6 (tiles), 6 -> 3 (tiles)
    results = []
    for ctx in (None, unfused()):
        net = copy.deepcopy(model)
        monitor = RateMonitor(net)
        if ctx is None:
            out = net(x)
        else:
            with ctx:
                out = net(x)
        reg = torch.stack([(r - 0.1) ** 2 for r in monitor.rates.values()]).sum()
        (out.sum() * 0 + reg).backward()
        monitor.remove()
        results.append((dict(monitor.rates), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    assert counting.calls == 2
    (fused_rates, fused_grads), (plain_rates, plain_grads) = results
    assert fused_rates.keys() == plain_rates.keys() and len(fused_rates) == 2
    for name in fused_rates:
        torch.testing.assert_close(fused_rates[name], plain_rates[name], rtol=1e-12, atol=1e-12)
    for g, h in zip(fused_grads, plain_grads):
        torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-12)
    cropped = sl.models.SpikingCNN(2, 10, 10, channels=(3, 4), neuron=lambda: sl.LIF(beta=0.5)).double()
    monitor = RateMonitor(cropped)
    x = _input((4, 2, 2, 10, 10), torch.float64)  # 10 -> 5 tiles; 5 -> 2 crops: pooling apart
    out = cropped(x)
    rates = dict(monitor.rates)
    monitor.remove()
    with unfused():
        monitor = RateMonitor(cropped)
        expected = cropped(x)
        monitor.remove()
    torch.testing.assert_close(out, expected)
    for name in rates:
        torch.testing.assert_close(rates[name], monitor.rates[name])
    assert counting.calls == 4


# ----- channels-last memory ---------------------------------------------------------------------
def _channels_last_runs(monkeypatch) -> list:
    """The ``channels_last`` flag of every fused block run (monkeypatched onto blocks.run)."""
    from spikelab.kernels import blocks

    seen, original = [], blocks.run

    def wrapped(*args, **kwargs):
        seen.append(bool(args[7] if len(args) > 7 else kwargs.get("channels_last", False)))
        return original(*args, **kwargs)

    monkeypatch.setattr(blocks, "run", wrapped)
    return seen


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_channels_last_blocks_match_unfused_for_every_family(name, monkeypatch):
    """A network with channels-last convolutions feeds the blocks channels-last memory: they run
    in that order (no copy) and give the layers' results, and their output stays channels-last."""
    runs = _channels_last_runs(monkeypatch)
    torch.manual_seed(0)
    model = L.Sequential(L.Conv2d(2, 4, 3, padding=1), L.BatchNorm2d(4), FAMILIES[name](), L.AvgPool2d(2)).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.3, 0.3)
    model = model.to(memory_format=torch.channels_last)
    x = _input((5, 3, 2, 7, 7), torch.float64)  # 7x7 -> 3x3: a cropped border
    fused, plain = _pair(model, x)
    # escape noise draws by the neuron's index in [B, C, H, W] order: that family takes a copy
    assert runs == [name != "ProbabilisticLIF"]
    assert is_channels_last(fused[0]) == (name != "ProbabilisticLIF") and fused[0].abs().sum() > 0
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("bn,pool", [(True, None), (False, "sum"), (True, (3, 2)), (True, (2, 3)), (False, (3, 3))])
def test_channels_last_block_variants(bn, pool, monkeypatch):
    """Every window shape the interleaved pooling distinguishes (2x2 has a loop of its own)."""
    runs = _channels_last_runs(monkeypatch)
    torch.manual_seed(3)
    layers = [L.Conv2d(3, 5, 3, padding=1, bias=False)] + ([L.BatchNorm2d(5)] if bn else [])
    layers += [sl.PLIF(num_channels=5, learn_threshold=True)]  # per-channel parameters, permuted too
    layers += [] if pool is None else [L.SumPool2d(2)] if pool == "sum" else [L.AvgPool2d(pool)]
    model = L.Sequential(*layers).double().to(memory_format=torch.channels_last)
    x = _input((4, 3, 3, 9, 10), torch.float64, seed=4)
    fused, plain = _pair(model, x)
    assert runs == [True] and is_channels_last(fused[0])
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)


def test_channels_last_input_on_the_triton_kernels_runs_in_the_usual_order(monkeypatch):
    """Only the Numba kernels take channels-last rows; the Triton ones get a contiguous copy."""
    from spikelab.kernels import generated

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1")
    runs = _channels_last_runs(monkeypatch)
    torch.manual_seed(7)
    model = L.Sequential(L.BatchNorm2d(3), sl.LIF(beta=0.6, backend="triton"), L.AvgPool2d(2)).double()
    x = _input((4, 2, 3, 6, 6), torch.float64).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    assert is_channels_last(x)
    with generated.cpu_kernels("triton"):
        fused, plain = _pair(model, x)
    assert runs == [False]
    _assert_same(fused, plain, rtol=1e-9, atol=1e-10)


def test_builtin_cnn_runs_channels_last_on_cpu_and_matches_nchw(monkeypatch):
    """SpikingCNN's convolutions write channels-last memory on CPU (layers.Conv2d(channels_last=True));
    its blocks run in that order and the network gives the NCHW network's outputs and gradients;
    the parameters, the state dict and the repr's layer list stay as they were."""
    runs = _channels_last_runs(monkeypatch)
    torch.manual_seed(9)
    model = sl.models.SpikingCNN(2, 5, 12, channels=(3, 4), neuron=lambda: sl.LIF(beta=0.6)).double()
    convs = [m for m in model.modules() if isinstance(m, L.Conv2d)]
    assert convs and all(m.channels_last for m in convs) and "channels_last=True" in repr(convs[0])
    nchw = copy.deepcopy(model)
    for m in nchw.modules():
        if isinstance(m, L.Conv2d):
            m.channels_last = False
    x = _input((4, 3, 2, 12, 12), torch.float64)
    results = []
    for net in (model, nchw):
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)).sum().backward()
        results.append((out, xi.grad, {n: p.grad for n, p in net.named_parameters()}))
    assert runs == [True, True, False, False]
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-9, atol=1e-10)
    for name, grad in results[0][2].items():
        torch.testing.assert_close(grad, results[1][2][name], rtol=1e-9, atol=1e-10, msg=name)
    assert all(m.weight.is_contiguous() for m in convs)
    assert model.state_dict().keys() == nchw.state_dict().keys()


@pytest.mark.parametrize("pool", [(2, 2), (3, 2), None])
def test_channels_last_block_states_and_many_tasks_match_nchw(pool):
    """The block op itself on channels-last and on NCHW memory, from random (not fresh) states,
    with enough neurons for many kernel tasks (2x2 windows: a task per band of rows; 3x2 on 9
    rows: a task per sample): outputs, final states and the gradients of input and states agree."""
    from spikelab import backends
    from spikelab.kernels.blocks import BlockArgs

    torch.manual_seed(11)
    neuron = sl.AdaptiveLIF(beta=0.8, tau_adapt=5.0, adaptation=0.3, num_channels=6)
    T, B, C, H, W = 4, 24, 6, 9 if pool == (3, 2) else 8, 8
    x = _input((T, B, C, H, W), torch.float64, seed=6) * 2
    states = [torch.rand(B, C, H, W, dtype=torch.float64) for _ in neuron._fresh_state((B, C, H, W), x)]
    params, options = neuron.double()._kernel_args(x.ndim - 1)
    impl = backends.resolve_block(neuron.family, "numba", x.device)
    weight, bias = torch.rand(C, dtype=torch.float64) + 0.5, torch.rand(C, dtype=torch.float64) - 0.5
    block = BlockArgs(bn=True, weight=weight, bias=bias, pool=pool, pool_scale=0.25)
    results = []
    for cl in (True, False):
        xi = (x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3) if cl else x.clone()).requires_grad_(True)
        si = [s.clone().requires_grad_(True) for s in states]
        out, new, stats = impl(xi, *si, *params, *neuron._extra_inputs(xi), block=block, **options)
        assert is_channels_last(out) == cl
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)).sum()
        loss = loss + sum((n * (k + 1)).sum() for k, n in enumerate(new))
        loss.backward()
        results.append((out.detach(), [n.detach() for n in new], stats, xi.grad, [s.grad for s in si]))
    (out, new, stats, dx, ds), (out2, new2, stats2, dx2, ds2) = results
    assert out.abs().sum() > 0
    torch.testing.assert_close(out, out2, rtol=1e-9, atol=1e-10)
    for a, b in zip(new + ds + list(stats) + [dx], new2 + ds2 + list(stats2) + [dx2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
