"""Dropout with one mask for all time steps of a sequence."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from spikelab._checks import as_batch_index, check_float_tensor, check_number
from spikelab.layers.temporal import SequenceModule


class Dropout(nn.Module, SequenceModule):
    """Zero a random set of units for the whole sequence (the same mask at every step).

    A fresh mask per step would inject noise into the membrane dynamics; one mask per
    sequence drops whole units, as in SpikingJelly's ``layer.Dropout``. In streaming
    (``step``) the mask is drawn at the first step and kept until ``reset()``.
    """

    _spikelab_stateful = True

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_number(p, "p", low=0.0, high=1.0, high_open=True)
        self._mask: Optional[torch.Tensor] = None

    def _draw(self, shape, like: torch.Tensor) -> torch.Tensor:
        keep = torch.full(shape, 1.0 - self.p, dtype=like.dtype, device=like.device)
        return torch.bernoulli(keep) / (1.0 - self.p)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]")
        if not self.training or self.p == 0:
            return x_seq
        return x_seq * self._draw(x_seq.shape[1:], x_seq)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self._mask is None or self._mask.shape != x.shape:
            self._mask = self._draw(x.shape, x)
        return x * self._mask

    def reset(self) -> None:
        self._mask = None

    def select_batch(self, index: torch.Tensor) -> None:
        if self._mask is not None:
            self._mask = self._mask.index_select(0, as_batch_index(index, self._mask.device, self._mask.shape[0]))

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["Dropout"]
