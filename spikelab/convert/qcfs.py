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
        self.replaces: str | None = None  # the ReLU call it stands for, set by replace_relu_with_qcfs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x / self.clip * self.levels + 0.5
        return torch.clamp(_FloorSTE.apply(scaled) / self.levels, 0.0, 1.0) * self.clip

    def extra_repr(self) -> str:
        return f"levels={self.levels}, clip={self.clip.item():.4g}"


def replace_relu_with_qcfs(model: nn.Module, levels: int = 8, clip: float = 8.0) -> nn.Module:
    """A copy of ``model`` (traced with torch.fx) with a fresh QCFS at every ReLU call site,
    registered as ``qcfs_0``, ``qcfs_1``, ... (the names of its state_dict); each remembers the
    call it replaces (``.replaces``) for the conversion report."""
    from spikelab.convert.graph import activation_sites, replace_with_module, site_names, tidy, trace

    gm = trace(model)
    sites = activation_sites(gm)
    for i, (node, (name, described)) in enumerate(zip(sites, site_names(gm, sites, type(model)))):
        q = QCFS(levels, clip)
        q.replaces = f"{name}: {described}"
        replace_with_module(gm, node, f"qcfs_{i}", q)
    return tidy(gm)


__all__ = ["QCFS", "replace_relu_with_qcfs"]
