"""Hot loops of the event transforms (frames, voxel grids, denoising), compiled with Numba.

Transforms run in DataLoader worker processes, which Linux forks from the training process,
and a forked child may not use the OpenMP thread pool that the parallel neuron kernels
started in its parent (Numba's OpenMP layer terminates it). So the kernels are serial, and
the one that gains from threads (frame accumulation) has a parallel twin that the caller
uses only outside worker processes.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(inline="always", cache=True)
def _accumulate_one(x, y, p, with_p, with_y, start, end, frame):
    for k in range(start, end):
        pk = np.int64(p[k]) if with_p else 0
        yk = np.int64(y[k]) if with_y else 0
        frame[pk, yk, np.int64(x[k])] += 1


@nb.njit(cache=True, nogil=True)
def accumulate_frames(x, y, p, with_p, with_y, starts, ends, frames):
    """``frames[i, p, y, x] += 1`` for the events ``starts[i]:ends[i]`` of every frame ``i``
    (polarity 0 unless ``with_p``, row 0 unless ``with_y``)."""
    for i in range(starts.shape[0]):
        _accumulate_one(x, y, p, with_p, with_y, starts[i], ends[i], frames[i])


@nb.njit(parallel=True, cache=True, nogil=True)
def accumulate_frames_parallel(x, y, p, with_p, with_y, starts, ends, frames):
    """:func:`accumulate_frames` with frames in parallel (not for forked worker processes)."""
    for i in nb.prange(starts.shape[0]):
        _accumulate_one(x, y, p, with_p, with_y, starts[i], ends[i], frames[i])


@nb.njit(cache=True, nogil=True)
def denoise_mask(x, y, t, filter_time, width, height):
    """Keep an event when one of its 4 neighbours fired within ``filter_time`` before it."""
    last = np.full((width + 2, height + 2), np.iinfo(np.int64).min // 2, dtype=np.int64)
    keep = np.zeros(x.shape[0], dtype=np.bool_)
    for k in range(x.shape[0]):
        cx = np.int64(x[k]) + 1
        cy = np.int64(y[k]) + 1
        tk = np.int64(t[k])
        last[cx, cy] = tk
        horizon = tk - filter_time
        newest = max(max(last[cx - 1, cy], last[cx + 1, cy]), max(last[cx, cy - 1], last[cx, cy + 1]))
        keep[k] = newest > horizon
    return keep


@nb.njit(cache=True, nogil=True)
def voxel_grid(x, y, t, p, bins, width, height, grid):
    """Bilinear-in-time voxel grid (Zhu et al. 2019): each event splits its polarity (+1/-1)
    between the two nearest of ``bins`` time bins spanning the recording."""
    n = x.shape[0]
    if n == 0:
        return
    t0 = t[0]
    span = t[n - 1] - t0
    scale = (bins - 1) / span if span > 0 else 0.0
    for k in range(n):
        tn = (t[k] - t0) * scale
        left = int(tn)
        frac = tn - left
        value = 1.0 if p[k] else -1.0
        grid[left, y[k], x[k]] += value * (1.0 - frac)
        if left + 1 < bins:
            grid[left + 1, y[k], x[k]] += value * frac



@nb.njit(cache=True, nogil=True)
def time_surfaces(x, y, t, p, with_p, sample_times, tau, surfaces):
    """``surfaces[i, p, y, x] = exp(-(sample_times[i] - last event time at (p, y, x)) / tau)``
    over the events up to (and including) each sample time; 0 where a pixel never fired."""
    polarities, height, width = surfaces.shape[1], surfaces.shape[2], surfaces.shape[3]
    last = np.full((polarities, height, width), -1, dtype=np.int64)
    seen = np.zeros((polarities, height, width), dtype=np.bool_)
    k = 0
    n = x.shape[0]
    for i in range(sample_times.shape[0]):
        ts = sample_times[i]
        while k < n and t[k] <= ts:
            pk = np.int64(p[k]) if with_p else 0
            last[pk, np.int64(y[k]), np.int64(x[k])] = t[k]
            seen[pk, np.int64(y[k]), np.int64(x[k])] = True
            k += 1
        for a in range(polarities):
            for b in range(height):
                for c in range(width):
                    if seen[a, b, c]:
                        surfaces[i, a, b, c] = np.exp(-(ts - last[a, b, c]) / tau)


__all__ = ["accumulate_frames", "accumulate_frames_parallel", "denoise_mask", "voxel_grid", "time_surfaces"]
