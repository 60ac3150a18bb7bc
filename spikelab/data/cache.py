"""Decoded-split cache: one contiguous memory-mapped event array per split, with an offsets index.

The first pass decodes every recording of a split and writes ``events.npy`` (all events,
back to back), ``offsets.npy`` (sample ``i`` is ``events[offsets[i]:offsets[i + 1]]``),
``labels.npy`` and ``meta.json``. Later passes open them with ``mmap_mode="r"``: a sample is
a slice of the map, no decoding and no copy. The map is opened lazily in each process, so
forked DataLoader workers each get their own. The cache is rebuilt when the fingerprint of
the sources (paths, sizes, modification times, the dataset's decoding parameters) or the
cache format changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from spikelab.data.events import EVENT_DTYPE

CACHE_FORMAT = 1


def default_cache_root() -> Path:
    return Path(os.environ.get("SPIKELAB_CACHE", Path.home() / ".cache" / "spikelab"))


def fingerprint(sources: Sequence[Path], params: dict) -> str:
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "params": params}, sort_keys=True).encode())
    for src in sources:
        st = Path(src).stat()
        h.update(f"{src}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class SplitCache:
    """The cached events of one split; ``get(i)`` returns a read-only slice of the map."""

    def __init__(self, folder: Path, key: str, count: int, load: Callable[[int], tuple[np.ndarray, int]],
                 progress: str = "decoding") -> None:
        self.folder = Path(folder)
        self._events: Optional[np.ndarray] = None
        self._pid: Optional[int] = None
        meta_path = self.folder / "meta.json"
        fresh = False
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                fresh = meta.get("key") == key and meta.get("format") == CACHE_FORMAT and meta.get("count") == count
            except (OSError, ValueError):
                fresh = False
        if not fresh:
            self._build(key, count, load, progress)
        self.offsets = np.load(self.folder / "offsets.npy")
        self.labels = np.load(self.folder / "labels.npy")

    def _build(self, key: str, count: int, load, progress: str) -> None:
        tmp = self.folder.with_name(self.folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        sizes, labels, chunks = [], [], []
        for i in tqdm(range(count), desc=progress, leave=False, disable=None):
            events, label = load(i)
            sizes.append(len(events))
            labels.append(label)
            chunks.append(np.asarray(events, dtype=EVENT_DTYPE))
        offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        out = np.lib.format.open_memmap(tmp / "events.npy", mode="w+", dtype=EVENT_DTYPE, shape=(int(offsets[-1]),))
        for start, chunk in zip(offsets[:-1], chunks):
            out[start:start + len(chunk)] = chunk
        out.flush()
        del out
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        (tmp / "meta.json").write_text(json.dumps({"key": key, "format": CACHE_FORMAT, "count": count}))
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(tmp, self.folder)

    @property
    def events(self) -> np.ndarray:
        if self._events is None or self._pid != os.getpid():
            # a plain ndarray view of the map: no copy, and Numba dispatches on it without the
            # memmap subclass's overhead (several times faster per sample)
            self._events = np.load(self.folder / "events.npy", mmap_mode="r").view(np.ndarray)
            self._pid = os.getpid()
        return self._events

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_events"] = None  # each worker process maps the file itself
        return state

    def get(self, index: int) -> tuple[np.ndarray, int]:
        return self.events[self.offsets[index]:self.offsets[index + 1]], int(self.labels[index])
