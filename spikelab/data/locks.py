"""Locks between processes on one machine (and on shared file systems that allow it).

:class:`FileLock` guards a build that several processes may start at once (a dataset cache,
the generated DigitsDVS recordings, DDP ranks on their first run): one builds, the others wait
and then find the result. :func:`pid_alive` tells whether a process that left a temporary file
behind still runs; :func:`replaced_atomically` writes a file that readers see whole or not at
all, and :func:`remove_dead_temps` clears the temporary files of writers that were killed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the O_EXCL lock file below
    fcntl = None

NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}

log = logging.getLogger(__name__)


def _hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when unsure)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return not ok or code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


class FileLock:
    """An exclusive lock between processes on the file ``path``.

    The holder removes the file when it lets go, so no lock file outlives its use. With ``fcntl``:
    ``flock`` on the file (the kernel releases it when its holder dies); after locking, the file
    at ``path`` must still be the one locked, else its holder removed it meanwhile and locking
    starts again on the file there now. Where the file system refuses ``flock``, the file that
    attempt created is removed again at once, and the lock falls back to the lock file itself.

    Without ``fcntl`` (or ``flock``): the file is created with ``O_EXCL`` holding ``"<pid> <host>"``.
    A file whose process is gone (same host) is stale, as is an empty one (a process killed as it
    created it) after 2 s and one holding anything else after 60 s; one this process cannot read
    never is. A stale file is taken over by removing it and creating the lock again. The removal
    is atomic: only the process that holds the marker ``<path>.break-<id>`` (itself such a lock;
    ``id`` names that one stale file by its device, inode, modification time and content) may
    remove it, after checking that the file at ``path`` is still that one. So of several
    processes that find the same stale file, one removes it, and none removes the fresh lock
    another has created meanwhile (as removing it by name, or renaming it aside, could).
    """

    STALE_EMPTY_S = 2.0  # an empty lock file this old was left by a process killed as it created it
    STALE_GARBLED_S = 60.0

    def __init__(self, path: Path, what: str = "") -> None:
        self.path = Path(path)
        self.what = what or str(self.path)
        self._fd: Optional[int] = None
        self._mine: Optional[str] = None  # what this process wrote into its lock file (fallback)
        self._told = False
        self._flock = fcntl is not None  # False where the file system refuses flock too

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` return False at once when another holds it."""
        while True:
            if self._flock:
                got = self._try_flock(blocking)
                if got is not None:
                    return got
                continue  # the file changed, or flock was refused: try again (with the lock file)
            got = self._try_create()
            if got is not None:
                return got
            if not blocking:
                return False
            self._waiting()
            time.sleep(0.05)

    def _waiting(self) -> None:
        if not self._told:
            log.info("%s: waiting for another process to finish building it", self.what)
            self._told = True

    def _open_for_flock(self) -> tuple[int, bool]:
        """A descriptor of the file at ``path`` (created when absent), and whether this call created it."""
        while True:
            try:
                return os.open(self.path, os.O_RDWR), False
            except FileNotFoundError:
                pass
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                pass  # another process created it just now: open that one

    def _try_flock(self, blocking: bool) -> Optional[bool]:
        """True when locked, False when busy (non-blocking), None to try again."""
        fd, created = self._open_for_flock()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    os.close(fd)
                    return False
                self._waiting()
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                if e.errno not in NO_FLOCK:
                    raise
                # e.g. some network file systems: use the lock file's content instead, without
                # leaving the empty file just created, which that would take for a fresh lock
                if created:
                    try:
                        st = os.fstat(fd)
                        if st.st_size == 0 and os.path.samestat(st, os.stat(self.path)):
                            os.unlink(self.path)
                    except OSError:
                        pass
                os.close(fd)
                self._flock = False
                return None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            self._fd = fd
            return True
        os.close(fd)  # its holder removed it: lock the file there now
        return None

    def _try_create(self) -> Optional[bool]:
        """True when the lock file was created, None when another process holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                seen = self._read()
                if seen is None:
                    continue  # released just now
                if not self._stale(*seen) or not self._break(seen):
                    return None
                continue
            mine = f"{os.getpid()} {_hostname()}\n"
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(mine)
            except BaseException:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
                raise
            self._fd = -1
            self._mine = mine
            return True

    def _read(self) -> Optional[tuple[tuple, str]]:
        """``((dev, inode, mtime, size), text)`` of the file at ``path``, None when there is none."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError:
            return (), "?"  # unreadable (another user's, say): never taken for stale
        try:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(4096)
        except OSError:
            return (), "?"
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size), data.decode("utf-8", "replace")

    def _stale(self, stat: tuple, text: str) -> bool:
        """Whether the lock file read as ``stat, text`` was left by a process that is gone."""
        parts = text.split()
        if len(parts) == 2 and parts[0].isdigit():
            return parts[1] == _hostname() and not pid_alive(int(parts[0]))
        if not stat:
            return False
        age = time.time() - stat[2] / 1e9
        # empty: a creator killed before it wrote (or an flock user killed as it tried); garbled: unknown
        return age > (self.STALE_EMPTY_S if not text else self.STALE_GARBLED_S)

    def _break(self, seen: tuple[tuple, str]) -> bool:
        """Remove the stale lock file read as ``seen`` if it is still there. False when another
        process is removing it (wait for the lock again); True otherwise."""
        ident = hashlib.sha256(repr(seen).encode()).hexdigest()[:16]
        marker = FileLock(self.path.with_name(f"{self.path.name}.break-{ident}"))
        marker._flock = False
        if not marker.acquire(blocking=False):
            return False
        try:
            # nobody else removes this file now: its owner is gone, and any other process that
            # found it stale waits for the marker; so if it is still there, it is still this one
            if self._read() == seen:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        finally:
            marker.release()
        return True

    def release(self) -> None:
        """Remove the lock file, then unlock."""
        if self._fd is None:
            return
        try:
            if self._fd >= 0 or self.path.read_text() == self._mine:
                os.unlink(self.path)
        except OSError:
            pass
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = None
        self._mine = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def temp_name(path: Path) -> Path:
    """The temporary file this process writes before it replaces ``path``: ``.<name>.tmp<pid>``."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def replaced_atomically(path: Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is flushed to disk (``fsync``) and renamed
    over ``path`` (readers see the old file or the new one, never half of one); on failure removed."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_dead_temps(paths: Iterable[Path]) -> None:
    """Delete the ``...tmp<pid>`` files among ``paths`` whose writing process no longer runs."""
    for path in paths:
        pid = path.name.rpartition(".tmp")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)


__all__ = ["FileLock", "pid_alive", "remove_dead_temps", "replaced_atomically", "temp_name"]
