"""spikelab neurons against Norse 1.1's LIFBoxCell and LIFCell (docs/norse.md)."""

import pytest
import torch

import spikelab as sl
from tests.needs import peer
from tests.peer_compare import assert_same_spikes_and_gradients

norse = peer("norse.torch")

SHAPES = [(1, 16, 8), (17, 4, 8), (40, 2, 3, 4), (64, 8, 128)]
BACKENDS = ["torch", "numba"]
DT = 1e-3


def _run_cell(cell, x):
    state, outs = None, []
    for t in range(x.shape[0]):
        z, state = cell(x[t], state)
        outs.append(z)
    return torch.stack(outs)


def _compare(ours, cell, x):
    assert_same_spikes_and_gradients(ours, lambda x2: _run_cell(cell, x2), x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau_mem_inv", [100.0, 250.0])
def test_lif_matches_lifboxcell(backend, shape, tau_mem_inv):
    torch.manual_seed(len(shape))
    x = (torch.randn(shape) * 1.5 + 0.8) / (DT * tau_mem_inv)  # one step reaches dt * tau_mem_inv * x
    p = norse.LIFBoxParameters(tau_mem_inv=torch.tensor(tau_mem_inv), v_th=torch.tensor(1.0),
                               v_reset=torch.tensor(0.0), method="super", alpha=torch.tensor(100.0))
    # Norse 1.1's SuperSpike backward ignores alpha: its slope is that of alpha = 1
    ours = sl.LIF(tau=1 / (DT * tau_mem_inv), decay_input=True, reset="zero", surrogate="superspike",
                  surrogate_alpha=1, backend=backend)
    _compare(ours, norse.LIFBoxCell(p, dt=DT), x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_current_lif_matches_lifcell(backend, shape):
    torch.manual_seed(len(shape) + 1)
    x = torch.randn(shape) * 1.5 + 0.8
    p = norse.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0),
                            v_th=torch.tensor(0.3), method="super", alpha=torch.tensor(100.0))
    # the input joins the current before the membrane update: scale it by dt * tau_mem_inv
    ours = sl.layers.Sequential(
        sl.layers.Scale(DT * 100.0),
        sl.CurrentLIF(alpha=1 - DT * 200.0, beta=1 - DT * 100.0, threshold=0.3, reset="zero",
                      surrogate="superspike", surrogate_alpha=1, backend=backend))
    _compare(ours, norse.LIFCell(p, dt=DT), x)


def test_norse_superspike_ignores_alpha():
    # the reason for surrogate_alpha=1 above: Norse's gradient is the same for any alpha
    x = torch.linspace(-2, 2, 41).requires_grad_(True)
    from norse.torch.functional.threshold import threshold

    grads = []
    for alpha in (1.0, 100.0):
        g, = torch.autograd.grad(threshold(x, "super", torch.tensor(alpha)).sum(), x)
        grads.append(g)
    assert torch.equal(grads[0], grads[1])
    torch.testing.assert_close(grads[0], sl.surrogate.get("superspike", 1.0).derivative(x.detach()))
