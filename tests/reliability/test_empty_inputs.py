"""Empty sequences: T = 0 is refused with a message that says so (a state cannot evolve over no
steps, and time means would be NaN); B = 0 runs and gives empty outputs and gradients."""

from __future__ import annotations

import pytest
import torch

import spikelab as sl

FAMILIES = [lambda b: sl.LIF(tau=2.0, backend=b), lambda b: sl.IF(backend=b), lambda b: sl.PLIF(backend=b),
            lambda b: sl.AdaptiveLIF(backend=b), lambda b: sl.CurrentLIF(backend=b)]


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("make", FAMILIES, ids=["LIF", "IF", "PLIF", "AdaptiveLIF", "CurrentLIF"])
def test_no_time_steps_is_refused_on_every_backend(make, backend):
    with pytest.raises(ValueError, match=r"x_seq: expected at least one time step .* got shape \(0, 4, 5\)"):
        make(backend)(torch.rand(0, 4, 5, requires_grad=True))


@pytest.mark.parametrize("make", FAMILIES, ids=["LIF", "IF", "PLIF", "AdaptiveLIF", "CurrentLIF"])
def test_empty_batch_runs_forward_and_backward(make):
    for backend in ("torch", "numba"):
        x = torch.rand(3, 0, 5, requires_grad=True)
        out = make(backend)(x)
        out.sum().backward()
        assert out.shape == (3, 0, 5) and x.grad.shape == (3, 0, 5)


def test_whole_network_refuses_no_time_steps_and_keeps_its_statistics():
    model = sl.models.SpikingCNN()
    with pytest.raises(ValueError, match="at least one time step"):
        model(torch.rand(0, 4, 2, 34, 34))
    bn = model[1]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) and int(bn.num_batches_tracked) == 0
