"""QCFS: the quantisation-clip-floor-shift activation (Bu et al., ICLR 2022).

``y = lambda * clamp(floor(x * L / lambda + 1/2) / L, 0, 1)``, with a learnable clip
``lambda`` and a straight-through gradient through the floor. An ANN trained with it converts
to an IF network (threshold ``lambda``, membrane starting at ``lambda / 2``) whose rate output
after T = L steps equals the ANN's activation: conversion with (almost) no error at few steps.
"""

from __future__ import annotations

import torch
from torch import nn


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift activation with ``levels`` steps and a learnable clip."""

    def __init__(self, levels: int = 8, clip: float = 8.0) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels: expected a positive int, got {levels!r}")
        if not clip > 0:
            raise ValueError(f"clip: expected > 0, got {clip}")
        self.levels = levels
        self.clip = nn.Parameter(torch.tensor(float(clip)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x / self.clip * self.levels + 0.5
        return torch.clamp(_FloorSTE.apply(scaled) / self.levels, 0.0, 1.0) * self.clip

    def extra_repr(self) -> str:
        return f"levels={self.levels}, clip={self.clip.item():.4g}"


def replace_relu_with_qcfs(model: nn.Module, levels: int = 8, clip: float = 8.0) -> nn.Module:
    """A copy of ``model`` (traced with torch.fx) with a fresh QCFS at every ReLU call site."""
    from spikelab.convert.graph import activation_sites, replace_with_module, tidy, trace

    gm = trace(model)
    for i, node in enumerate(activation_sites(gm)):
        replace_with_module(gm, node, f"qcfs_{i}", QCFS(levels, clip))
    return tidy(gm)
