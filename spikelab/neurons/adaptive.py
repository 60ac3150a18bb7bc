"""Adaptive LIF: a threshold that rises with each spike and relaxes back (Bellec et al. 2018)."""

from __future__ import annotations

from typing import Optional

from spikelab.neurons.base import ParamLike, _fmt, beta_from, param_tensor
from spikelab.neurons.lif import LIF


class AdaptiveLIF(LIF):
    """LIF whose effective threshold is ``threshold + adaptation * a``.

    The adaptation trace follows ``a <- rho * a + (1 - rho) * S`` (the LSNN form), with
    ``rho = 1 - 1/tau_adapt``. The soft reset subtracts the effective threshold that was
    crossed. State: ``v`` (membrane) and ``a`` (adaptation trace). The other keyword
    arguments are :class:`LIF`'s.

    Args:
        tau_adapt: adaptation time constant in steps (>= 1), or give ``rho`` directly.
        adaptation: threshold increase per unit of ``a`` (Bellec's beta, default 1.8).
    """

    family = "alif"
    state_names = ("v", "a")

    def __init__(self, beta: Optional[ParamLike] = None, tau: Optional[ParamLike] = None,
                 tau_adapt: Optional[ParamLike] = None, rho: Optional[ParamLike] = None,
                 adaptation: ParamLike = 1.8, **kwargs) -> None:
        super().__init__(beta=beta, tau=tau, **kwargs)
        self.register_buffer("rho", beta_from(rho, tau_adapt, self.num_channels, default_tau=20.0, what="rho"))
        self.register_buffer("adaptation", param_tensor(adaptation, "adaptation", self.num_channels, low=0.0))

    def _kernel_args(self, ndim: int):
        (beta, scale, threshold), options = super()._kernel_args(ndim)
        return (beta, scale, threshold, self._view(self.rho, ndim), self._view(self.adaptation, ndim)), options

    def extra_repr(self) -> str:
        return f"rho={_fmt(self.rho)}, adaptation={_fmt(self.adaptation)}, " + super().extra_repr()


__all__ = ["AdaptiveLIF"]
