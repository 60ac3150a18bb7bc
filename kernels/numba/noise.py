"""The counter-based uniform noise of escape-noise neurons, in Numba (``reference.counter_uniform``)."""

from __future__ import annotations

import numba as nb
import numpy as np

_M32 = np.uint64(0xFFFFFFFF)


@nb.njit(inline="always", cache=True)
def mix32(x):
    """Wellons' lowbias32 hash on a uint64 holding a value below 2**32."""
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & _M32
    return x ^ (x >> np.uint64(16))


@nb.njit(inline="always", cache=True)
def uniform(seed, counter):
    """The same number in [0, 1) as ``reference.counter_uniform`` for this (seed, counter)."""
    c = np.uint64(counter)
    key = mix32((c >> np.uint64(32)) ^ np.uint64(seed))
    bits = mix32((c & _M32) ^ key)
    return np.float32(bits >> np.uint64(8)) * np.float32(2.0**-24)


__all__ = ["uniform", "mix32"]
