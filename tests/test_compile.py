"""Neurons inside torch.compile'd models: one graph (no breaks), same outputs and gradients as eager."""

import pytest
import torch
from torch import nn

import spikelab as sl

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # every test compiles Sequential.forward anew

NEURONS = {
    "LIF": lambda: sl.LIF(beta=0.8),
    "PLIF": lambda: sl.PLIF(num_channels=16, learn_threshold=True),
    "AdaptiveLIF": lambda: sl.AdaptiveLIF(beta=0.9, tau_adapt=10.0, adaptation=0.4),
    "CurrentLIF": lambda: sl.CurrentLIF(alpha=0.5, beta=0.8, reset="zero"),
    "ProbabilisticLIF": lambda: sl.ProbabilisticLIF(temperature=0.3),
    "LIF-trsg": lambda: sl.LIF(beta=0.8, learn_threshold=True, threshold_robust=True),
}


def _model(name):
    torch.manual_seed(0)
    return sl.layers.Sequential(nn.Linear(12, 16), NEURONS[name](), nn.Linear(16, 4))


def _run(model, x, seed=3):
    torch.manual_seed(seed)
    out = model(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return out.detach(), grads


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_compiled_matches_eager_in_one_graph(name):
    model = _model(name)
    x = torch.rand(9, 3, 12) * 2
    eager_out, eager_grads = _run(model, x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out, grads = _run(compiled, x)
    assert torch.equal(out, eager_out)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_inductor_compiles_fused_lif():
    model = _model("LIF")
    x = torch.rand(9, 3, 12) * 2
    eager_out, eager_grads = _run(model, x)
    out, grads = _run(torch.compile(model, fullgraph=True), x)
    torch.testing.assert_close(out, eager_out)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_inference_compiles_in_one_graph_and_eager_skips_the_dispatch(monkeypatch):
    """Without gradients, eager CPU calls run the kernel directly (kernels/generated.py:
    ``_plain_call``), while a compiled model, fake tensors, dispatch modes, forward-mode AD and
    vmap still go through the operator: one graph, the same spikes as eager and as the operator."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    from spikelab.kernels import generated

    model = _model("LIF").eval()
    x = torch.rand(9, 3, 12) * 2
    decided, real = [], generated._plain_call
    monkeypatch.setattr(generated, "_plain_call", lambda *args: decided.append(real(*args)) or decided[-1])
    with torch.no_grad():
        direct = model(x)
        assert decided == [True]  # the eager call took the direct path
        monkeypatch.undo()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
        monkeypatch.setattr(generated, "_plain_call", lambda *args: False)
        through_op = model(x)
    assert torch.equal(direct, through_op) and torch.equal(compiled, direct)
    monkeypatch.undo()
    recorded = x.clone().requires_grad_(True)
    assert not generated._plain_call(recorded, [])  # autograd records it: EagerSequence, not the bare kernel
    assert generated._eager_autograd(recorded, [])
    mode = FakeTensorMode()
    fake = mode.from_tensor(x)
    with mode:
        assert not generated._plain_call(fake, [])
        assert not generated._eager_autograd(fake.requires_grad_(True), [])
    with torch.no_grad():  # no autograd here: parameters that take gradients do not matter
        assert generated._plain_call(x, [torch.ones(3, requires_grad=True)])
    seen = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Recorder():  # a dispatch mode (a flop counter, for one) sees the operator
        assert torch.equal(model(x), direct)
    assert any("spikelab.spec_forward" in name for name in seen), seen
    with torch.no_grad(), torch.autograd.forward_ad.dual_level():  # dual tensors keep their tangents
        assert not generated._plain_call(x, [])
    with torch.no_grad():
        assert not torch.func.vmap(lambda row: torch.tensor(generated._plain_call(row, [])))(x[0]).any()


@pytest.mark.parametrize("block", [False, True], ids=["neuron", "bn-neuron-pool"])
def test_eager_training_skips_the_dispatch_with_the_operators_results(block, monkeypatch):
    """Eager training runs the kernels through plain autograd Functions (EagerSequence,
    EagerBlock: the custom operator's dispatch costs more than a small layer's kernels), with
    the operator's outputs, gradients and running statistics exactly; compiling still goes
    through the operator (the tests above)."""
    import copy

    from spikelab.kernels import blocks, generated

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # gpu_check.sh runs it on the GPU's kernels
    if block:
        model = sl.layers.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), sl.PLIF(num_channels=4),
                                     nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
        x = torch.rand(5, 2, 2, 4, 4) * 2
    else:
        model = _model("AdaptiveLIF")
        x = torch.rand(9, 3, 12) * 2
    model, x = model.to(device), x.to(device)
    twin = copy.deepcopy(model)
    calls = []
    for cls in (generated.EagerSequence, blocks.EagerBlock):
        monkeypatch.setattr(cls, "forward", staticmethod(
            lambda *a, _real=cls.forward, _name=cls.__name__: calls.append(_name) or _real(*a)))
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    fast_out, fast_grads = _run(model, xs[0])
    assert calls == ["EagerBlock" if block else "EagerSequence"]
    monkeypatch.setattr(generated, "_untraced", lambda *args: False)  # the operator's path
    op_out, op_grads = _run(twin, xs[1])
    assert len(calls) == 1
    assert torch.equal(fast_out, op_out) and torch.equal(xs[0].grad, xs[1].grad)
    for a, b in zip(fast_grads, op_grads):
        assert torch.equal(a, b)
    for a, b in zip(model.buffers(), twin.buffers()):
        assert torch.equal(a, b)
