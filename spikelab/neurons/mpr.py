"""LIF with the Membrane Potential Rectifier (MPR) of Guo et al., *Reducing Information Loss for
Spiking Neural Networks* (ECCV 2022), written as a neuron spec."""

from __future__ import annotations

from spikelab.kernels.expr import maximum, tanh, where
from spikelab.neurons.spec import Neuron


class MPRLIF(Neuron):
    """LIF whose spike sees the membrane through the rectifier ``phi`` (MPR), with the soft reset.

    ``h = decay * v + x``. With the membrane normalised to ``w = h / (2 * threshold)`` (the paper
    fires at 0.5), ``phi(w)`` is ``-cbrt(-w)`` below 0, ``tanh(k (w - 1/2)) / (2 tanh(k / 2)) + 1/2``
    on ``[0, 1]`` and ``w`` above 1: it pulls membranes toward the spike values 0 and 1. The neuron
    fires when ``phi(w) >= 1/2``; ``phi`` is increasing with ``phi(1/2) = 1/2``, so the spikes are the
    plain LIF's, and only the surrogate gradient changes: it is taken at ``phi(w) - 1/2`` and
    multiplied by ``phi'``. The reset subtracts the threshold by default (the paper's soft reset,
    which keeps the part of the membrane above threshold).

    One deviation, stated: the cube root's slope is infinite at 0 (a resting neuron with zero
    input would get an infinite gradient), so below 0 we use
    ``-(cbrt(-w + eps) - cbrt(eps))`` with ``eps = 1e-3`` (slope 33 at 0, same value at 0).
    ``k`` is the rectifier's sharpness (4 by default, our choice).
    """

    parameters = dict(decay=0.5, k=4.0)
    positive = ("k",)
    check_options = dict(input_mean=0.5, input_std=0.8)

    def charge(self, v, x, decay):
        return decay * v + x

    def spike_argument(self, v, threshold, k):
        w = v / (2.0 * threshold)
        below = -((maximum(-w, 0.0) + 1e-3) ** (1.0 / 3.0) - 0.1)
        middle = tanh(k * (w - 0.5)) / (2.0 * tanh(k * 0.5)) + 0.5
        phi = where(w < 0.0, below, where(w > 1.0, w, middle))
        return phi - 0.5


__all__ = ["MPRLIF"]
