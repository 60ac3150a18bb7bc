"""Non-spiking readouts: the leaky integrator (LI) and the perfect integrator (I).

A readout accumulates its input into a membrane and outputs the membrane itself, never a
spike; it is what NIR calls ``LI`` (leaky) and ``I`` (no leak), and what a network ends with
when its class scores should be smooth in time. It is a linear recurrence, so it runs as a
plain PyTorch loop (there is no threshold to fuse).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from spikelab._checks import as_batch_index, check_float_tensor, check_time_steps, finite_tensor as _param
from spikelab.sequence import SequenceModule


class LeakyIntegrator(nn.Module, SequenceModule):
    """Per step: ``v = beta * v + input_scale * x``; the output is ``v``.

    ``beta`` and ``input_scale`` are numbers or tensors broadcasting against one step's
    per-sample shape (one value per neuron is fine); ``beta = 1`` is a perfect integrator.
    """

    _spikelab_stateful = True

    def __init__(self, beta=0.9, input_scale=1.0) -> None:
        super().__init__()
        beta_t = _param(beta, "beta")
        if ((beta_t < 0) | (beta_t > 1)).any():
            raise ValueError("beta: expected values in [0, 1]")
        self.register_buffer("beta", beta_t)
        self.register_buffer("input_scale", _param(input_scale, "input_scale"))
        self._v: Optional[torch.Tensor] = None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Run ``[T, B, ...]`` from ``v = 0``; return the membrane at every step."""
        check_time_steps(check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]"))
        v = torch.zeros_like(x_seq[0])
        outs = []
        for t in range(x_seq.shape[0]):
            v = self.beta * v + self.input_scale * x_seq[t]
            outs.append(v)
        return torch.stack(outs)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", 1, "[B, ...]")
        v = torch.zeros_like(x) if self._v is None else self._v
        self._v = self.beta * v + self.input_scale * x
        return self._v

    def reset(self) -> None:
        self._v = None

    @property
    def state(self) -> dict:
        return {"v": self._v}

    def select_batch(self, index) -> None:
        if self._v is not None:
            self._v = self._v.index_select(0, as_batch_index(index, self._v.device, self._v.shape[0]))

    def extra_repr(self) -> str:
        b = self.beta
        return f"beta={b.item():.4g}" if b.numel() == 1 else f"beta=[{b.numel()} values]"


__all__ = ["LeakyIntegrator"]
