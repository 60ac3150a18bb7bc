"""A small cache of large CPU buffers for the fused kernels' outputs.

A CPU training step allocates the same few large tensors every time (spikes, the saved
membrane, the input gradient). glibc returns such blocks to the operating system when they
are freed and page-faults them back in on the next step, which on virtual machines costs as
much as the kernels themselves. The fused kernels therefore take their large outputs from
this cache: a buffer goes back to it only when the last tensor (or view) using it is freed,
so reuse is safe. It holds at most ``SPIKELAB_CPU_CACHE_MB`` (default 1024) MB of idle
buffers; ``SPIKELAB_CPU_CACHE_MB=0`` turns it off, :func:`clear` empties it.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

MIN_BYTES = 1 << 20  # smaller tensors come from torch's allocator as usual
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}

_free: dict[int, list[np.ndarray]] = {}
_lock = threading.Lock()
_idle_bytes = 0


def _limit() -> int:
    try:
        return int(float(os.environ.get("SPIKELAB_CPU_CACHE_MB", "1024")) * (1 << 20))
    except ValueError:
        return 1 << 30


def _give_back(buf: np.ndarray) -> None:
    global _idle_bytes
    with _lock:
        if _idle_bytes + buf.nbytes <= _limit():
            _free.setdefault(buf.nbytes, []).append(buf)
            _idle_bytes += buf.nbytes


class _Lease(np.ndarray):
    """The array a tensor's storage holds: when the storage lets go of it, the buffer returns."""

    def __del__(self):
        owner = getattr(self, "_returns_to_cache", False)
        if owner and self.base is not None:
            try:
                _give_back(self.base)
            except Exception:  # noqa: BLE001 - never raise from a finaliser (interpreter shutdown)
                pass


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor, from the cache when it is large and of a kernel dtype."""
    global _idle_bytes
    count = 1
    for n in shape:
        count *= int(n)
    np_dtype = _NUMPY.get(dtype)
    nbytes = count * (np.dtype(np_dtype).itemsize if np_dtype else 0)
    if np_dtype is None or nbytes < MIN_BYTES or _limit() <= 0:
        return torch.empty(tuple(shape), dtype=dtype)
    with _lock:
        stack = _free.get(nbytes)
        buf = stack.pop() if stack else None
        if buf is not None:
            _idle_bytes -= nbytes
    if buf is None:
        buf = np.empty(nbytes, np.uint8)
    lease = buf.view(_Lease)
    lease._returns_to_cache = True
    return torch.from_numpy(lease.view(np_dtype).reshape(tuple(int(n) for n in shape)))


def clear() -> None:
    """Release every idle buffer."""
    global _idle_bytes
    with _lock:
        _free.clear()
        _idle_bytes = 0


def idle_bytes() -> int:
    return _idle_bytes


__all__ = ["empty", "clear", "idle_bytes"]
