"""Neurons inside torch.compile'd models: one graph (no breaks), same outputs and gradients as eager."""

import pytest
import torch
from torch import nn

import spikelab as sl

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
