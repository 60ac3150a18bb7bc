"""Event transforms: small dataclasses over the pure functions of ``functional.py``.

They take and return NumPy structured event arrays (``x, y, t, p``), the layout Tonic uses,
so Tonic's transforms and these can be mixed in one pipeline (``tonic.transforms.Compose``
or :class:`Compose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from spikelab.data import functional as F


@dataclass
class Compose:
    transforms: Sequence[Callable]

    def __call__(self, events):
        for transform in self.transforms:
            events = transform(events)
        return events


@dataclass(frozen=True)
class ToFrame:
    """Event counts ``[T, P, H, W]`` per slice: give one of ``time_window`` (us),
    ``event_count``, ``n_time_bins`` or ``n_event_bins`` (slices as in Tonic)."""

    sensor_size: tuple
    time_window: Optional[float] = None
    event_count: Optional[int] = None
    n_time_bins: Optional[int] = None
    n_event_bins: Optional[int] = None
    overlap: float = 0
    include_incomplete: bool = False
    dtype: type = np.int16

    def __call__(self, events):
        return F.to_frame(events, self.sensor_size, self.time_window, self.event_count, self.n_time_bins,
                          self.n_event_bins, self.overlap, self.include_incomplete, self.dtype)


@dataclass(frozen=True)
class ToVoxelGrid:
    sensor_size: tuple
    n_time_bins: int

    def __call__(self, events):
        return F.to_voxel_grid(events, self.sensor_size, self.n_time_bins)


@dataclass(frozen=True)
class ToTimeSurface:
    """Exponential time surfaces ``[n_time_bins, P, H, W]`` with decay ``tau`` (us)."""

    sensor_size: tuple
    tau: float = 5000.0
    n_time_bins: int = 1

    def __call__(self, events):
        return F.to_time_surface(events, self.sensor_size, self.tau, self.n_time_bins)


@dataclass(frozen=True)
class Denoise:
    """Drop events with no 4-neighbour activity in the preceding ``filter_time`` us."""

    filter_time: int = 10_000
    sensor_size: Optional[tuple] = None

    def __call__(self, events):
        return F.denoise(events, self.filter_time, self.sensor_size)


@dataclass(frozen=True)
class Downsample:
    spatial_factor: float = 1.0
    time_factor: float = 1.0

    def __call__(self, events):
        return F.downsample(events, self.spatial_factor, self.time_factor)


@dataclass(frozen=True)
class CenterCrop:
    sensor_size: tuple
    size: tuple

    def __call__(self, events):
        return F.crop(events, self.sensor_size, self.size)


@dataclass
class RandomCrop:
    sensor_size: tuple
    size: tuple
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __call__(self, events):
        x0 = int(self.rng.integers(0, int(self.sensor_size[0]) - int(self.size[0]) + 1))
        y0 = int(self.rng.integers(0, int(self.sensor_size[1]) - int(self.size[1]) + 1))
        return F.crop(events, self.sensor_size, self.size, (x0, y0))


@dataclass
class RandomFlipLR:
    sensor_size: tuple
    p: float = 0.5
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __call__(self, events):
        return F.flip_lr(events, self.sensor_size) if self.rng.random() < self.p else events


@dataclass
class RandomFlipUD:
    sensor_size: tuple
    p: float = 0.5
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __call__(self, events):
        return F.flip_ud(events, self.sensor_size) if self.rng.random() < self.p else events


@dataclass(frozen=True)
class MergePolarities:
    def __call__(self, events):
        return F.merge_polarities(events)


@dataclass
class DropEvent:
    p: float = 0.1
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __call__(self, events):
        return F.drop_events(events, self.p, self.rng)


@dataclass
class TimeJitter:
    std: float = 1.0
    clip_negative: bool = True
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __call__(self, events):
        return F.jitter_time(events, self.std, self.rng, self.clip_negative)


__all__ = ["Compose", "ToFrame", "ToVoxelGrid", "ToTimeSurface", "Denoise", "Downsample", "CenterCrop", "RandomCrop",
           "RandomFlipLR", "RandomFlipUD", "MergePolarities", "DropEvent", "TimeJitter"]
