"""Process-level performance settings, applied only when asked.

Training on CPU allocates and frees the same large buffers every step (convolution outputs,
spikes, saved inputs, gradients). glibc's malloc serves blocks above its mmap threshold
(at most 32 MiB) with fresh ``mmap`` pages and returns them to the operating system when
they are freed, so every step page-faults its whole working set back in: measured on the
demo CNN (T = 50, B = 32), about 300k faults and 0.8 s of system time per step.
:func:`tune_cpu_allocator` makes glibc serve every block from its heap and keep freed memory
for reuse instead (as jemalloc or tcmalloc, often preloaded for PyTorch CPU work, do): the
same step then takes about 7k faults. The price is memory that stays reserved after a peak.
It changes the whole process, so the library never calls it implicitly; the ``spikelab``
command calls it for ``train`` and ``demo`` (``SPIKELAB_TUNE_ALLOCATOR=0`` turns that off).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4


def tune_cpu_allocator(keep_bytes: int = 1 << 30, mmap_threshold: int = 32 << 20, mmap: bool = False) -> bool:
    """Make glibc malloc keep up to ``keep_bytes`` of freed memory at the top of its heap and
    serve large blocks from the heap: with ``mmap=False`` (default) it stops using ``mmap`` for
    single blocks (glibc still falls back to it when a heap cannot grow), else it uses it only
    for blocks of ``mmap_threshold`` bytes or more (at most 32 MiB, glibc's cap). The main heap
    shrinks only from its top, so memory freed under a live block stays reserved; processes
    forked later (DataLoader workers) inherit the setting. Returns True when applied (Linux
    with glibc), False elsewhere (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_TRIM_THRESHOLD, min(int(keep_bytes), 2**31 - 1))
    ok = ok and mallopt(_M_MMAP_THRESHOLD, min(int(mmap_threshold), 32 << 20))
    if not mmap:
        ok = ok and mallopt(_M_MMAP_MAX, 0)
    return bool(ok)


def tune_for_command() -> bool:
    """What the ``spikelab`` command calls before training: :func:`tune_cpu_allocator` unless
    ``SPIKELAB_TUNE_ALLOCATOR=0``."""
    if os.environ.get("SPIKELAB_TUNE_ALLOCATOR", "1") == "0":
        return False
    return tune_cpu_allocator()


__all__ = ["tune_cpu_allocator", "tune_for_command"]
