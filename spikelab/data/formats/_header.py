"""Text headers shared by several formats: lines starting with a marker byte."""

from __future__ import annotations

from spikelab.data.events import EventFormatError


def split_header(data: bytes, marker: bytes, path, end_line: bytes | None = None) -> tuple[list[str], int]:
    """Header lines (decoded, stripped) and the byte offset where binary data starts.

    Lines start with ``marker``; the header ends at the first line that does not, or right
    after a line equal to ``end_line`` when given.
    """
    lines: list[str] = []
    pos = 0
    while pos < len(data) and data[pos:pos + len(marker)] == marker:
        end = data.find(b"\n", pos)
        if end < 0:
            raise EventFormatError(path, "header line has no end (truncated file?)", pos)
        line = data[pos:end].rstrip(b"\r")
        lines.append(line.decode("latin-1"))
        pos = end + 1
        if end_line is not None and line.strip() == end_line:
            break
    return lines, pos


def read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such event file") from None
