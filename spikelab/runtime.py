"""Process-level performance settings, applied only when asked.

Training on CPU allocates and frees the same large buffers every step (spikes, saved
membranes, gradients). glibc's default malloc returns such buffers to the operating system
and page-faults them back in on the next step, which can cost as much as the kernels
themselves. :func:`tune_cpu_allocator` keeps freed memory for reuse instead, as jemalloc or
tcmalloc (often preloaded for PyTorch CPU work) do. It changes the whole process, so
spikelab never calls it implicitly: call it once at the start of a training script.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(keep_bytes: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Make glibc malloc keep up to ``keep_bytes`` of freed memory and serve allocations
    below ``mmap_threshold`` (at most 32 MiB) from its heap. Returns True when applied
    (Linux with glibc), False elsewhere (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok_trim = mallopt(_M_TRIM_THRESHOLD, min(int(keep_bytes), 2**31 - 1))
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, min(int(mmap_threshold), 32 << 20))
    return bool(ok_trim and ok_mmap)


__all__ = ["tune_cpu_allocator"]
