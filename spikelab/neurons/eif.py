"""Exponential integrate-and-fire (Fourcaud-Trocme et al. 2003), written as a neuron spec."""

from __future__ import annotations

from spikelab.kernels.expr import exp
from spikelab.neurons.spec import Neuron


class EIF(Neuron):
    """Exponential integrate-and-fire: a leak plus an exponential upswing near ``v_rheo``.

    Per step (forward Euler, dt = 1): ``h = v + (-v + delta * exp((v - v_rheo) / delta) + x) / tau``,
    then the threshold and reset options as for every neuron. ``delta`` is the slope factor
    (sharpness of the spike initiation), ``v_rheo`` the rheobase potential. Parameters are per
    layer, per channel (1-D tensors) or per neuron; ``learn=True`` learns all three.
    """

    parameters = dict(tau=10.0, delta=0.5, v_rheo=0.8)
    positive = ("tau", "delta")
    check_options = dict(resets=("subtract", "zero"), input_mean=1.5, input_std=2.0)

    def charge(self, v, x, tau, delta, v_rheo):
        return v + (-v + delta * exp((v - v_rheo) / delta) + x) / tau


__all__ = ["EIF"]
