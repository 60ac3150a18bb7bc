"""AEDAT 3.1 (cAER; DVS128 Gesture): ``#`` header ending with ``#!END-HEADER``, then packets.

Each packet: a 28-byte little-endian header (int16 type, int16 source, int32 event size,
int32 timestamp offset, int32 timestamp overflow, int32 capacity, int32 number, int32
valid), then ``capacity * size`` bytes. Polarity events (type 1, 8 bytes): uint32 data
(bit 0 valid, bit 1 polarity, bits 2..16 y, bits 17..31 x) and int32 timestamp; the full
timestamp is ``overflow << 31 | timestamp``. Other packet types are skipped, invalid
events dropped.
"""

from __future__ import annotations

import numpy as np

from spikelab.data.events import EventFormatError, check_events, make_events
from spikelab.data.formats._header import read_bytes, split_header

PACKET_HEADER = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"),
                          ("ts_overflow", "<i4"), ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")])
POLARITY = 1
_POLARITY_EVENT = np.dtype([("data", "<u4"), ("t", "<i4")])


def decode_aedat3(data: bytes, path=None, sensor_size=(128, 128, 2), allow_unsorted: bool = False) -> np.ndarray:
    lines, pos = split_header(data, b"#", path, end_line=b"#!END-HEADER")
    if not lines or not lines[0].startswith("#!AER-DAT3"):
        raise EventFormatError(path, "not an AEDAT 3.x file: expected a first line '#!AER-DAT3.1'", 0)
    if lines[-1].strip() != "#!END-HEADER":
        raise EventFormatError(path, "header has no '#!END-HEADER' line", pos)
    chunks, offsets = [], []
    hsize = PACKET_HEADER.itemsize
    while pos < len(data):
        if pos + hsize > len(data):
            raise EventFormatError(path, f"truncated packet header ({len(data) - pos} of {hsize} bytes)", pos)
        head = np.frombuffer(data, PACKET_HEADER, count=1, offset=pos)[0]
        size, capacity = int(head["size"]), int(head["capacity"])
        if size <= 0 or capacity < 0 or int(head["number"]) > capacity:
            raise EventFormatError(path, f"corrupt packet header (event size {size}, capacity {capacity}, "
                                         f"number {int(head['number'])})", pos)
        body = pos + hsize
        end = body + size * capacity
        if end > len(data):
            raise EventFormatError(path, f"packet of {size * capacity} bytes runs past the end of the file", pos)
        if int(head["type"]) == POLARITY:
            if size != _POLARITY_EVENT.itemsize:
                raise EventFormatError(path, f"polarity packet with event size {size}, expected 8", pos)
            number = int(head["number"])
            ev = np.frombuffer(data, _POLARITY_EVENT, count=number, offset=body)
            chunks.append((ev, int(head["ts_overflow"])))
            offsets.append(body + 8 * np.arange(number))
        pos = end
    if not chunks:
        return check_events(make_events([], [], [], []), path)
    raw = np.concatenate([c[0] for c in chunks])
    overflow = np.concatenate([np.full(len(c[0]), c[1], dtype=np.int64) for c in chunks])
    d = raw["data"].astype(np.int64)
    valid = (d & 1) == 1
    t = (overflow << 31) | raw["t"].astype(np.int64)
    events = make_events((d >> 17)[valid] & 0x7FFF, (d >> 2)[valid] & 0x7FFF, t[valid], ((d >> 1) & 1)[valid])
    return check_events(events, path, sensor_size, np.concatenate(offsets)[valid], allow_unsorted)


def read_aedat3(path, sensor_size=(128, 128, 2), allow_unsorted: bool = False) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 recording (DVS128 Gesture's format)."""
    return decode_aedat3(read_bytes(path), path, sensor_size, allow_unsorted)


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
