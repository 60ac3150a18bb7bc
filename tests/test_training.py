"""Each neuron type learns a small spike-pattern task with BPTT to a clear accuracy."""

import pytest
import torch
from torch import nn

import spikelab as sl

NEURONS = {
    "LIF": lambda: sl.LIF(beta=0.9),
    "IF": lambda: sl.IF(),
    "PLIF": lambda: sl.PLIF(tau=2.0),
    "AdaptiveLIF": lambda: sl.AdaptiveLIF(beta=0.9, tau_adapt=20.0, adaptation=0.3),
    "CurrentLIF": lambda: sl.CurrentLIF(alpha=0.5, beta=0.9),
    "ProbabilisticLIF": lambda: sl.ProbabilisticLIF(tau=5.0, temperature=0.25),
    "LIF-trsg-mpinit": lambda: sl.LIF(beta=0.9, learn_threshold=True, threshold_robust=True, mp_init=True),
}


def make_task(n, T=16, groups=4, per_group=6, seed=0):
    """Class k: inputs of group k fire at rate 0.5, the rest at 0.1, with per-sample jitter."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, groups, (n,), generator=g)
    rates = torch.full((n, groups, per_group), 0.1)
    rates[torch.arange(n), labels] = 0.5
    rates = (rates + 0.05 * torch.randn(rates.shape, generator=g)).clamp(0, 1).flatten(1)
    spikes = torch.bernoulli(rates.unsqueeze(0).expand(T, -1, -1).contiguous(), generator=g)
    return spikes, labels


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_neuron_learns_toy_task(name):
    torch.manual_seed(0)
    x_train, y_train = make_task(512, seed=1)
    x_test, y_test = make_task(256, seed=2)
    net = sl.layers.Sequential(nn.Linear(24, 48), NEURONS[name](), nn.Linear(48, 4))
    with torch.no_grad():
        before = (net(x_test).mean(0).argmax(1) == y_test).float().mean().item()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for epoch in range(6):
        for i in range(0, 512, 64):
            logits = net(x_train[:, i:i + 64]).mean(0)
            loss = nn.functional.cross_entropy(logits, y_train[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x_test).mean(0).argmax(1) == y_test).float().mean().item()
    assert acc >= 0.9 and acc > before + 0.3, f"{name}: test accuracy {acc:.3f} (untrained {before:.3f})"
