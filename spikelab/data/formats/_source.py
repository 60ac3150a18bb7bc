"""Where a decoder's bytes come from, and the one path that checks every reader's events.

A :class:`Source` is a recording's bytes, in memory (whole-file reading) or read from an open
file a block at a time (streaming). Each format's ``pieces(source, chunk_bytes, ...)`` parses
the header and returns the sensor size (or None) and an iterator of ``(events, byte offsets)``
pieces. A decoding error is raised only after every piece before it was handed out, and
:func:`validated` checks each piece before asking for the next, so the error reported is the
first problem in file order whatever the piece size: whole-file and streamed reading return
the same events and raise the same errors at the same byte offsets.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

import numpy as np

from spikelab.data.events import EVENT_DTYPE, EventFormatError, check_events
from spikelab.data.formats._header import split_header

Pieces = Iterator[tuple[np.ndarray, Optional[np.ndarray]]]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_regular(path, mode: int) -> EventFormatError:
    """The error for a path that is not a regular file (``mode`` from ``os.stat``)."""
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return EventFormatError(path, f"is {kind}; event files are read from regular files only")


def _open_fd(path) -> tuple[int, int]:
    """A read-only descriptor of the regular file ``path`` and its size; anything else is
    refused (reading a FIFO, a directory or a device would hang, fail obscurely or never end)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)  # a FIFO must not block open()
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such event file") from None
    except OSError as err:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):  # Windows refuses to open a directory
            raise not_regular(path, mode) from None
        raise err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def open_regular(path) -> BinaryIO:
    """The regular file ``path`` opened for binary reading (see :func:`read_bytes`)."""
    fd, _ = _open_fd(path)
    try:
        if hasattr(os, "set_blocking") and hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, limit: Optional[int] = None) -> bytes:
    """The bytes of the regular file ``path`` (the first ``limit`` only, when given)."""
    fd, size = _open_fd(path)
    try:
        want = size + 1 if limit is None else limit
        data = b""
        if want <= 1 << 26:
            data = os.read(fd, want)  # one system call for most recordings
            if limit is not None or len(data) < want:  # a short read of a regular file is its end
                return data
        with os.fdopen(fd, "rb", closefd=False) as f:  # large (or grown since fstat): read on
            rest = f.read() if limit is None else f.read(limit - len(data))
        return data + rest if data else rest
    finally:
        os.close(fd)


class Source:
    """A recording's bytes: ``data`` in memory, or the open regular ``file`` read on demand."""

    def __init__(self, path, data=None, file: Optional[BinaryIO] = None) -> None:
        self.path = path
        if data is not None:
            self._mem: Optional[memoryview] = memoryview(data).cast("B")
            self._file = None
            self.size = len(self._mem)
        else:
            if file is None:
                raise ValueError("Source needs data= or file=")
            self._mem = None
            self._file = file
            self.size = os.fstat(file.fileno()).st_size
            self._pos = file.tell()

    def read(self, pos: int, n: int):
        """Up to ``n`` bytes at ``pos`` (fewer only at the end of the data)."""
        n = max(0, min(n, self.size - pos))
        if self._mem is not None:
            return self._mem[pos:pos + n]
        if pos != self._pos:
            self._file.seek(pos)
        out = self._file.read(n)
        self._pos = pos + len(out)
        if len(out) < n:
            raise EventFormatError(self.path, f"the file ended {n - len(out)} bytes early (did it shrink while "
                                              "being read?)", pos + len(out))
        return out


def read_header(src: Source, marker: bytes, end_line: Optional[bytes] = None) -> tuple[list[str], int]:
    """Header lines and the offset of the binary data, reading only as much as the header needs."""
    n = 1 << 16
    while True:
        head = bytes(src.read(0, n))
        found = split_header(head, marker, src.path, end_line, more=len(head) < src.size)
        if found is not None:
            return found
        n *= 8


def records(src: Source, start: int, record: int, chunk_bytes: Optional[int],
            what: str = "event") -> Iterator[tuple[object, int]]:
    """``(block, byte offset)`` of whole ``record``-byte records from ``start``, about
    ``chunk_bytes`` at a time (all at once when None); after the last whole record, a
    truncated tail raises."""
    body = max(src.size - start, 0)
    whole = start + body - body % record
    step = max(whole - start, 1) if chunk_bytes is None else max(record, chunk_bytes // record * record)
    pos = start
    while pos < whole:
        n = min(step, whole - pos)
        yield src.read(pos, n), pos
        pos += n
    if body % record:
        raise EventFormatError(src.path, f"the last {what} is truncated ({body % record} of {record} bytes)", whole)


def batched(parts: Iterable[tuple[object, int]], flush: Callable[[list], tuple], chunk_bytes: Optional[int]) -> Pieces:
    """Pieces from packet parts ``(part, bytes in the file)``: ``flush(parts)`` whenever
    ``chunk_bytes`` have gone by (once at the end when None), and before any error."""
    pending: list = []
    size = 0
    try:
        for part, nbytes in parts:
            pending.append(part)
            size += nbytes
            if chunk_bytes is not None and size >= chunk_bytes:
                yield flush(pending)
                pending, size = [], 0
    except EventFormatError:
        if pending:  # hand out what came before the error: it may hold an earlier one
            yield flush(pending)
        raise
    if pending:
        yield flush(pending)


def validated(sensor_size, pieces: Pieces, path, allow_unsorted: bool = False) -> Iterator[np.ndarray]:
    """Each piece checked (coordinates, order within and across pieces) before the next is read."""
    first, prev_t = 0, None
    for events, offsets in pieces:
        events = check_events(events, path, sensor_size, offsets, allow_unsorted, first=first, prev_t=prev_t)
        if len(events):
            first += len(events)
            prev_t = int(events["t"][-1])
        yield events


def collect(opened: tuple, path, allow_unsorted: bool = False) -> np.ndarray:
    """All the events of ``opened`` = ``(sensor size, pieces)``, checked like a stream."""
    parts = list(validated(*opened, path, allow_unsorted))
    if not parts:
        return np.zeros(0, EVENT_DTYPE)
    events = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if allow_unsorted and len(parts) > 1 and (events["t"][1:] < events["t"][:-1]).any():
        events = events[np.argsort(events["t"], kind="stable")]
    return events


def decode(pieces: Callable[..., tuple], data, path, allow_unsorted: bool = False, **options) -> np.ndarray:
    """Whole-file decoding of ``data`` (the recording's bytes) with a format's ``pieces``."""
    return collect(pieces(Source(path, data), None, **options), path, allow_unsorted)


def read(pieces: Callable[..., tuple], path, allow_unsorted: bool = False, **options) -> np.ndarray:
    """Whole-file reading of ``path`` with a format's ``pieces``."""
    return decode(pieces, read_bytes(path), path, allow_unsorted, **options)


def stream(pieces: Callable[..., tuple], path, chunk_bytes: int, **options) -> Iterator[np.ndarray]:
    """Streamed reading of ``path`` with a format's ``pieces``, ``chunk_bytes`` at a time."""
    with open_regular(path) as f:
        yield from validated(*pieces(Source(path, file=f), chunk_bytes, **options), path)


__all__ = ["not_regular", "read_bytes", "Source", "read_header", "records", "batched", "decode", "read", "stream"]
