"""Decoded-split cache: one contiguous memory-mapped event array per split, with an offsets index.

**Layout.** The first pass decodes every recording of a split into the folder
``<cache_dir>/<name>-<split>-<key[:16]>``: ``events.npy`` (all events, back to back),
``offsets.npy`` (sample ``i`` is ``events[offsets[i]:offsets[i + 1]]``), ``labels.npy`` and
``meta.json``. Later passes open them with ``mmap_mode="r"``: a sample is a slice of the map,
no decoding and no copy. The map is opened lazily in each process, so forked DataLoader workers
each get their own. ``key`` fingerprints the sources (paths, sizes, modification times), the
dataset's decoding parameters and the cache format: when one changes, the cache is a new folder.

**Checked before use.** ``meta.json`` records the key, the format, the sample count and each
file's size, with the sha256 of ``offsets.npy`` and ``labels.npy``. ``events.npy`` can be
gigabytes, so it is not hashed: its size, its ``.npy`` header and the offsets' invariants
(int64, one more than the samples, starting at 0, never decreasing, ending at the number of
events) are checked instead. A missing, unreadable or mismatching file warns, naming the folder
and what was wrong, and the split is rebuilt.

**Atomic and safe with concurrent processes.** A build holds an exclusive lock on
``<folder>.lock`` (``fcntl.flock``; where ``fcntl`` or the file system refuses it, a file created
with ``O_EXCL`` that holds its owner's pid, taken over by one process once that process is gone:
see :class:`spikelab.data.locks.FileLock`) and checks the folder again under it: another
process (another DDP rank, say) may just have built it. The lock is the only
barrier; the data layer knows nothing of torch.distributed. Processes waiting on it log one
line, then find the cache fresh. A build writes ``<folder>.tmp<pid>``, ``meta.json`` last
(itself written to a temporary name and renamed), then renames the folder in. A valid folder is
never touched; a damaged one is first renamed aside to ``<folder>.stale<pid>``, so readers that
already opened its files keep them, and removed once the new one is in place. The holder of a
lock removes its file on release (one killed while holding it leaves an empty file, reused).

**Cleanup.** Holding the lock, a build (or an open, when the lock is free) also removes the
``.tmp<pid>`` / ``.stale<pid>`` folders of the same dataset and split that dead processes left,
and superseded folders: siblings whose ``meta.json`` names the same dataset, split, root and
parameters under another key, and folders written by cache format 1 under the same name.
Nothing else is removed: not a folder of such a name without such a ``meta.json``, nor a link
(or what it points to). An open cache holds a shared lock on its ``meta.json``; a sibling is
removed only when its build lock and an exclusive lock on its ``meta.json`` can both be taken
without waiting, so a folder still read by another process (a training run on the old sources)
stays until a later open finds it unused. Cleanup is best effort: what it cannot lock or move
(a read-only folder, another user's) it leaves.

**Read-only use.** Opening an intact cache needs no write access: it reads the files and takes
a shared lock on ``meta.json`` (where the system allows it); its cleanup, which writes, is
skipped when the lock file cannot be created. So a cache built once can be read from a
read-only folder or another user's; only a missing or damaged one must be written, and then
the error names the file that could not be created.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from spikelab.data.events import EVENT_DTYPE
from spikelab.data.locks import FileLock, fcntl, pid_alive

CACHE_FORMAT = 2
FILES = ("events.npy", "offsets.npy", "labels.npy")
HASHED = ("offsets.npy", "labels.npy")  # small enough to hash at every open


class CacheError(OSError):
    """A cache folder changed under an open dataset; the message names the file."""


class _Damaged(Exception):
    """A cache folder is there but unusable; the message says why."""


def default_cache_root() -> Path:
    """``$SPIKELAB_CACHE``, else ``~/.cache/spikelab``."""
    return Path(os.environ.get("SPIKELAB_CACHE", Path.home() / ".cache" / "spikelab"))


def fingerprint(sources: Sequence[Path], params: dict) -> str:
    """sha256 of the cache format, ``params`` and each source's path, size and mtime."""
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "params": params}, sort_keys=True).encode())
    for src in sources:
        st = Path(src).stat()
        h.update(f"{src}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _take_unused(path: Path) -> Optional[int]:
    """An exclusive ``flock`` on ``path`` when no open cache holds its shared one (the "in use"
    mark kept on ``meta.json``), as a descriptor to close after use; None when in use.
    Without fcntl nothing marks use: -1."""
    if fcntl is None:
        return -1
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone, or not ours to read: keep it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # in use, or no flock on this file system: keep it
        os.close(fd)
        return None
    return fd


# ----- files ------------------------------------------------------------------------------------------

def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries, where the system allows it) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _is_folder(path: Path) -> bool:
    """A folder itself, not a link to one (cleanup never removes what a link points to, nor the link)."""
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def _events_length(path: Path, size: int) -> int:
    """The number of events ``events.npy`` holds, from its header; raises _Damaged."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy version {version}")
            start = f.tell()
    except (OSError, ValueError, EOFError) as e:
        raise _Damaged(f"events.npy has an unreadable header ({e})") from None
    if dtype != EVENT_DTYPE or len(shape) != 1:
        raise _Damaged(f"events.npy holds {dtype} of shape {shape}, expected a 1-D array of {EVENT_DTYPE}")
    need = start + shape[0] * dtype.itemsize
    if size != need:
        raise _Damaged(f"events.npy is {size} bytes, its header needs {need}")
    return int(shape[0])


def _check_arrays(offsets: np.ndarray, labels: np.ndarray, count: int, n_events: int) -> None:
    if offsets.dtype != np.int64 or offsets.shape != (count + 1,):
        raise _Damaged(f"offsets.npy holds {offsets.dtype} of shape {offsets.shape}, expected int64 of "
                       f"shape ({count + 1},)")
    if offsets[0] != 0:
        raise _Damaged(f"offsets.npy starts at {offsets[0]}, expected 0")
    down = np.flatnonzero(np.diff(offsets) < 0)
    if down.size:
        raise _Damaged(f"offsets.npy decreases at sample {down[0]}")
    if offsets[-1] != n_events:
        raise _Damaged(f"offsets.npy ends at {offsets[-1]}, events.npy holds {n_events} events")
    if labels.dtype != np.int64 or labels.shape != (count,):
        raise _Damaged(f"labels.npy holds {labels.dtype} of shape {labels.shape}, expected int64 of shape ({count},)")


def _read_meta(meta_file) -> dict:
    try:
        meta = json.loads(meta_file.read())
    except (OSError, ValueError) as e:
        raise _Damaged(f"meta.json is unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise _Damaged("meta.json is unreadable (not a JSON object)")
    return meta


def _check_folder(folder: Path, meta: dict, key: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, labels) of an intact cache for ``key``, or _Damaged saying what is wrong."""
    if meta.get("format") != CACHE_FORMAT:
        raise _Damaged(f"meta.json is of cache format {meta.get('format')!r}, expected {CACHE_FORMAT}")
    if meta.get("key") != key:
        raise _Damaged("meta.json is for other sources (another key)")
    if meta.get("count") != count:
        raise _Damaged(f"meta.json lists {meta.get('count')!r} samples, the dataset has {count}")
    files = meta.get("files")
    arrays, sizes = {}, {}
    for name in FILES:
        entry = files.get(name) if isinstance(files, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            raise _Damaged(f"meta.json gives no size for {name}")
        try:
            sizes[name] = (folder / name).stat().st_size
        except FileNotFoundError:
            raise _Damaged(f"{name} is missing") from None
        except OSError as e:
            raise _Damaged(f"{name} is unreadable ({e})") from None
        if sizes[name] != entry["size"]:
            raise _Damaged(f"{name} is {sizes[name]} bytes, meta.json says {entry['size']}")
        if name in HASHED:
            try:
                data = (folder / name).read_bytes()
            except OSError as e:  # e.g. renamed aside by a process replacing a damaged folder
                raise _Damaged(f"{name} is unreadable ({e})") from None
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                raise _Damaged(f"{name} does not match its sha256 in meta.json")
            try:
                arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise _Damaged(f"{name} is unreadable ({e})") from None
    n_events = _events_length(folder / "events.npy", sizes["events.npy"])
    _check_arrays(arrays["offsets.npy"], arrays["labels.npy"], count, n_events)
    return arrays["offsets.npy"], arrays["labels.npy"]


# ----- the cache -------------------------------------------------------------------------------------

class SplitCache:
    """The cached events of one split; ``get(i)`` returns a read-only slice of the map.

    ``identity`` (dataset, split, root, parameters) is written to ``meta.json``; a sibling folder
    ``<name>-<split>-<other key>`` with the same identity is superseded and removed by a build.
    """

    def __init__(self, folder: Path, key: str, count: int, load: Callable[[int], tuple[np.ndarray, int]],
                 progress: str = "decoding", identity: Optional[dict] = None) -> None:
        self.folder = Path(folder)
        self.key = key
        self.identity = json.loads(json.dumps(identity)) if identity is not None else None
        self._events: Optional[np.ndarray] = None
        self._pid: Optional[int] = None
        self._hold = None  # meta.json, opened with a shared lock while this cache is in use
        try:
            got = self._open(count)
        except _Damaged:
            got = None  # decided under the lock: another process may be replacing it right now
        if got is not None:
            self._tidy()
        else:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(_lock_path(self.folder), what=f"spikelab cache {self.folder}"):
                try:
                    got = self._open(count)
                except _Damaged as e:
                    warnings.warn(f"spikelab cache {self.folder}: {e}; rebuilding", stacklevel=3)
                if got is None:
                    self._remove_orphans()
                    self._build(count, load, progress)
                    try:
                        got = self._open(count)
                    except _Damaged as e:
                        raise CacheError(f"spikelab cache {self.folder}: {e} right after it was written") from None
                    self._remove_superseded()
        self.offsets, self.labels = got

    # ----- opening and checking ------------------------------------------------------------------
    def _open(self, count: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(offsets, labels) when the folder holds an intact cache; None when it is absent;
        raises _Damaged when it is there but unusable. Keeps meta.json open, share-locked."""
        if not self.folder.is_dir():
            return None
        try:
            hold = open(self.folder / "meta.json", "rb")
        except FileNotFoundError:
            if not self.folder.is_dir():
                return None
            raise _Damaged("meta.json is missing") from None
        except OSError as e:
            raise _Damaged(f"meta.json is unreadable ({e})") from None
        try:
            if fcntl is not None:  # waits while a cleanup removes the folder, then finds it gone
                try:
                    fcntl.flock(hold.fileno(), fcntl.LOCK_SH)
                except OSError:  # no flock here: nothing marks use, and a cleanup keeps the folder
                    pass
            got = _check_folder(self.folder, _read_meta(hold), self.key, count)
        except BaseException:
            hold.close()
            raise
        if fcntl is None:  # nothing to mark with; an open file would only block renames on Windows
            hold.close()
            hold = None
        if self._hold is not None:
            self._hold.close()
        self._hold = hold
        return got

    # ----- building ------------------------------------------------------------------------------------
    def _build(self, count: int, load, progress: str) -> None:
        tmp = self.folder.with_name(f"{self.folder.name}.tmp{os.getpid()}")
        _remove(tmp)
        tmp.mkdir(parents=True)
        try:
            sizes, labels, chunks = [], [], []
            for i in tqdm(range(count), desc=progress, leave=False, disable=None):
                events, label = load(i)
                sizes.append(len(events))
                labels.append(label)
                chunks.append(np.asarray(events, dtype=EVENT_DTYPE))
            offsets = np.zeros(count + 1, dtype=np.int64)
            np.cumsum(np.asarray(sizes, dtype=np.int64), out=offsets[1:])
            total = int(offsets[-1])
            if total:
                out = np.lib.format.open_memmap(tmp / "events.npy", mode="w+", dtype=EVENT_DTYPE, shape=(total,))
                for start, chunk in zip(offsets[:-1], chunks):
                    out[start:start + len(chunk)] = chunk
                out.flush()
                del out
                _fsync_path(tmp / "events.npy")
            else:
                _write_bytes(tmp / "events.npy", _npy_bytes(np.empty(0, dtype=EVENT_DTYPE)))
            del chunks
            files = {"events.npy": {"size": (tmp / "events.npy").stat().st_size}}
            for name, array in (("offsets.npy", offsets), ("labels.npy", np.asarray(labels, dtype=np.int64))):
                data = _npy_bytes(array)
                _write_bytes(tmp / name, data)
                files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            meta = {"format": CACHE_FORMAT, "key": self.key, "count": count, "events": total,
                    "identity": self.identity, "files": files}
            part = tmp / f"meta.json.tmp{os.getpid()}"
            _write_bytes(part, json.dumps(meta, indent=1).encode())
            os.replace(part, tmp / "meta.json")
            _fsync_path(tmp)
            self._swap_in(tmp)
        except BaseException:
            _remove(tmp)
            raise

    def _swap_in(self, tmp: Path) -> None:
        """Rename ``tmp`` to the folder; a damaged folder there is renamed aside first, then removed."""
        aside = None
        if os.path.lexists(self.folder):
            aside = self.folder.with_name(f"{self.folder.name}.stale{os.getpid()}")
            _remove(aside)
            os.replace(self.folder, aside)
        os.replace(tmp, self.folder)
        _fsync_path(self.folder.parent)
        if aside is not None:
            _remove(aside)

    # ----- cleanup (holding this folder's lock) ------------------------------------------------------
    def _prefix(self) -> Optional[str]:
        """``<name>-<split>`` when the folder is named ``<name>-<split>-<key[:16]>``."""
        suffix = "-" + self.key[:16]
        name = self.folder.name
        return name[:-len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else None

    def _tidy(self) -> None:
        """On an open that needed no build, the same cleanup, when something may need it and this
        folder's lock is free (a superseded folder that was in use at the build goes now).
        Best effort: where the lock cannot even be created (a read-only folder, another user's),
        the open goes on without it."""
        prefix = self._prefix()
        if prefix is None or not any(p.name.startswith(prefix + "-") and p != self.folder
                                     and not p.name.endswith(".lock") for p in self._siblings()):
            return
        lock = FileLock(_lock_path(self.folder))
        try:
            if not lock.acquire(blocking=False):
                return
        except OSError:  # a folder this process cannot write to: opening needs no lock, skip the cleanup
            return
        try:
            self._remove_orphans()
            self._remove_superseded()
        finally:
            lock.release()

    def _remove_orphans(self) -> None:
        """Remove ``.tmp<pid>`` / ``.stale<pid>`` folders of this dataset and split whose process is gone."""
        prefix = self._prefix()
        owner_pattern = re.escape(prefix) + r"-[0-9a-f]{16}" if prefix else re.escape(self.folder.name)
        pattern = re.compile(rf"({owner_pattern})\.(?:tmp|stale)(\d+)")
        for path in self._siblings():
            m = pattern.fullmatch(path.name)
            if not m or not _is_folder(path):
                continue
            pid = int(m.group(2))
            if pid == os.getpid() or pid_alive(pid):
                continue
            owner = path.with_name(m.group(1))
            if owner == self.folder:
                _remove(path)
                continue
            lock = FileLock(_lock_path(owner))
            try:
                if not lock.acquire(blocking=False):
                    continue
            except OSError:  # best effort, as all cleanup
                continue
            try:
                _remove(path)
            finally:
                lock.release()

    def _remove_superseded(self) -> None:
        """Remove ``<name>-<split>-<other key>`` folders of the same identity that nobody uses."""
        prefix = self._prefix()
        if prefix is None or self.identity is None:
            return
        pattern = re.compile(re.escape(prefix) + r"-([0-9a-f]{16})")
        for path in self._siblings():
            m = pattern.fullmatch(path.name)
            if not m or path == self.folder or not _is_folder(path) or not self._superseded(path, m.group(1)):
                continue
            lock = FileLock(_lock_path(path))
            try:
                if not lock.acquire(blocking=False):
                    continue  # being built or checked
            except OSError:  # best effort, as all cleanup
                continue
            try:
                self._remove_unused(path, m.group(1))
            finally:
                lock.release()

    def _remove_unused(self, path: Path, suffix: str) -> None:
        """Remove the superseded folder ``path`` (its lock held) unless a process has it open."""
        if not _is_folder(path) or not self._superseded(path, suffix):
            return
        unused = _take_unused(path / "meta.json")
        if unused is None:
            return
        try:  # readers that come now wait on meta.json, then find the folder gone
            aside = path.with_name(f"{path.name}.stale{os.getpid()}")
            os.replace(path, aside)
        except OSError:  # e.g. files open on Windows, or not ours to move
            return
        finally:
            if unused >= 0:
                os.close(unused)
        _remove(aside)

    def _superseded(self, path: Path, suffix: str) -> bool:
        """Whether ``path`` holds a spikelab cache of this dataset and split under another key."""
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(meta, dict) or not isinstance(meta.get("key"), str):
            return False
        key = meta["key"]
        if not re.fullmatch(r"[0-9a-f]{64}", key) or key[:16] != suffix or key == self.key:
            return False
        if meta.get("format") == CACHE_FORMAT:
            return meta.get("identity") == self.identity
        # format 1 kept no identity: its folder name and meta.json's exact fields stand for it
        return meta.get("format") == 1 and set(meta) == {"key", "format", "count"}

    def _siblings(self) -> list[Path]:
        try:
            return list(self.folder.parent.iterdir())
        except OSError:
            return []

    # ----- reading ----------------------------------------------------------------------------------------
    @property
    def events(self) -> np.ndarray:
        if self._events is None or self._pid != os.getpid():
            path = self.folder / "events.npy"
            n = int(self.offsets[-1])
            if n == 0:
                events = np.empty(0, dtype=EVENT_DTYPE)
            else:
                try:
                    events = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as e:
                    raise CacheError(f"{path}: cannot map it ({e}); it changed after it was checked: "
                                     "open the dataset again to rebuild the cache") from None
                if events.dtype != EVENT_DTYPE or events.shape != (n,):
                    raise CacheError(f"{path}: holds {events.dtype} of shape {events.shape}, expected {n} "
                                     "events; it changed after it was checked: open the dataset again to "
                                     "rebuild the cache")
            # a plain ndarray view of the map: no copy, and Numba dispatches on it without the
            # memmap subclass's overhead (several times faster per sample)
            self._events = events.view(np.ndarray)
            self._pid = os.getpid()
        return self._events

    def close(self) -> None:
        """Drop the map and the "in use" mark (a later ``get`` maps the file again)."""
        self._events = None
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def __del__(self) -> None:
        if getattr(self, "_hold", None) is not None:
            self._hold.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_events"] = None  # each worker process maps the file itself
        state["_hold"] = None  # the parent's shared lock marks the folder in use
        return state

    def get(self, index: int) -> tuple[np.ndarray, int]:
        return self.events[self.offsets[index]:self.offsets[index + 1]], int(self.labels[index])


__all__ = ["CacheError", "default_cache_root", "fingerprint", "SplitCache"]
