"""Run a generated Numba kernel over its chunks of neurons, on one thread or on Numba's pool.

Each generated kernel ``name(c_lo, c_hi, ...)`` is serial over the chunks ``[c_lo, c_hi)``; its
twin ``name_tasks(nchunks, ...)`` runs every chunk as a task of a ``prange`` loop
(kernels/codegen.py). Only the small twin goes through Numba's parallel compiler, which took
two to four times as long as the serial one for a whole kernel body, and it is compiled only
when a call is large enough to use threads (compiling it still re-optimises the kernel it links:
a LIF backward's twin took about 4 s after the kernel's 2 s). The threads are Numba's OpenMP
pool: a Python thread pool over the same serial kernels was tried and lost 1.5-2 ms per call
whenever a torch operation had just run (torch's OpenMP threads still spinning on the cores).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numba

# Below this many neuron-steps a call runs on the calling thread alone: starting a parallel
# region costs more than the work (a single step of a small layer in streaming inference).
MIN_PARALLEL_WORK = 1 << 15


def parallel(nchunks: int, work: int) -> bool:
    """Whether ``nchunks`` chunks of ``work`` neuron-steps in all run on Numba's thread pool."""
    return nchunks > 1 and work >= MIN_PARALLEL_WORK and numba.get_num_threads() > 1


def run(module: ModuleType, name: str, nchunks: int, work: int, *args: Any) -> None:
    """Kernel ``name`` of ``module`` over the chunks ``[0, nchunks)``, in parallel when it pays."""
    if parallel(nchunks, work):
        getattr(module, f"{name}_tasks")(nchunks, *args)
    else:
        getattr(module, name)(0, nchunks, *args)


__all__ = ["MIN_PARALLEL_WORK", "parallel", "run"]
