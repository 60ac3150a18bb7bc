"""Per-neuron element-wise layers: a fixed scale and a Heaviside threshold (NIR's Scale and
Threshold), broadcasting one value per neuron (or one for all) against each step's features."""

from __future__ import annotations

import torch
from torch import nn

from spikelab._checks import check_float_tensor, finite_tensor as _values
from spikelab.layers.temporal import SequenceModule


class Scale(nn.Module, SequenceModule):
    """``y = x * scale``, ``scale`` broadcasting against one step's per-sample shape."""

    def __init__(self, scale) -> None:
        super().__init__()
        self.register_buffer("scale", _values(scale, "scale"))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "Scale input", 2, "[T, B, ...]")
        return x_seq * self.scale

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Threshold(nn.Module, SequenceModule):
    """``y = 1 if x >= threshold else 0`` per neuron (a stateless spike generator)."""

    def __init__(self, threshold) -> None:
        super().__init__()
        self.register_buffer("threshold", _values(threshold, "threshold"))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "Threshold input", 2, "[T, B, ...]")
        return (x_seq >= self.threshold).to(x_seq.dtype)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return (x >= self.threshold).to(x.dtype)


__all__ = ["Scale", "Threshold"]
