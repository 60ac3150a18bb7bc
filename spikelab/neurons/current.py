"""Current-based (synaptic) LIF: a decaying synaptic current feeds a leaky membrane."""

from __future__ import annotations

from typing import Optional

from spikelab.neurons.base import BaseNeuron, ParamLike, _fmt, beta_from


class CurrentLIF(BaseNeuron):
    """Current-based LIF, snnTorch's ``Synaptic`` dynamics.

    Per step: ``i = alpha * i + x``, ``h = beta * v + i``, ``S = H(h - threshold)``, then the
    reset. State: ``v`` (membrane) and ``i`` (synaptic current).

    The other keyword arguments are :class:`~spikelab.neurons.base.BaseNeuron`'s.

    Args:
        alpha: synaptic current decay in ``[0, 1]``, or ``tau_syn`` (``alpha = 1 - 1/tau_syn``).
        beta: membrane decay in ``[0, 1]``, or ``tau_mem``. Defaults: ``tau_syn = tau_mem = 2``.
        tau_syn: synaptic time constant in steps, instead of ``alpha``.
        tau_mem: membrane time constant in steps, instead of ``beta``.
    """

    family = "cuba"
    state_names = ("v", "i")

    def __init__(self, alpha: Optional[ParamLike] = None, beta: Optional[ParamLike] = None,
                 tau_syn: Optional[ParamLike] = None, tau_mem: Optional[ParamLike] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("syn_decay", beta_from(alpha, tau_syn, self.num_channels, 2.0, what="alpha"))
        self.register_buffer("beta", beta_from(beta, tau_mem, self.num_channels, 2.0, what="beta"))

    def _kernel_args(self, ndim: int):
        options = dict(self._kwargs(), surrogate=self.surrogate, threshold_robust=self.threshold_robust)
        return (self._view(self.syn_decay, ndim), self._view(self.beta, ndim), self._view(self.threshold, ndim)), options

    def extra_repr(self) -> str:
        return f"alpha={_fmt(self.syn_decay)}, beta={_fmt(self.beta)}, " + super().extra_repr()


__all__ = ["CurrentLIF"]
