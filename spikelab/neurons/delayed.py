"""Neurons whose soft reset lands one step late, after the decay: snnTorch's default ``Leaky`` and
``Synaptic`` (``reset_delay=True``), written as neuron specs so they run on the fused kernels.

spikelab's own neurons subtract the threshold in the step that fired. snnTorch's default
subtracts it at the start of the *next* step, after the membrane has decayed, and cuts the
gradient through that reset. Per step::

    h = beta * v + x - r                   (r: the reset pending from the last step)
    S = H(h - threshold)
    r = threshold if h >= threshold else 0  (no gradient through the comparison)

so ``v`` keeps the unreset membrane (snnTorch's ``mem``) and ``r`` the pending reset. The
arithmetic runs in snnTorch's order, ``(beta * mem + x) - reset * threshold``, so spikes are
identical, not only close; the one difference left is the equality case: spikelab fires at
``h >= threshold``, snnTorch at ``h > threshold`` (see docs/snntorch.md).
"""

from __future__ import annotations

from spikelab._checks import check_values
from spikelab.kernels.expr import clamp, where
from spikelab.neurons.spec import Neuron


class _DelayedReset:
    """The delayed soft reset shared by both neurons (a mixin before :class:`Neuron`)."""

    check_options = dict(resets=("subtract",))  # for spikelab.testing.check_neuron

    def __init__(self, *, reset: str = "subtract", **kwargs) -> None:
        if reset not in ("subtract", "soft"):
            raise ValueError(
                f"reset: {type(self).__name__} delays the soft reset only (reset='subtract'), got {reset!r}; "
                "snnTorch's delayed reset to zero is spikelab's LIF(reset='zero', detach_reset=True)")
        if kwargs.get("threshold_robust"):
            raise ValueError(f"{type(self).__name__}: threshold_robust changes the output scale, which the "
                             "delayed reset does not model; use LIF")
        super().__init__(reset="none", **kwargs)  # the firing state is reset through `r`, a step later
        for name in ("alpha", "beta"):
            if name in self.spec_parameters:  # snnTorch clamps the decays to [0, 1]; we refuse others
                check_values(getattr(self, name).detach(), f"{type(self).__name__}.{name}", low=0.0, high=1.0)

    def after_spike(self, v, threshold):
        return {"r": where(v >= threshold, threshold, 0.0)}

    def extra_repr(self) -> str:
        return super().extra_repr().replace("reset=none", "reset=subtract (delayed)")


class DelayedResetLIF(_DelayedReset, Neuron):
    """snnTorch's default ``Leaky(beta, threshold)``: LIF with the soft reset applied one step late.

    ``h = beta * v + x - r``; ``r`` is the threshold when the last step fired, else 0. Give
    ``beta`` in ``[0, 1]``; every other option (threshold, surrogate, ``learn=("beta",)``,
    ``learn_threshold``, ``num_channels``, backend) is the other neurons'.
    """

    parameters = dict(beta=0.9)
    states = ("v", "r")

    def charge(self, v, r, x, beta):
        return {"v": clamp(beta, 0.0, 1.0) * v + x - r}  # clamped as snnTorch does, for a learned beta


class DelayedResetCurrentLIF(_DelayedReset, Neuron):
    """snnTorch's default ``Synaptic(alpha, beta, threshold)``: current-based LIF with the soft reset
    applied one step late. ``i <- alpha * i + x``, ``h = beta * v + i - r``."""

    parameters = dict(alpha=0.6, beta=0.8)
    states = ("v", "i", "r")

    def charge(self, v, i, r, x, alpha, beta):
        current = clamp(alpha, 0.0, 1.0) * i + x
        return {"i": current, "v": clamp(beta, 0.0, 1.0) * v + current - r}


__all__ = ["DelayedResetLIF", "DelayedResetCurrentLIF"]
