"""The decoded-split cache under stress: concurrent builders, killed builds, damaged files,
superseded folders, no write access; the lock file fallback under contention; and DVS Gesture's
stray recordings.

The cache tests use a tiny synthetic dataset (random events from a seed file) and
``cache_dir=tmp_path``; the process tests fork, so they run where ``fork`` exists.
"""

from __future__ import annotations

import builtins
import errno
import gc
import hashlib
import io
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import time
import traceback
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from spikelab.data import cache as cache_module
from spikelab.data import locks
from spikelab.data.datasets.base import EventDataset
from spikelab.data.events import make_events

needs_fork = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
CACHE_NAME = re.compile(r"Synthetic-train-[0-9a-f]{16}")


def _sample(seed: int, index: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([seed, index])
    n = int(rng.integers(0, 300))
    events = make_events(rng.integers(0, 16, n), rng.integers(0, 16, n), np.sort(rng.integers(0, 10**5, n)),
                         rng.integers(0, 2, n))
    return events, int(rng.integers(0, 5))


class Synthetic(EventDataset):
    """40 samples of random events; ``root/<split>.seed`` holds the seed (the only source file)."""

    name = "Synthetic"
    sensor_size = (16, 16, 2)
    classes = tuple("abcde")
    count = 40
    delay = 0.0

    def _index(self) -> None:
        src = self.root / f"{self.split}.seed"
        if not src.exists():
            raise self._missing(f"no {src.name}")
        self.seed = int(src.read_text())
        self.samples = list(range(self.count))
        self.sources = [src]

    def _load(self, index: int):
        if self.delay:
            time.sleep(self.delay)
        return _sample(self.seed, index)


class Slow(Synthetic):
    """The same data (same name, same fingerprint), decoded slowly enough that builders overlap."""

    delay = 0.002


def _root(tmp_path: Path, seed: int = 7, name: str = "src") -> Path:
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    (root / "train.seed").write_text(str(seed))
    return root


def _open(root: Path, cache_dir: Path, cls=Synthetic) -> Synthetic:
    return cls(root, "train", cache=True, cache_dir=cache_dir)


def _digest(ds: EventDataset) -> str:
    h = hashlib.sha256()
    for i in range(len(ds)):
        events, label = ds.events(i)
        h.update(np.ascontiguousarray(events).tobytes())
        h.update(str(label).encode())
    return h.hexdigest()


def _expected_digest(seed: int) -> str:
    h = hashlib.sha256()
    for i in range(Synthetic.count):
        events, label = _sample(seed, i)
        h.update(events.tobytes())
        h.update(str(label).encode())
    return h.hexdigest()


def _leftovers(cache_dir: Path) -> list[str]:
    """Everything in ``cache_dir`` but cache folders (lock files go with their holder)."""
    return [p.name for p in sorted(cache_dir.iterdir()) if not (CACHE_NAME.fullmatch(p.name) and p.is_dir())]


def _folder(cache_dir: Path) -> Path:
    (folder,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return folder


# ----- concurrent builders ------------------------------------------------------------------------

def _builder(root: Path, cache_dir: Path, barrier, out: Path) -> None:
    try:
        barrier.wait(timeout=30)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            digest = _digest(_open(root, cache_dir, Slow))
        out.write_text(" | ".join([digest] + [str(w.message) for w in caught]))
    except BaseException:
        out.write_text("ERROR " + traceback.format_exc())
        raise


@needs_fork
def test_concurrent_builders_of_one_cache_all_succeed_and_agree(tmp_path):
    """20 rounds of 3 processes opening the same empty cache at once: none fails or warns, all
    read the same, right data, and only the cache folder remains: no temporary, stale or lock
    file (the builder removes ``<folder>.lock`` when it lets go of it)."""
    root = _root(tmp_path)
    want = _expected_digest(7)
    ctx = mp.get_context("fork")
    for r in range(20):
        cache_dir = tmp_path / f"cache{r}"
        barrier = ctx.Barrier(3)
        outs = [tmp_path / f"out{r}-{k}" for k in range(3)]
        procs = [ctx.Process(target=_builder, args=(root, cache_dir, barrier, out)) for out in outs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # hung: fail below, leave nothing running
                p.kill()
                p.join()
        results = [out.read_text() if out.exists() else "no output" for out in outs]
        assert [p.exitcode for p in procs] == [0, 0, 0], f"round {r}: {results}"
        assert results == [want] * 3, f"round {r}"  # and no warnings
        assert _leftovers(cache_dir) == [], f"round {r}"


# ----- killed builds ---------------------------------------------------------------------------------

class Blocking(Synthetic):
    """The same data; decoding sample ``block_at`` sets ``reached``, then never returns (the test
    kills the process there), so a kill always lands in the middle of a build."""

    block_at = 0
    reached = None

    def _load(self, index: int):
        if index == self.block_at:
            self.reached.set()
            time.sleep(600)
        return super()._load(index)


def _build_until_killed(root: Path, cache_dir: Path, reached, block_at: int) -> None:
    Blocking.block_at, Blocking.reached = block_at, reached
    _open(root, cache_dir, Blocking)


@needs_fork
def test_builds_killed_mid_way_leave_no_orphans(tmp_path):
    """SIGKILL a builder in the middle of decoding (at a random sample, where its decoder blocks),
    20 times: each builder removes the temporary folder the previous one left, and a later open
    builds the right data and leaves nothing but the cache folder (no temporary folder, no lock)."""
    root = _root(tmp_path)
    cache_dir = tmp_path / "cache"
    ctx = mp.get_context("fork")
    rng = random.Random(0)
    for k in range(20):
        reached = ctx.Event()
        p = ctx.Process(target=_build_until_killed, args=(root, cache_dir, reached, rng.randrange(Synthetic.count)))
        p.start()
        try:
            assert reached.wait(timeout=60), f"kill {k}: the builder never reached its sample"
            assert p.is_alive(), f"kill {k}: the builder exited with {p.exitcode}"
        finally:
            p.kill()
            p.join()
        left = sorted(path.name for path in cache_dir.iterdir() if ".tmp" in path.name)
        assert len(left) == 1 and left[0].endswith(f".tmp{p.pid}"), f"kill {k}: {left}"
        assert not [path for path in cache_dir.iterdir() if CACHE_NAME.fullmatch(path.name)], f"kill {k}"
    ds = _open(root, cache_dir)
    assert _digest(ds) == _expected_digest(7)
    assert _leftovers(cache_dir) == []


# ----- damaged caches ---------------------------------------------------------------------------------

def _truncate_events(folder: Path) -> None:
    path = folder / "events.npy"
    os.truncate(path, path.stat().st_size - 100)


def _edit_offsets(folder: Path) -> None:
    offsets = np.load(folder / "offsets.npy")
    offsets[5] += 1
    np.save(folder / "offsets.npy", offsets)


def _edit_labels(folder: Path) -> None:
    labels = np.load(folder / "labels.npy")
    labels[3] = (labels[3] + 1) % 5
    np.save(folder / "labels.npy", labels)


def _reorder_offsets_and_fix_meta(folder: Path) -> None:
    """Offsets that decrease, with a meta.json updated to match them: only the invariants catch it."""
    offsets = np.load(folder / "offsets.npy")
    offsets[[4, 6]] = offsets[[6, 4]]
    np.save(folder / "offsets.npy", offsets)
    meta = json.loads((folder / "meta.json").read_text())
    data = (folder / "offsets.npy").read_bytes()
    meta["files"]["offsets.npy"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "meta.json").write_text(json.dumps(meta))


def _delete_meta(folder: Path) -> None:
    (folder / "meta.json").unlink()


def _garbage_meta(folder: Path) -> None:
    (folder / "meta.json").write_text("{this is not json")


@pytest.mark.parametrize("damage, reason", [
    (_truncate_events, r"events\.npy is \d+ bytes, meta\.json says \d+"),
    (_edit_offsets, r"offsets\.npy does not match its sha256"),
    (_edit_labels, r"labels\.npy does not match its sha256"),
    (_reorder_offsets_and_fix_meta, r"offsets\.npy decreases at sample"),
    (_delete_meta, r"meta\.json is missing"),
    (_garbage_meta, r"meta\.json is unreadable"),
], ids=["truncated-events", "edited-offsets", "edited-labels", "reordered-offsets", "no-meta", "garbage-meta"])
def test_a_damaged_cache_warns_naming_the_folder_and_rebuilds(tmp_path, damage, reason):
    root = _root(tmp_path)
    cache_dir = tmp_path / "cache"
    _digest(_open(root, cache_dir))
    gc.collect()
    folder = _folder(cache_dir)
    damage(folder)
    with pytest.warns(UserWarning, match=re.escape(f"spikelab cache {folder}: ") + reason + ".*rebuilding"):
        ds = _open(root, cache_dir)
    assert _digest(ds) == _expected_digest(7)
    assert _leftovers(cache_dir) == [] and _folder(cache_dir) == folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _open(root, cache_dir)  # now intact: no warning, no rebuild


def test_a_cache_truncated_after_it_was_opened_gives_an_error_naming_it(tmp_path):
    root = _root(tmp_path)
    ds = _open(root, tmp_path / "cache")  # checked, not yet mapped
    folder = _folder(tmp_path / "cache")
    _truncate_events(folder)
    with pytest.raises(cache_module.CacheError, match=re.escape(str(folder / "events.npy"))):
        ds.events(0)


# ----- superseded folders -------------------------------------------------------------------------

def test_superseded_cache_folders_are_removed_when_the_sources_change(tmp_path):
    root = _root(tmp_path, seed=1)
    cache_dir = tmp_path / "cache"
    _digest(_open(root, cache_dir))
    gc.collect()
    old = _folder(cache_dir)
    # things that are not this dataset's superseded caches, which must stay
    foreign = cache_dir / "Synthetic-train-0123456789abcdef"
    foreign.mkdir()
    (foreign / "meta.json").write_text(json.dumps({"note": "not a spikelab cache"}))
    (cache_dir / "Synthetic-train-fedcba9876543210").mkdir()  # no meta.json at all
    other_root = _root(tmp_path, seed=5, name="src2")  # the same dataset from another folder
    other = _open(other_root, cache_dir)._cache.folder
    gc.collect()
    legacy = cache_dir / "Synthetic-train-00000000000000aa"  # written by cache format 1
    legacy.mkdir()
    (legacy / "meta.json").write_text(json.dumps({"key": "00000000000000aa" + "0" * 48, "format": 1, "count": 40}))
    (legacy / "events.npy").write_bytes(b"old")

    (root / "train.seed").write_text("2")
    os.utime(root / "train.seed", ns=(10**18, 10**18))
    ds = _open(root, cache_dir)
    new = ds._cache.folder
    assert _digest(ds) == _expected_digest(2)
    assert new != old and not old.exists() and not Path(f"{old}.lock").exists()
    assert not legacy.exists()
    assert foreign.exists() and (cache_dir / "Synthetic-train-fedcba9876543210").exists() and other.exists()


def test_a_superseded_folder_still_open_is_kept_until_it_is_closed(tmp_path):
    root = _root(tmp_path, seed=1)
    cache_dir = tmp_path / "cache"
    first = _open(root, cache_dir)
    old = first._cache.folder
    (root / "train.seed").write_text("2")
    os.utime(root / "train.seed", ns=(10**18, 10**18))
    second = _open(root, cache_dir)
    if cache_module.fcntl is not None:
        assert old.exists()  # `first` still reads it
    assert _digest(first) == _expected_digest(1) and _digest(second) == _expected_digest(2)
    del first
    gc.collect()
    _open(root, cache_dir)
    assert not old.exists()


# ----- no write access ---------------------------------------------------------------------------

def _refuse_writes(monkeypatch) -> None:
    """Make every call that would change the file system fail, as in a read-only folder or one
    that belongs to another user (lock files included)."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "read-only file system (test)")

    real_os_open, real_io_open = os.open, io.open
    write_flags = os.O_CREAT | os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, *args, **kwargs):
        if flags & write_flags:
            refuse()
        return real_os_open(path, flags, *args, **kwargs)

    def io_open(file, mode="r", *args, **kwargs):
        if isinstance(mode, str) and set(mode) & set("wax+"):
            refuse()
        return real_io_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr(builtins, "open", io_open)
    for name in ("mkdir", "rename", "replace", "unlink", "rmdir", "link", "symlink", "truncate"):
        monkeypatch.setattr(os, name, refuse)


@pytest.mark.parametrize("with_fcntl", [True, False], ids=["flock", "no-fcntl"])
def test_an_intact_cache_opens_without_write_access(tmp_path, monkeypatch, with_fcntl):
    """An intact cache opens where nothing can be written, although it has siblings to clean up
    (a superseded folder, a dead builder's temporary folder): the cleanup is skipped, not an
    error; the next open that may write does it."""
    if not with_fcntl:
        monkeypatch.setattr(cache_module, "fcntl", None)
        monkeypatch.setattr(locks, "fcntl", None)
    root = _root(tmp_path, seed=1)
    cache_dir = tmp_path / "cache"
    first = _open(root, cache_dir)
    old = first._cache.folder
    (root / "train.seed").write_text("2")
    os.utime(root / "train.seed", ns=(10**18, 10**18))
    folder = _open(root, cache_dir)._cache.folder
    if with_fcntl:
        assert old.exists()  # kept while `first` reads it
    else:  # nothing marks use without fcntl: put a superseded folder back by hand
        shutil.copytree(folder, old)
        meta = json.loads((old / "meta.json").read_text())
        meta["key"] = old.name[-16:] + meta["key"][16:]
        (old / "meta.json").write_text(json.dumps(meta))
    del first
    gc.collect()
    orphan = folder.with_name(f"{folder.name}.tmp{_dead_pid()}")
    orphan.mkdir()
    with monkeypatch.context() as m, warnings.catch_warnings():
        warnings.simplefilter("error")
        _refuse_writes(m)
        ds = _open(root, cache_dir)
        assert _digest(ds) == _expected_digest(2)
    assert ds._cache.folder == folder and old.exists() and orphan.exists()
    del ds
    gc.collect()
    _open(root, cache_dir)  # writable again: the cleanup happens
    assert not old.exists() and not orphan.exists() and _leftovers(cache_dir) == []


def test_cleanup_leaves_symlinks_alone(tmp_path):
    """A link named like a superseded or temporary folder (a user's cache moved to another disk)
    is not a folder the cache wrote: neither it nor what it points to is removed."""
    root = _root(tmp_path, seed=1)
    cache_dir = tmp_path / "cache"
    _digest(_open(root, cache_dir))
    gc.collect()
    old = _folder(cache_dir)
    elsewhere = tmp_path / "elsewhere"
    os.replace(old, elsewhere)
    old.symlink_to(elsewhere, target_is_directory=True)
    tmp_link = old.with_name(f"{old.name}.tmp{_dead_pid()}")
    tmp_link.symlink_to(elsewhere, target_is_directory=True)
    (root / "train.seed").write_text("2")
    os.utime(root / "train.seed", ns=(10**18, 10**18))
    assert _digest(_open(root, cache_dir)) == _expected_digest(2)
    assert old.is_symlink() and tmp_link.is_symlink() and (elsewhere / "events.npy").exists()


# ----- the lock without fcntl -----------------------------------------------------------------------

def _dead_pid() -> int:
    p = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Process(target=int)
    p.start()
    p.join()
    return p.pid


def test_lock_file_fallback_takes_over_a_dead_owner_and_excludes_a_live_one(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "fcntl", None)
    monkeypatch.setattr(locks, "fcntl", None)
    path = tmp_path / "x.lock"
    host = locks._hostname()
    path.write_text(f"{_dead_pid()} {host}\n")
    lock = locks.FileLock(path)
    assert lock.acquire(blocking=False)  # the owner is gone: the lock is stale
    assert path.read_text().split() == [str(os.getpid()), host]
    assert not locks.FileLock(path).acquire(blocking=False)  # held by a live process
    lock.release()
    assert not path.exists()
    # a whole build through the fallback
    root = _root(tmp_path)
    ds = _open(root, tmp_path / "cache")
    assert _digest(ds) == _expected_digest(7) and _leftovers(tmp_path / "cache") == []


def _refused_flock():
    """``fcntl`` as on a file system that refuses ``flock`` (some network file systems)."""
    import fcntl

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    return types.SimpleNamespace(LOCK_SH=fcntl.LOCK_SH, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB,
                                 LOCK_UN=fcntl.LOCK_UN, flock=flock)


FALLBACKS = {"no-fcntl": lambda: None, "flock-refused": _refused_flock}


def _log(log: Path, line: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())  # one write in append mode: lines never mix
    finally:
        os.close(fd)


def _contend(path: Path, log: Path, fallback: str, barrier, times: int) -> None:
    fake = FALLBACKS[fallback]()
    locks.fcntl = cache_module.fcntl = fake  # in this forked child only
    barrier.wait(timeout=30)
    for _ in range(times):
        with locks.FileLock(path):
            _log(log, f"enter {os.getpid()}\n")
            time.sleep(0.005)
            _log(log, f"exit {os.getpid()}\n")


@needs_fork
@pytest.mark.skipif(locks.fcntl is None, reason="fakes a file system without flock")
@pytest.mark.parametrize("fallback", sorted(FALLBACKS))
def test_lock_file_fallback_excludes_contending_processes(tmp_path, fallback):
    """4 processes at once, 6 rounds, on a lock file that the first 3 rounds start from a dead
    owner's: one holder at a time (its "enter"/"exit" lines never interleave), the stale file is
    taken over by one process only, and no file is left behind (lock, marker or empty file)."""
    ctx = mp.get_context("fork")
    path = tmp_path / "locks" / "x.lock"
    path.parent.mkdir()
    log = tmp_path / "log"
    dead = _dead_pid()
    procs_n, times = 4, 3
    for r in range(6):
        if r < 3:
            path.write_text(f"{dead} {locks._hostname()}\n")
        barrier = ctx.Barrier(procs_n)
        procs = [ctx.Process(target=_contend, args=(path, log, fallback, barrier, times)) for _ in range(procs_n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
        assert [p.exitcode for p in procs] == [0] * procs_n, f"round {r}"
        lines = log.read_text().splitlines()
        log.unlink()
        assert len(lines) == 2 * procs_n * times, f"round {r}"
        for i in range(0, len(lines), 2):
            pid = lines[i].split()[1]
            assert lines[i:i + 2] == [f"enter {pid}", f"exit {pid}"], f"round {r}: two holders at once: {lines}"
        assert list(path.parent.iterdir()) == [], f"round {r}"


@pytest.mark.skipif(locks.fcntl is None, reason="fakes a file system without flock")
def test_lock_where_flock_is_refused_takes_a_fresh_lock_at_once(tmp_path, monkeypatch):
    """The failed flock attempt leaves no empty file behind that would make the lock file
    fallback wait for it to grow stale (about 2 s); a non-blocking attempt goes on to the
    fallback instead of reporting the lock busy."""
    monkeypatch.setattr(locks, "fcntl", _refused_flock())

    class NoWaiting:  # the lock module's clock, refusing to sleep: a free lock is taken at once
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds):
            raise AssertionError(f"a free lock waited ({seconds} s): an empty leftover file?")

    monkeypatch.setattr(locks, "time", NoWaiting())
    path = tmp_path / "x.lock"
    for blocking in (True, False, True):
        lock = locks.FileLock(path)
        assert lock.acquire(blocking=blocking)
        assert path.read_text().split() == [str(os.getpid()), locks._hostname()]
        assert not locks.FileLock(path).acquire(blocking=False)  # held
        lock.release()
        assert list(tmp_path.iterdir()) == []


# ----- DVS Gesture: a stray recording ---------------------------------------------------------------

def test_dvsgesture_stray_recording_is_an_error_naming_it(tmp_path):
    from spikelab import data
    from spikelab.data.formats import aedat3

    folder = tmp_path / "DvsGesture"
    folder.mkdir()
    events = make_events(np.arange(100) % 128, np.arange(100) % 128, np.arange(100) * 1000, np.arange(100) % 2)
    for user in ("user01_natural", "user24_natural"):
        aedat3.write_aedat3(folder / f"{user}.aedat", events)
        (folder / f"{user}_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,0,50000\n")
    assert len(data.DVSGesture(tmp_path, "train")) == 1
    aedat3.write_aedat3(folder / "userAB_x.aedat", events)
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=r"userAB_x\.aedat.*userNN_<lighting>\.aedat"):
            data.DVSGesture(tmp_path, split)
