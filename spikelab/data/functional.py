"""Pure functions on event arrays; the transforms in ``transforms.py`` are thin dataclasses over them.

Slicing follows Tonic's definitions exactly (so ``to_frame`` gives Tonic's frames); the
accumulation and filtering loops run in Numba (``kernels/numba/transforms.py``).
"""

from __future__ import annotations

import multiprocessing
from typing import Optional, Sequence

import numpy as np

from spikelab.data.events import EVENT_DTYPE


def _kernels():
    from spikelab.kernels.numba import transforms

    return transforms


def _check(events: np.ndarray, name: str = "events") -> np.ndarray:
    if not isinstance(events, np.ndarray) or events.dtype.names is None or not {"x", "t", "p"} <= set(
            events.dtype.names):
        raise TypeError(f"{name}: expected a structured array with fields x, y, t, p (spikelab/Tonic layout)")
    return events


def slice_bounds(events: np.ndarray, time_window=None, event_count=None, n_time_bins=None, n_event_bins=None,
                 overlap: float = 0, include_incomplete: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) event indices of every slice, as Tonic's slicers define them."""
    given = [v is not None for v in (time_window, event_count, n_time_bins, n_event_bins)]
    if sum(given) != 1:
        raise ValueError("give exactly one of time_window, event_count, n_time_bins, n_event_bins")
    t = events["t"]
    n = len(events)
    if time_window is not None:
        stride = time_window - overlap
        if stride <= 0:
            raise ValueError(f"overlap ({overlap}) must be smaller than time_window ({time_window})")
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        duration = t[-1] - t[0]
        rounding = np.ceil if include_incomplete else np.floor
        count = max(int(rounding((duration - time_window) / stride) + 1), 1)
        start_times = np.arange(count) * stride + t[0]
        return np.searchsorted(t, start_times), np.searchsorted(t, start_times + time_window)
    if event_count is not None:
        stride = event_count - overlap
        if stride <= 0:
            raise ValueError(f"overlap ({overlap}) must be smaller than event_count ({event_count})")
        size = min(event_count, n)
        rounding = np.ceil if include_incomplete else np.floor
        count = int(rounding((n - size) / stride) + 1)
        starts = (np.arange(count) * stride).astype(np.int64)
        return starts, np.minimum(starts + size, n)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: expected a fraction in [0, 1) for bin slicing, got {overlap}")
    if n_time_bins is not None:
        if n == 0:
            return np.zeros(n_time_bins, np.int64), np.zeros(n_time_bins, np.int64)
        window = (t[-1] - t[0]) // n_time_bins * (1 + overlap)
        start_times = np.arange(n_time_bins) * (window * (1 - overlap)) + t[0]
        return np.searchsorted(t, start_times), np.searchsorted(t, start_times + window)
    size = int(n // n_event_bins * (1 + overlap))
    starts = np.arange(n_event_bins) * int(size * (1 - overlap))
    return starts.astype(np.int64), np.minimum(starts + size, n).astype(np.int64)


def to_frame(events: np.ndarray, sensor_size: Sequence[int], time_window=None, event_count=None,
             n_time_bins=None, n_event_bins=None, overlap: float = 0, include_incomplete: bool = False,
             dtype=np.int16) -> np.ndarray:
    """Event counts per pixel and polarity in each slice: ``[T, P, H, W]`` (Tonic's layout)."""
    _check(events)
    width, height, polarities = (int(v) for v in sensor_size)
    starts, ends = slice_bounds(events, time_window, event_count, n_time_bins, n_event_bins, overlap,
                                include_incomplete)
    frames = np.zeros((len(starts), polarities, height, width), dtype=dtype)
    if len(events):
        # the fields go in as strided views of the structured array: no conversion copies
        p = events["p"] if polarities > 1 else np.zeros(1, np.int8)
        y = events["y"] if "y" in events.dtype.names else np.zeros(1, np.int16)
        kernels = _kernels()
        # threads only in the main process: a forked DataLoader worker must stay off OpenMP
        accumulate = (kernels.accumulate_frames_parallel if len(starts) > 1 and len(events) > 100_000
                      and multiprocessing.parent_process() is None else kernels.accumulate_frames)
        accumulate(events["x"], y, p, polarities > 1, "y" in events.dtype.names, starts.astype(np.int64),
                   ends.astype(np.int64), frames)
    return frames


def denoise(events: np.ndarray, filter_time: int, sensor_size: Optional[Sequence[int]] = None) -> np.ndarray:
    """Drop events none of whose 4 neighbours fired within ``filter_time`` us before them.

    (Tonic's Denoise starts every pixel as if it had fired at time 0, so it keeps every event
    of the first ``filter_time``; here pixels start silent. Later events agree.)
    """
    _check(events)
    if len(events) == 0:
        return events.copy()
    width = int(sensor_size[0]) if sensor_size else int(events["x"].max()) + 1
    height = int(sensor_size[1]) if sensor_size else int(events["y"].max()) + 1
    keep = _kernels().denoise_mask(events["x"], events["y"], events["t"], int(filter_time), width, height)
    return select(events, keep)


def select(events: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``events[keep]`` for a boolean mask (``np.compress``: several times faster than boolean
    indexing of a structured array)."""
    return np.compress(keep, events)


def to_voxel_grid(events: np.ndarray, sensor_size: Sequence[int], n_time_bins: int) -> np.ndarray:
    """``[n_time_bins, H, W]`` float32 grid, each event's +1/-1 shared between its two nearest bins."""
    _check(events)
    width, height = int(sensor_size[0]), int(sensor_size[1])
    grid = np.zeros((n_time_bins, height, width), np.float32)
    if len(events):
        _kernels().voxel_grid(events["x"].astype(np.int64), events["y"].astype(np.int64),
                              events["t"].astype(np.int64), events["p"].astype(np.bool_), n_time_bins, width,
                              height, grid)
    return grid


def to_time_surface(events: np.ndarray, sensor_size: Sequence[int], tau: float, n_time_bins: int) -> np.ndarray:
    """``[n_time_bins, P, H, W]`` float32 exponential time surfaces sampled at the end of each of
    ``n_time_bins`` equal spans of the recording: ``exp(-(t_sample - t_last) / tau)`` per pixel
    and polarity, 0 where it has not fired yet."""
    _check(events)
    if tau <= 0 or n_time_bins < 1:
        raise ValueError(f"tau must be > 0 and n_time_bins >= 1, got {tau}, {n_time_bins}")
    width, height, polarities = (int(v) for v in sensor_size)
    out = np.zeros((n_time_bins, polarities, height, width), np.float32)
    if len(events):
        t0, t1 = int(events["t"][0]), int(events["t"][-1])
        samples = t0 + (np.arange(1, n_time_bins + 1) * (t1 - t0)) // n_time_bins
        _kernels().time_surfaces(events["x"], events["y"], events["t"], events["p"], polarities > 1,
                                 samples.astype(np.int64), float(tau), out)
    return out


def downsample(events: np.ndarray, spatial_factor: float = 1.0, time_factor: float = 1.0) -> np.ndarray:
    """Scale coordinates (floored) and timestamps."""
    out = _check(events).copy()
    out["x"] = np.floor(events["x"] * spatial_factor)
    out["y"] = np.floor(events["y"] * spatial_factor)
    out["t"] = np.floor(events["t"] * time_factor)
    return out


def crop(events: np.ndarray, sensor_size, target_size, offset: Optional[Sequence[int]] = None) -> np.ndarray:
    """Keep a ``target_size`` (W, H) window (centred unless ``offset`` = (x0, y0)) and shift it to 0."""
    _check(events)
    tw, th = int(target_size[0]), int(target_size[1])
    x0, y0 = offset if offset is not None else ((int(sensor_size[0]) - tw) // 2, (int(sensor_size[1]) - th) // 2)
    inside = (events["x"] >= x0) & (events["x"] < x0 + tw) & (events["y"] >= y0) & (events["y"] < y0 + th)
    out = events[inside].copy()
    out["x"] -= x0
    out["y"] -= y0
    return out


def flip_lr(events: np.ndarray, sensor_size) -> np.ndarray:
    out = _check(events).copy()
    out["x"] = int(sensor_size[0]) - 1 - events["x"]
    return out


def flip_ud(events: np.ndarray, sensor_size) -> np.ndarray:
    out = _check(events).copy()
    out["y"] = int(sensor_size[1]) - 1 - events["y"]
    return out


def merge_polarities(events: np.ndarray) -> np.ndarray:
    out = _check(events).copy()
    out["p"] = 0
    return out


def drop_events(events: np.ndarray, drop_probability: float, rng: np.random.Generator) -> np.ndarray:
    return select(_check(events), rng.random(len(events)) >= drop_probability)


def jitter_time(events: np.ndarray, std: float, rng: np.random.Generator, clip_negative: bool = True,
                sort: bool = True) -> np.ndarray:
    out = _check(events).copy()
    out["t"] = events["t"] + np.round(rng.normal(0.0, std, len(events))).astype(np.int64)
    if clip_negative:
        out = out[out["t"] >= 0]
    return out[np.argsort(out["t"], kind="stable")] if sort else out


def as_events(array: np.ndarray) -> np.ndarray:
    """Any structured array with x, y, t, p fields (Tonic's included) in spikelab's dtype."""
    _check(array)
    out = np.empty(len(array), EVENT_DTYPE)
    for name in ("x", "y", "t", "p"):
        out[name] = array[name] if name in array.dtype.names else 0
    return out


__all__ = ["slice_bounds", "to_frame", "denoise", "select", "to_voxel_grid", "to_time_surface", "downsample",
           "crop", "flip_lr", "flip_ud", "merge_polarities", "drop_events", "jitter_time", "as_events"]
