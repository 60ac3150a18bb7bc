"""Encoders: turn static values or analog sequences into spike trains ``[T, B, ...]``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from spikelab._checks import check_float_tensor, check_number


def _check_steps(num_steps: int) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
    return num_steps


def _check_unit_range(x: torch.Tensor, name: str) -> None:
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name}: expected values in [0, 1] (normalise first), "
                         f"got range [{x.min().item():.4g}, {x.max().item():.4g}]")


class PoissonEncoder(nn.Module):
    """Rate code: at each of ``num_steps`` steps, spike with probability ``gain * x``.

    ``x`` (``[B, ...]``, values in ``[0, 1]``) -> ``[num_steps, B, ...]`` of 0/1. Uses torch's
    generator, so ``torch.manual_seed`` makes it reproducible.
    """

    def __init__(self, num_steps: int, gain: float = 1.0) -> None:
        super().__init__()
        self.num_steps = _check_steps(num_steps)
        self.gain = check_number(gain, "gain", low=0.0, high=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", 1, "[B, ...]")
        _check_unit_range(x, "x")
        p = (x * self.gain).unsqueeze(0).expand(self.num_steps, *x.shape)
        return torch.bernoulli(p)

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, gain={self.gain}"


class LatencyEncoder(nn.Module):
    """Time-to-first-spike code: each input spikes once, brighter inputs earlier.

    ``linear``: spike at step ``round((1 - x) * (num_steps - 1))``. ``log`` (RC circuit):
    spike at ``tau * ln(x / (x - threshold))``, clipped to the window. Inputs at or below
    ``threshold`` never spike.
    """

    def __init__(self, num_steps: int, mode: str = "linear", tau: float = 5.0, threshold: float = 0.01) -> None:
        super().__init__()
        self.num_steps = _check_steps(num_steps)
        if mode not in ("linear", "log"):
            raise ValueError(f"mode: expected 'linear' or 'log', got {mode!r}")
        self.mode = mode
        self.tau = check_number(tau, "tau", low=0.0, low_open=True)
        self.threshold = check_number(threshold, "threshold", low=0.0, high=1.0, high_open=True)

    def spike_times(self, x: torch.Tensor) -> torch.Tensor:
        """Spike step of every input (``num_steps`` where it never spikes)."""
        check_float_tensor(x, "x", 1, "[B, ...]")
        _check_unit_range(x, "x")
        last = self.num_steps - 1
        if self.mode == "linear":
            times = torch.round((1 - x) * last)
        else:
            ratio = x / (x - self.threshold).clamp_min(1e-12)
            times = torch.round(self.tau * torch.log(ratio.clamp_min(1.0))).clamp(0, last)
        return torch.where(x > self.threshold, times, torch.full_like(times, self.num_steps)).long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        times = self.spike_times(x)
        steps = torch.arange(self.num_steps, device=x.device).view(-1, *([1] * x.ndim))
        return (steps == times.unsqueeze(0)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, mode={self.mode}, threshold={self.threshold}"


class DeltaEncoder(nn.Module):
    """Send-on-delta code of an analog sequence ``[T, B, ...]`` (an event camera's rule).

    Each unit keeps a reference level (its value at ``t = 0``, or ``initial`` when given);
    whenever the signal has moved at least ``threshold`` above (below) it, an ON (OFF) spike
    is emitted and the reference follows the signal. OFF spikes are ``-1``, or dropped with
    ``off_spikes=False``. Slow drifts are caught, unlike a step-to-step difference.
    """

    def __init__(self, threshold: float = 0.1, off_spikes: bool = True, initial: Optional[float] = None) -> None:
        super().__init__()
        self.threshold = check_number(threshold, "threshold", low=0.0, low_open=True)
        self.off_spikes = bool(off_spikes)
        self.initial = None if initial is None else check_number(initial, "initial")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]")
        ref = x_seq[0].clone() if self.initial is None else torch.full_like(x_seq[0], self.initial)
        out = torch.zeros_like(x_seq)
        for t in range(x_seq.shape[0]):
            diff = x_seq[t] - ref
            on = diff >= self.threshold
            off = diff <= -self.threshold
            out[t] = on.to(x_seq.dtype) - (off.to(x_seq.dtype) if self.off_spikes else 0)
            ref = torch.where(on | off, x_seq[t], ref)
        return out

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, off_spikes={self.off_spikes}"


__all__ = ["PoissonEncoder", "LatencyEncoder", "DeltaEncoder"]
