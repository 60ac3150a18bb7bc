"""float64 gradcheck of every neuron with a smooth surrogate (forward = the surrogate's primitive).

With ``smooth_forward=True`` the spike is the surrogate's smooth step, so the analytical
gradient (the surrogate derivative and the reset/state paths) must equal finite differences.
``detach_reset=True`` is left out on purpose: it cuts a real dependency, so its gradient is
biased by design (tested in test_neurons.py).
"""

import pytest
import torch

import spikelab as sl
from spikelab.surrogate import ATan, Erf, Sigmoid


def smooth(cls=ATan, alpha=None):
    return cls(alpha=alpha, smooth_forward=True)


NEURONS = {
    "LIF": lambda: sl.LIF(beta=0.8, surrogate=smooth()),
    "LIF-decay-input-zero": lambda: sl.LIF(tau=3.0, decay_input=True, reset="zero", surrogate=smooth(Sigmoid)),
    "LIF-hard-value": lambda: sl.LIF(beta=0.9, reset=-0.2, surrogate=smooth(Erf)),
    "LIF-none": lambda: sl.LIF(beta=0.9, reset="none", surrogate=smooth()),
    "LIF-learn-threshold": lambda: sl.LIF(beta=0.8, learn_threshold=True, threshold=0.8, surrogate=smooth()),
    "LIF-threshold-robust": lambda: sl.LIF(beta=0.8, learn_threshold=True, threshold_robust=True,
                                           surrogate=smooth()),
    "IF": lambda: sl.IF(surrogate=smooth()),
    "PLIF": lambda: sl.PLIF(tau=2.5, surrogate=smooth()),
    "PLIF-channel": lambda: sl.PLIF(tau=2.5, num_channels=3, learn_threshold=True, surrogate=smooth()),
    "AdaptiveLIF": lambda: sl.AdaptiveLIF(beta=0.8, tau_adapt=5.0, adaptation=0.5, surrogate=smooth()),
    "CurrentLIF": lambda: sl.CurrentLIF(alpha=0.6, beta=0.8, surrogate=smooth()),
    "ProbabilisticLIF": lambda: sl.ProbabilisticLIF(tau=2.0, temperature=0.5, stochastic=False),
}


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_gradcheck(name):
    neuron = NEURONS[name]().double()
    x = (torch.randn(6, 2, 3, dtype=torch.float64) * 0.8 + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: neuron(x), (x,), eps=1e-6, atol=1e-5)
    learnable = [(n, p) for n, p in neuron.named_parameters() if p.requires_grad]
    if name in ("PLIF", "LIF-learn-threshold", "ProbabilisticLIF"):
        assert learnable, "this neuron should have learnable parameters"
    for pname, p in learnable:
        q = p.detach().clone().requires_grad_(True)
        f = lambda q, pname=pname: torch.func.functional_call(neuron, {pname: q}, (x.detach(),))
        assert torch.autograd.gradcheck(f, (q,), eps=1e-6, atol=1e-5), pname
