"""Common machinery of the event datasets: an index of samples, optional cache, transforms."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from spikelab.data.cache import SplitCache, default_cache_root, fingerprint


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder is missing or incomplete; the message says what and where to get it."""


class EventDataset:
    """``dataset[i]`` -> ``(events or transform(events), label)``.

    Subclasses fill ``self.samples`` (one entry per sample), ``self.sources`` (the files the
    samples come from) and implement ``_load(i) -> (events, label)``. With ``cache=True`` the
    split is decoded once into a memory-mapped array (see :mod:`spikelab.data.cache`).
    """

    sensor_size: tuple = ()
    classes: Sequence[str] = ()
    name: str = "events"
    source_hint: str = ""

    def __init__(self, root, split: str, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, cache: bool = False,
                 cache_dir=None) -> None:
        self.root = Path(root).expanduser()
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.samples: list = []
        self.sources: list[Path] = []
        self._index()
        self._cache: Optional[SplitCache] = None
        if cache:
            params = self._cache_params()
            key = fingerprint(self.sources, {"dataset": self.name, "split": split, **params})
            folder = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
            # a cache of the same identity under another key is superseded (its sources changed)
            identity = {"dataset": self.name, "split": split, "root": str(self.root.resolve()), "params": params}
            self._cache = SplitCache(folder / f"{self.name}-{split}-{key[:16]}", key, len(self.samples), self._load,
                                     progress=f"{self.name} {split}: decoding into the cache", identity=identity)

    # ----- subclass hooks ------------------------------------------------------------------
    def _index(self) -> None:
        raise NotImplementedError

    def _load(self, index: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _cache_params(self) -> dict:
        return {}

    # ----- helpers -------------------------------------------------------------------------------
    def _missing(self, what: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{self.name} ({self.split}): {what} under {self.root}. spikelab never downloads data: "
            f"{self.source_hint} See datasets/{self.name.lower()}.md for the expected layout.")

    # ----- public API ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def events(self, index: int) -> tuple[np.ndarray, int]:
        """The raw events and label of sample ``index`` (no transform)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: sample {index} out of range ({len(self)} samples)")
        index %= len(self)
        return self._cache.get(index) if self._cache is not None else self._load(index)

    def __getitem__(self, index: int):
        events, label = self.events(index)
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return events, label

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}, "
                f"sensor_size={self.sensor_size}, cached={self._cache is not None})")


__all__ = ["DatasetNotFoundError", "EventDataset"]
