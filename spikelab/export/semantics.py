"""How spikelab reads the NIR equations in discrete time: the one place both directions use.

NIR writes continuous-time equations and stores no time step, so ``dt`` is an explicit
argument on both sides. With forward Euler over one step of ``dt``:

* ``LIF``: ``v <- v + dt / tau * (v_leak - v + r * I)``, i.e. ``beta = 1 - dt / tau`` and an
  input scale ``c = dt * r / tau``. spikelab's ``LIF`` (``c = 1``) is written with
  ``tau = dt / (1 - beta)``, ``r = tau / dt``; with ``decay_input=True`` (``c = 1 - beta``), ``r = 1``.
* ``CubaLIF``: the current is updated first, ``I <- I + dt / tau_syn * (-I + w_in * S)``, then
  the membrane sees the *updated* current (snnTorch's ``Synaptic`` and Norse's order):
  ``alpha = 1 - dt / tau_syn``, ``w_in = tau_syn / dt`` and ``r = tau_mem / dt`` give
  ``CurrentLIF``'s ``i = alpha * i + x``, ``v = beta * v + i``.
* ``IF`` and ``I`` have no time constant: ``v <- v + r * I`` per step (Norse's, snnTorch's and
  sinabs's reading; ``dt`` does not enter).
* ``LI``: ``v <- v + dt / tau * (v_leak - v + r * I)``, output ``v``.

Firing is ``v > v_threshold`` in NIR and ``v >= threshold`` in spikelab: the threshold is
written as the next float32 below ours (and read back as the next float32 above), which makes
the two comparisons identical in float32 arithmetic.
"""

from __future__ import annotations

import numpy as np


def nir_threshold(ours: np.ndarray) -> np.ndarray:
    """spikelab's ``>=`` threshold as NIR's ``>`` threshold (float32)."""
    t = np.asarray(ours, dtype=np.float32)
    return np.nextafter(t, np.float32(-np.inf)).astype(np.float32)


def our_threshold(nir: np.ndarray) -> np.ndarray:
    """NIR's ``>`` threshold as spikelab's ``>=`` threshold (float32)."""
    t = np.asarray(nir, dtype=np.float32)
    return np.nextafter(t, np.float32(np.inf)).astype(np.float32)


def tau_from_decay(decay: np.ndarray, dt: float) -> np.ndarray:
    """``tau = dt / (1 - decay)`` in float64 (decay < 1)."""
    return dt / (1.0 - np.asarray(decay, dtype=np.float64))


def decay_from_tau(tau: np.ndarray, dt: float) -> np.ndarray:
    """``1 - dt / tau``."""
    return 1.0 - dt / np.asarray(tau, dtype=np.float64)


__all__ = ["nir_threshold", "our_threshold", "tau_from_decay", "decay_from_tau"]
