"""Losses on per-step outputs ``[T, B, classes]``."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def rate_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the time-averaged output (rate-coded logits)."""
    return F.cross_entropy(out.mean(0), y)


def membrane_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the final membrane of a non-leaky, non-spiking readout (the sum over time)."""
    return F.cross_entropy(out.sum(0), y)


def tet(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Temporal efficient training (Deng et al. 2022): the mean of per-step cross-entropies."""
    return F.cross_entropy(out.flatten(0, 1), y.repeat(out.shape[0]))


def prefix_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the running mean at every step, averaged over the steps: the output
    averaged over steps ``1..t`` must name the class for every ``t``, not only at ``T``.

    The rate-coded prediction after ``t`` steps is what an early exit reads (Dynamic
    Confidence stops on this accumulated readout), so this trains an SNN to decide early; at
    ``t = T`` the term is :func:`rate_ce`. Measured on the event benchmark (docs/dynamic.md):
    the oracle's mean exit step fell from 55.5 to 32.9 of 300 against ``rate_ce``, at a higher
    static accuracy. Early steps weigh more: step ``s`` is in every running mean from ``s`` on.
    """
    dtype = torch.promote_types(out.dtype, torch.float32)  # half precision cannot count past 256 steps
    steps = torch.arange(1, out.shape[0] + 1, dtype=dtype, device=out.device)
    running = out.cumsum(0, dtype=dtype) / steps.view(-1, *([1] * (out.ndim - 1)))
    return F.cross_entropy(running.flatten(0, 1), y.repeat(out.shape[0]))


def count_mse(out: torch.Tensor, y: torch.Tensor, correct_rate: float = 0.8, incorrect_rate: float = 0.2
              ) -> torch.Tensor:
    """MSE between each class's output count over time and a target count: ``correct_rate * T`` for
    the true class, ``incorrect_rate * T`` else. snnTorch's ``mse_count_loss`` is this divided by
    ``T`` (it also truncates the targets to whole spikes)."""
    steps = out.shape[0]
    target = torch.full_like(out[0], incorrect_rate * steps)
    target.scatter_(1, y.unsqueeze(1), correct_rate * steps)
    return F.mse_loss(out.sum(0), target)


LOSSES = {"rate_ce": rate_ce, "membrane_ce": membrane_ce, "tet": tet, "prefix_ce": prefix_ce, "count_mse": count_mse}


__all__ = ["rate_ce", "membrane_ce", "tet", "prefix_ce", "count_mse", "LOSSES"]
