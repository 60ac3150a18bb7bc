"""Per-neuron element-wise layers: a fixed scale, a Heaviside threshold and a delay (NIR's Scale,
Threshold and Delay), broadcasting one value per neuron (or one for all) against each step's features."""

from __future__ import annotations

import torch
from torch import nn

from spikelab._checks import as_batch_index, check_float_tensor, finite_tensor as _values
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


class Delay(nn.Module, SequenceModule):
    """``y[t] = x[t - d]`` per neuron, ``d`` whole steps (zeros before the first input arrives)."""

    _spikelab_stateful = True

    def __init__(self, steps) -> None:
        super().__init__()
        steps = torch.as_tensor(steps)
        if steps.is_floating_point() and not torch.equal(steps, steps.round()):
            raise ValueError("steps: expected whole numbers of steps")
        if (steps < 0).any():
            raise ValueError("steps: expected delays >= 0")
        self.register_buffer("steps", steps.to(torch.long))
        self._history: list[torch.Tensor] = []

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        T = x_seq.shape[0]
        t = torch.arange(T, device=x_seq.device).view(T, *([1] * (x_seq.ndim - 1)))
        source = t - self.steps.to(x_seq.device)
        gathered = torch.take_along_dim(x_seq, source.clamp_min(0).expand_as(x_seq), dim=0)
        return torch.where(source >= 0, gathered, torch.zeros_like(gathered))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self._history.append(x)
        depth = int(self.steps.max()) + 1
        self._history = self._history[-depth:]
        return self.forward(torch.stack(self._history))[-1]

    def reset(self) -> None:
        self._history = []

    def select_batch(self, index) -> None:
        if self._history:
            index = as_batch_index(index, self._history[0].device, self._history[0].shape[0])
            self._history = [h.index_select(0, index) for h in self._history]


__all__ = ["Delay", "Scale", "Threshold"]
