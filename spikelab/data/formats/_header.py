"""Text headers shared by several formats: lines starting with a marker byte."""

from __future__ import annotations

from typing import Optional

from spikelab.data.events import EventFormatError


def split_header(data: bytes, marker: bytes, path, end_line: Optional[bytes] = None,
                 more: bool = False) -> Optional[tuple[list[str], int]]:
    """Header lines (decoded, stripped) and the byte offset where binary data starts.

    Lines start with ``marker``; the header ends at the first line that does not, or right
    after a line equal to ``end_line`` when given. With ``more=True`` (``data`` is only the
    start of the file), returns None when the header may go on past ``data``.
    """
    lines: list[str] = []
    pos, size = 0, len(data)
    while pos < size and data.startswith(marker, pos):
        end = data.find(b"\n", pos)
        if end < 0:
            if more:
                return None
            raise EventFormatError(path, "header line has no end (truncated file?)", pos)
        line = data[pos:end].rstrip(b"\r")
        lines.append(line.decode("latin-1"))
        pos = end + 1
        if end_line is not None and line.strip() == end_line:
            return lines, pos
    if more and pos + len(marker) > size:
        return None  # the header may go on past what was read
    return lines, pos


def read_bytes(path) -> bytes:
    """The whole of the regular file ``path`` (a FIFO, directory or device is refused)."""
    from spikelab.data.formats._source import read_bytes as read_regular

    return read_regular(path)


__all__ = ["split_header"]
