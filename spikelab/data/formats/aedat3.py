"""AEDAT 3.1 (cAER; DVS128 Gesture): ``#`` header ending with ``#!END-HEADER``, then packets.

Each packet: a 28-byte little-endian header (int16 eventType, int16 eventSource, int32
eventSize, int32 eventTSOffset, int32 eventTSOverflow, int32 eventCapacity, int32
eventNumber, int32 eventValid), then ``eventCapacity * eventSize`` bytes. Polarity events
(type 1, 8 bytes): uint32 data (bit 0 valid, bit 1 polarity, bits 2..16 y, bits 17..31 x)
and int32 timestamp; the full timestamp is ``eventTSOverflow << 31 | timestamp``. Other
packet types are skipped, invalid events dropped. Header fields that do not fit the file
are refused before anything is allocated.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from spikelab.data.events import EventFormatError, make_events
from spikelab.data.formats._source import Source, batched, decode, read, read_header

PACKET_HEADER = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"),
                          ("ts_overflow", "<i4"), ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")])
POLARITY = 1
_POLARITY_EVENT = np.dtype([("data", "<u4"), ("t", "<i4")])


def _packets(src: Source, pos: int):
    """``((raw polarity events, timestamp overflow, byte offset of the first), packet bytes)``
    for each polarity packet from ``pos``; refuses a packet header whose fields do not fit."""
    path, hsize = src.path, PACKET_HEADER.itemsize
    while pos < src.size:
        if pos + hsize > src.size:
            raise EventFormatError(path, f"truncated packet header ({src.size - pos} of {hsize} bytes)", pos)
        head = np.frombuffer(src.read(pos, hsize), PACKET_HEADER)[0]
        kind, size, capacity, number = int(head["type"]), int(head["size"]), int(head["capacity"]), int(head["number"])
        body = pos + hsize
        if size <= 0:
            raise EventFormatError(path, f"corrupt packet header: eventSize {size}, expected a positive number of "
                                         "bytes", pos)
        if kind == POLARITY and size != _POLARITY_EVENT.itemsize:
            raise EventFormatError(path, f"polarity packet with eventSize {size}, expected 8", pos)
        room = (src.size - body) // size
        if not 0 <= capacity <= room:
            raise EventFormatError(path, f"corrupt packet header: eventCapacity {capacity} (x {size}-byte events) runs "
                                         f"past the end of the file; expected 0..{room}", pos)
        if not 0 <= number <= capacity:
            raise EventFormatError(path, f"corrupt packet header: eventNumber {number}, expected 0..{capacity} "
                                         "(the eventCapacity)", pos)
        if kind == POLARITY:
            overflow = int(head["ts_overflow"])
            if overflow < 0:
                raise EventFormatError(path, f"corrupt packet header: eventTSOverflow {overflow}, expected >= 0",
                                       pos)
            raw = np.frombuffer(src.read(body, number * size), _POLARITY_EVENT)
            yield (raw, overflow, body), hsize + size * capacity
        pos = body + size * capacity


def _flush(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Events and byte offsets of polarity packets, decoded in one vectorised pass."""
    raw = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    counts = [len(p[0]) for p in parts]
    overflow = np.repeat(np.array([p[1] for p in parts], np.int64), counts)
    offsets = np.concatenate([body + 8 * np.arange(len(r), dtype=np.int64) for r, _, body in parts])
    d = raw["data"].astype(np.int64)
    valid = (d & 1) == 1
    t = (overflow << 31) | raw["t"].astype(np.int64)
    events = make_events((d >> 17)[valid] & 0x7FFF, (d >> 2)[valid] & 0x7FFF, t[valid], ((d >> 1) & 1)[valid])
    return events, offsets[valid]


def pieces(src: Source, chunk_bytes: Optional[int], sensor_size=(128, 128, 2)) -> tuple:
    """The sensor size and the ``(events, byte offsets)`` pieces of an AEDAT 3.1 recording."""
    lines, pos = read_header(src, b"#", end_line=b"#!END-HEADER")
    if not lines or not lines[0].startswith("#!AER-DAT3"):
        raise EventFormatError(src.path, "not an AEDAT 3.x file: expected a first line '#!AER-DAT3.1'", 0)
    if lines[-1].strip() != "#!END-HEADER":
        raise EventFormatError(src.path, "header has no '#!END-HEADER' line", pos)
    return sensor_size, batched(_packets(src, pos), _flush, chunk_bytes)


def decode_aedat3(data: bytes, path=None, sensor_size=(128, 128, 2), allow_unsorted: bool = False) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 recording held in memory."""
    return decode(pieces, data, path, allow_unsorted, sensor_size=sensor_size)


def read_aedat3(path, sensor_size=(128, 128, 2), allow_unsorted: bool = False) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 recording (DVS128 Gesture's format)."""
    return read(pieces, path, allow_unsorted, sensor_size=sensor_size)


def write_aedat3(path, events: np.ndarray, packet_events: int = 4096, source: int = 1) -> None:
    """Write polarity events as AEDAT 3.1 packets of at most ``packet_events`` events."""
    t = events["t"].astype(np.int64)
    data = ((events["x"].astype(np.int64) << 17) | (events["y"].astype(np.int64) << 2)
            | (events["p"].astype(np.int64) << 1) | 1)
    header = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
              b"#Start-Time: written by spikelab\r\n#!END-HEADER\r\n")
    with open(path, "wb") as f:
        f.write(header)
        for lo in range(0, len(events), packet_events):
            hi = min(lo + packet_events, len(events))
            # one overflow value per packet: split where t >> 31 changes
            for part in np.split(np.arange(lo, hi), np.flatnonzero(np.diff(t[lo:hi] >> 31)) + 1):
                n = len(part)
                head = np.zeros(1, PACKET_HEADER)
                head[0] = (POLARITY, source, 8, 4, int(t[part[0]] >> 31), n, n, n)
                body = np.empty(n, _POLARITY_EVENT)
                body["data"] = data[part]
                body["t"] = t[part] & 0x7FFFFFFF
                f.write(head.tobytes())
                f.write(body.tobytes())


__all__ = ["pieces", "decode_aedat3", "read_aedat3", "write_aedat3"]
