"""The one comparison every equivalence test makes: spikelab and a peer run on clones of the same
input; spikes must be identical and gradients close (the input's, and given parameter pairs')."""

from __future__ import annotations

from typing import Callable, Iterable

import torch


def assert_same_spikes_and_gradients(ours: Callable, theirs: Callable, x: torch.Tensor,
                                     params: Iterable[tuple[torch.Tensor, torch.Tensor]] = (), *,
                                     some_firing: bool = True, some_silent: bool = True, x_atol: float = 1e-5) -> torch.Tensor:
    """``ours(x)`` and ``theirs(x)`` give equal spikes (some firing and some silent, unless told not to);
    input gradients within ``(1e-5, x_atol)`` and ``params`` gradients within 1e-4 under one random
    weighting of the spikes. Returns spikelab's spikes."""
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    s1, s2 = ours(x1), theirs(x2)
    assert not some_firing or s1.sum() > 0, "the test input should make some neurons spike"
    assert not some_silent or (s1 == 0).any(), "the test input should leave some neurons silent"
    assert torch.equal(s1, s2)
    w = torch.randn_like(s1)
    (s1 * w).sum().backward()
    (s2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=x_atol)
    for a, b in params:
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)
    return s1
