"""Streaming readers for recordings larger than memory: chunks of events, or fixed time windows.

The file is read ``chunk_bytes`` at a time through the same per-format decoder as
``read_events`` (``spikelab.data.io.PIECES``): decoders that carry state (ATIS overflow count,
EVT 2.0 time high, EVT 3.0 row/column/time words) keep it from one chunk to the next, packet
formats (AEDAT 3.1, 4.0) are read packet by packet, and every chunk goes through the same
checks, in file order. So a stream yields exactly the events ``read_events`` returns, or
raises the same ``EventFormatError`` (same message, same byte offset).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from spikelab.data.events import EVENT_DTYPE
from spikelab.data.formats._source import stream
from spikelab.data.io import PIECES, detect_format

DEFAULT_CHUNK = 16 << 20


def iter_chunks(path, format: Optional[str] = None, chunk_bytes: int = DEFAULT_CHUNK, sensor_size=None,
                **options) -> Iterator[np.ndarray]:
    """Events of ``path`` in file order, about ``chunk_bytes`` of the file at a time.

    ``options`` are those of ``read_events`` for the format (``camera=``,
    ``max_packet_bytes=``...), except ``allow_unsorted``: a stream cannot sort across chunks.
    """
    if options.pop("allow_unsorted", False):
        raise ValueError("allow_unsorted: a stream cannot sort across chunks; use read_events(..., "
                         "allow_unsorted=True) or sort each window")
    if int(chunk_bytes) <= 0:
        raise ValueError(f"chunk_bytes: expected a positive number of bytes, got {chunk_bytes}")
    fmt = format or detect_format(path)
    if fmt not in PIECES:
        raise ValueError(f"format: streaming covers {sorted(PIECES)}, got {fmt!r} (SHD files are per-sample)")
    if sensor_size is not None:
        options["sensor_size"] = sensor_size
    yield from stream(PIECES[fmt], path, int(chunk_bytes), **options)


def iter_windows(path, window_us: int, format: Optional[str] = None, chunk_bytes: int = DEFAULT_CHUNK,
                 start_us: Optional[int] = None, **options) -> Iterator[np.ndarray]:
    """Consecutive windows ``[start + k * window_us, start + (k + 1) * window_us)`` of events
    (empty arrays for silent windows), from the first event's time unless ``start_us``."""
    if window_us <= 0:
        raise ValueError(f"window_us: expected a positive number of microseconds, got {window_us}")
    carry = np.zeros(0, EVENT_DTYPE)
    edge = None
    for chunk in iter_chunks(path, format, chunk_bytes, **options):
        if not len(chunk):
            continue
        carry = np.concatenate([carry, chunk]) if len(carry) else chunk
        if edge is None:
            edge = (int(carry["t"][0]) if start_us is None else int(start_us)) + window_us
        t = carry["t"]
        while t[-1] >= edge:
            cut = int(np.searchsorted(t, edge))
            yield carry[:cut]
            carry, t = carry[cut:], t[cut:]
            edge += window_us
    if len(carry):
        yield carry


__all__ = ["iter_chunks", "iter_windows"]
