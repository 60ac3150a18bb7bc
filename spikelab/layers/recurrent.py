"""Recurrent wrapper: a neuron whose previous spikes feed back into its input."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from spikelab._checks import as_batch_index, check_float_tensor
from spikelab.layers.temporal import SequenceModule
from spikelab.neurons.base import BaseNeuron


class Recurrent(nn.Module, SequenceModule):
    """``S[t] = neuron(x[t] + feedback(S[t-1]))``, with ``S[-1] = 0`` (so a feedback bias acts from
    the first step, as in snnTorch's ``RLeaky``).

    ``feedback`` maps one step of the neuron's output ``[B, ...]`` to its input shape, for
    example ``nn.Linear(n, n)`` for a fully recurrent layer (snnTorch's ``RLeaky``).
    """

    _spikelab_stateful = True

    def __init__(self, neuron: BaseNeuron, feedback: nn.Module) -> None:
        super().__init__()
        if not isinstance(neuron, BaseNeuron):
            raise TypeError(f"neuron: expected a spikelab neuron, got {type(neuron).__name__}")
        if not isinstance(feedback, nn.Module):
            raise TypeError(f"feedback: expected an nn.Module, got {type(feedback).__name__}")
        self.neuron = neuron
        self.feedback = feedback
        self._last: Optional[torch.Tensor] = None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]")
        state = self.neuron.initial_state(x_seq[0])
        out = torch.zeros_like(x_seq[0])
        outs = []
        for t in range(x_seq.shape[0]):
            out, state = self.neuron.advance(x_seq[t] + self.feedback(out), state)
            outs.append(out)
        return torch.stack(outs)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        last = torch.zeros_like(x) if self._last is None else self._last
        drive = x + self.feedback(last)
        self._last = self.neuron.step(drive)
        return self._last

    def reset(self) -> None:
        self.neuron.reset()
        self._last = None

    def select_batch(self, index: torch.Tensor) -> None:
        self.neuron.select_batch(index)
        if self._last is not None:
            self._last = self._last.index_select(0, as_batch_index(index, self._last.device, self._last.shape[0]))


__all__ = ["Recurrent"]
