"""Integrate-and-fire family: IF, LIF (fixed decay) and PLIF (learnable decay)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from spikelab.neurons.base import BaseNeuron, _fmt, ParamLike, beta_from, one_like, param_tensor


class LIF(BaseNeuron):
    r"""Leaky integrate-and-fire neuron.

    Per step: ``h = beta * v + c * x``, ``S = H(h - threshold)``, then the reset (see
    :class:`~spikelab.neurons.base.BaseNeuron`). ``c = 1`` by default; with
    ``decay_input=True`` the input is decayed too, ``c = 1 - beta`` (SpikingJelly's default).
    The other keyword arguments (threshold, reset, surrogate, ...) are :class:`BaseNeuron`'s.

    Args:
        beta: membrane decay per step in ``[0, 1]``; or give ``tau`` (``beta = 1 - 1/tau``,
            ``tau >= 1`` steps). Default ``tau = 2``. A 1-D tensor gives one value per channel.
        tau: membrane time constant in steps, instead of ``beta``.
        decay_input: scale the input by ``1 - beta``.
    """

    family = "lif"

    def __init__(self, beta: Optional[ParamLike] = None, tau: Optional[ParamLike] = None,
                 decay_input: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("beta", beta_from(beta, tau, self.num_channels, default_tau=2.0))
        self.decay_input = bool(decay_input)

    def _decay(self) -> torch.Tensor:
        return self.beta

    def _kernel_args(self, ndim: int):
        beta = self._view(self._decay(), ndim)
        scale = 1.0 - beta if self.decay_input else one_like(beta)
        options = dict(self._kwargs(), surrogate=self.surrogate, threshold_robust=self.threshold_robust)
        return (beta, scale, self._view(self.threshold, ndim)), options

    def extra_repr(self) -> str:
        decay = f"beta={_fmt(self._decay())}"
        return f"{decay}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(LIF):
    """Integrate-and-fire neuron (no leak): ``h = v + x``."""

    def __init__(self, **kwargs) -> None:
        for arg in ("beta", "tau", "decay_input"):
            if arg in kwargs:
                raise TypeError(f"IF: unexpected argument {arg!r} (an IF neuron does not leak; use LIF)")
        super().__init__(beta=1.0, **kwargs)

    def extra_repr(self) -> str:
        return BaseNeuron.extra_repr(self)


class PLIF(LIF):
    """Parametric LIF (Fang et al., ICCV 2021): the decay is learned, one per layer or per channel.

    ``1 / tau = sigmoid(w)`` with ``w`` the learnable parameter, so ``beta = 1 - sigmoid(w)``
    stays in ``(0, 1)``. Input decayed by default (``decay_input=True``), as in the paper.
    Give ``num_channels`` for one tau per channel.
    """

    def __init__(self, tau: ParamLike = 2.0, decay_input: bool = True, **kwargs) -> None:
        if "beta" in kwargs:
            raise TypeError("PLIF: give the initial decay as tau (> 1), not beta")
        super().__init__(beta=0.5, decay_input=decay_input, **kwargs)
        del self.beta
        tau_t = param_tensor(tau, "tau", self.num_channels, low=1.0, low_open=True)
        self.w = nn.Parameter(-torch.log(tau_t - 1.0))

    def _decay(self) -> torch.Tensor:
        return torch.sigmoid(-self.w)

    @property
    def tau(self) -> torch.Tensor:
        """The current membrane time constant ``1 / sigmoid(w)`` (in steps)."""
        return 1.0 / torch.sigmoid(self.w.detach())


__all__ = ["LIF", "IF", "PLIF"]
