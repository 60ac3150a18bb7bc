"""N-MNIST / N-Caltech101 ATIS ``.bin``: 5 bytes per event, big-endian bit fields.

Byte 0: x; byte 1: y; byte 2: bit 7 polarity (1 = ON), bits 6..0 timestamp bits 22..16;
bytes 3-4: timestamp bits 15..0 (microseconds). An event with y == 240 is an overflow
marker: the 23-bit timestamp wrapped, so 2**23 us is added to every later event and the
marker itself is dropped. (The datasets' original MATLAB reader adds 2**13 there, which does
not match the 23-bit field; no N-MNIST or N-Caltech101 recording is long enough to wrap.)
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from spikelab.data.events import make_events
from spikelab.data.formats._source import Source, decode, read, records

RECORD = 5
OVERFLOW_Y = 240
WRAP = 1 << 23


def decode_records(body: bytes, base: int, wraps: int):
    """Decode whole 5-byte records: ``(events, byte offsets, wraps after the last record)``.

    ``wraps`` counts the overflow markers met before ``body`` (for streaming in chunks).
    """
    raw = np.frombuffer(body, dtype=np.uint8).reshape(-1, RECORD).astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == OVERFLOW_Y
    epochs = wraps + np.cumsum(overflow)
    keep = ~overflow
    events = make_events(x[keep], y[keep], (t + WRAP * epochs)[keep], p[keep])
    return events, base + np.flatnonzero(keep) * RECORD, int(epochs[-1]) if len(epochs) else wraps


def pieces(src: Source, chunk_bytes: Optional[int], sensor_size=None) -> tuple:
    """The sensor size and the ``(events, byte offsets)`` pieces of an ATIS recording."""
    def gen():
        wraps = 0
        for block, pos in records(src, 0, RECORD, chunk_bytes):
            events, offsets, wraps = decode_records(block, pos, wraps)
            yield events, offsets

    return sensor_size, gen()


def decode_atis(data: bytes, path=None, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of an ATIS recording held in memory."""
    return decode(pieces, data, path, allow_unsorted, sensor_size=sensor_size)


def read_atis_bin(path, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of an N-MNIST / N-Caltech101 ``.bin`` recording."""
    return read(pieces, path, allow_unsorted, sensor_size=sensor_size)


def write_atis_bin(path, events: np.ndarray) -> None:
    """Write events in the ATIS ``.bin`` layout (x, y < 256, y != 240), inserting overflow
    markers where timestamps pass a multiple of 2**23 us."""
    x, y, t, p = (events[k].astype(np.int64) for k in ("x", "y", "t", "p"))
    if len(events) and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255 or (y == OVERFLOW_Y).any()):
        raise ValueError(f"{path}: ATIS .bin stores x, y in 0..255 with y != 240")
    if len(events) and (t.min() < 0 or (np.diff(t) < 0).any()):
        raise ValueError(f"{path}: ATIS .bin needs non-negative, sorted timestamps")
    markers_before = t // WRAP  # overflow markers preceding each event, cumulatively
    rows = np.zeros((len(events) + (int(markers_before[-1]) if len(events) else 0), RECORD), dtype=np.uint8)
    rows[:, 1] = OVERFLOW_Y  # every row not filled by an event below stays a marker
    at = np.arange(len(events)) + markers_before
    low = t % WRAP
    rows[at] = np.stack([x, y, (p << 7) | (low >> 16), (low >> 8) & 0xFF, low & 0xFF], axis=1)
    rows.tofile(path)


__all__ = ["pieces", "decode_atis", "read_atis_bin", "write_atis_bin"]
