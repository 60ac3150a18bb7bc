"""Locks between processes on one machine (and on shared file systems that allow it).

:class:`FileLock` guards a build that several processes may start at once (a dataset cache,
the generated DigitsDVS recordings, DDP ranks on their first run): one builds, the others wait
and then find the result. :func:`pid_alive` tells whether a process that left a temporary file
behind still runs.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

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
    starts again on the file there now. Without ``fcntl``: the file is created with ``O_EXCL``
    holding ``"<pid> <host>"``; a file whose process is gone (same host) is stale and taken over.
    """

    def __init__(self, path: Path, what: str = "") -> None:
        self.path = Path(path)
        self.what = what or str(self.path)
        self._fd: Optional[int] = None
        self._told = False
        self._flock = fcntl is not None  # False where the file system refuses flock too

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` return False at once when another holds it."""
        while True:
            got = self._try_flock(blocking) if self._flock else self._try_create()
            if got is not None:
                return got
            if not self._flock:
                if not blocking:
                    return False
                self._waiting()
                time.sleep(0.05)

    def _waiting(self) -> None:
        if not self._told:
            log.info("%s: waiting for another process to finish building it", self.what)
            self._told = True

    def _try_flock(self, blocking: bool) -> Optional[bool]:
        """True when locked, False when busy (non-blocking), None to try again."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
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
                os.close(fd)  # e.g. some network file systems: use the lock file's pid instead
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
                if not self._stale():
                    return None
                # best effort: two processes taking over the same stale file at the same moment
                # could both succeed (a window of microseconds, only after a crash, only here)
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {_hostname()}\n")
            self._fd = -1
            return True

    def _stale(self) -> bool:
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        except OSError:
            return False
        parts = text.split()
        if len(parts) == 2 and parts[0].isdigit():
            return parts[1] == _hostname() and not pid_alive(int(parts[0]))
        # empty: left by flock (a process killed holding it), or a creator killed before writing
        return age > (2 if not text else 60)

    def release(self) -> None:
        """Remove the lock file, then unlock."""
        if self._fd is None:
            return
        try:
            if self._fd >= 0 or self.path.read_text().split()[:1] == [str(os.getpid())]:
                os.unlink(self.path)
        except OSError:
            pass
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["FileLock", "pid_alive"]
