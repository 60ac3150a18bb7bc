"""AEDAT 2.0 (jAER): ``#`` header lines, then big-endian (uint32 address, int32 timestamp) pairs.

Address layouts (``camera``):

* ``"dvs128"`` (DVS128, and the CIFAR10-DVS recordings): bit 0 polarity (1 = ON),
  bits 1..7 the mirrored column (x = 127 - field, jAER's orientation), bits 8..14 the row,
  bit 15 an external (sync) event, which is dropped.
* ``"davis240"`` / ``"davis346"`` (DAVIS in jAER): bit 31 set marks APS/IMU samples and
  bit 10 set a special (external input) event, both dropped; bit 11 polarity, bits 12..21
  the mirrored column, bits 22..30 the row.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from spikelab.data.events import EventFormatError, make_events
from spikelab.data.formats._source import Source, decode, read, read_header, records

RECORD = 8
CAMERAS = {"dvs128": (128, 128), "davis240": (240, 180), "davis346": (346, 260)}
_PAIR = np.dtype([("address", ">u4"), ("t", ">i4")])


def _decode_addresses(address: np.ndarray, camera: str):
    a = address.astype(np.int64)
    if camera == "dvs128":
        keep = (a >> 15) & 1 == 0
        x = 127 - ((a >> 1) & 0x7F)
        y = (a >> 8) & 0x7F
        p = a & 1
    else:
        width = CAMERAS[camera][0]
        keep = ((a >> 31) & 1 == 0) & ((a >> 10) & 1 == 0)  # neither APS/IMU nor special
        x = (width - 1) - ((a >> 12) & 0x3FF)
        y = (a >> 22) & 0x1FF
        p = (a >> 11) & 1
    return keep, x, y, p


def pieces(src: Source, chunk_bytes: Optional[int], camera: str = "dvs128", sensor_size=None) -> tuple:
    """The sensor size (the camera's unless given) and the ``(events, byte offsets)`` pieces."""
    if camera not in CAMERAS:
        raise ValueError(f"camera: expected one of {sorted(CAMERAS)}, got {camera!r}")
    lines, start = read_header(src, b"#")
    if not lines or not lines[0].startswith("#!AER-DAT2"):
        raise EventFormatError(src.path, "not an AEDAT 2.0 file: expected a first line '#!AER-DAT2.0'", 0)

    def gen():
        for block, pos in records(src, start, RECORD, chunk_bytes):
            pairs = np.frombuffer(block, dtype=_PAIR)
            keep, x, y, p = _decode_addresses(pairs["address"], camera)
            yield (make_events(x[keep], y[keep], pairs["t"][keep].astype(np.int64), p[keep]),
                   pos + RECORD * np.flatnonzero(keep))

    return (sensor_size or CAMERAS[camera]), gen()


def decode_aedat2(data: bytes, path=None, camera: str = "dvs128", allow_unsorted: bool = False,
                  sensor_size=None) -> np.ndarray:
    """Events of an AEDAT 2.0 recording held in memory."""
    return decode(pieces, data, path, allow_unsorted, camera=camera, sensor_size=sensor_size)


def read_aedat2(path, camera: str = "dvs128", allow_unsorted: bool = False, sensor_size=None) -> np.ndarray:
    """Events of a jAER AEDAT 2.0 recording."""
    return read(pieces, path, allow_unsorted, camera=camera, sensor_size=sensor_size)


def write_aedat2(path, events: np.ndarray, camera: str = "dvs128") -> None:
    """Write DVS128 (or DAVIS) events as AEDAT 2.0."""
    x, y, p = (events[k].astype(np.int64) for k in ("x", "y", "p"))
    if camera == "dvs128":
        address = ((127 - x) << 1) | (y << 8) | p
    else:
        address = (((CAMERAS[camera][0] - 1) - x) << 12) | (y << 22) | (p << 11)
    pairs = np.empty(len(events), dtype=_PAIR)
    pairs["address"] = address
    pairs["t"] = events["t"]
    header = (b"#!AER-DAT2.0\r\n# This is a raw AE data file created by spikelab\r\n"
              b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
              b"# Timestamps tick is 1 us\r\n")
    with open(path, "wb") as f:
        f.write(header)
        f.write(pairs.tobytes())


__all__ = ["pieces", "decode_aedat2", "read_aedat2", "write_aedat2"]
