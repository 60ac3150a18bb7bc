"""Probabilistic (escape-noise) LIF: spikes are Bernoulli draws of a sigmoid of the membrane."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn

from spikelab.neurons.base import BaseNeuron, ParamLike, _fmt, one_like, param_tensor


class ProbabilisticLIF(BaseNeuron):
    """LIF with stochastic firing: ``S ~ Bernoulli(p)``, ``p = sigmoid((h - threshold) / temperature)``.

    The gradient is the derivative of the escape function ``p`` (no surrogate needed). The
    decay (``beta = 1 - sigmoid(w)``, as in PLIF), the threshold and the temperature are learned
    jointly with the weights by default. Each call draws one seed from torch's global
    generator (so ``torch.manual_seed`` makes runs reproducible) and the uniform numbers are
    a counter-based hash of (seed, step, neuron): every backend gives the same spikes, and
    the fused backward recomputes them instead of storing them. With ``stochastic=False`` the output is
    the firing probability ``p`` itself (a deterministic mean-field neuron). The other keyword
    arguments (threshold, reset, detach_reset, mp_init, num_channels, backend) are ``BaseNeuron``'s.

    Args:
        tau: initial membrane time constant (> 1 step).
        temperature: initial escape-noise temperature (> 0); small means nearly deterministic.
        learn: learn decay, threshold and temperature (default True).
        decay_input: decay the input with ``1 - beta`` as well.
        stochastic: draw spikes (True) or output the firing probability (False).
    """

    family = "probabilistic"
    uses_surrogate = False

    def __init__(self, tau: ParamLike = 2.0, temperature: ParamLike = 0.25, learn: bool = True,
                 decay_input: bool = False, stochastic: bool = True, **kwargs) -> None:
        for arg in ("surrogate", "surrogate_alpha", "threshold_robust"):
            if arg in kwargs:
                raise TypeError(f"ProbabilisticLIF: unexpected argument {arg!r}; its gradient is the escape "
                                "function's derivative, not a surrogate")
        kwargs.setdefault("learn_threshold", learn)
        super().__init__(**kwargs)
        tau_t = param_tensor(tau, "tau", self.num_channels, low=1.0, low_open=True)
        temp_t = param_tensor(temperature, "temperature", self.num_channels, low=0.0, low_open=True)
        self.w = nn.Parameter(-torch.log(tau_t - 1.0), requires_grad=bool(learn))
        self.log_temperature = nn.Parameter(torch.log(temp_t), requires_grad=bool(learn))
        self.decay_input = bool(decay_input)
        self.stochastic = bool(stochastic)
        self._streaming = False
        self._stream_key: Optional[torch.Tensor] = None

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def _kernel_args(self, ndim: int):
        beta = self._view(torch.sigmoid(-self.w), ndim)
        scale = 1.0 - beta if self.decay_input else one_like(beta)
        params = (beta, scale, self._view(self.threshold, ndim), self._view(self.temperature, ndim))
        return params, self._kwargs()

    def _extra_inputs(self, x: torch.Tensor) -> tuple:
        if not self.stochastic:
            return (None,)
        # one seed per sequence from torch's generator; the noise itself is a counter-based
        # hash of (seed, step, neuron), identical on every backend and never stored
        if self._streaming:
            if self._stream_key is None:
                self._stream_key = self._draw_key()
            key = self._stream_key.clone()
            self._stream_key[1] += x.shape[0]
            return (key,)
        return (self._draw_key(),)

    @staticmethod
    def _draw_key() -> torch.Tensor:
        """``(seed, first_step = 0)`` as an int64 tensor (no host sync, traceable by torch.compile)."""
        seed = torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64)
        return torch.cat([seed, torch.zeros(1, dtype=torch.int64)])

    @contextlib.contextmanager
    def _stream(self):
        """Streaming calls draw their noise from the stream's key and step counter."""
        self._streaming = True
        try:
            yield
        finally:
            self._streaming = False

    def step(self, x: torch.Tensor) -> torch.Tensor:
        with self._stream():
            return super().step(x)

    def steps(self, x_seq: torch.Tensor) -> torch.Tensor:
        with self._stream():
            return super().steps(x_seq)

    def reset(self) -> None:
        super().reset()
        self._stream_key = None

    def extra_repr(self) -> str:
        return (f"beta={_fmt(torch.sigmoid(-self.w))}, temperature={_fmt(self.temperature)}, "
                f"stochastic={self.stochastic}, " + super().extra_repr())


__all__ = ["ProbabilisticLIF"]
