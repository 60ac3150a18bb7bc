"""Prophesee recordings: DAT (``.dat``) and RAW with EVT 2.0 or EVT 3.0 encoding (``.raw``).

All start with ``%`` header lines (``% end`` closes the header of recent RAW files).

* DAT: after the header, one byte event type and one byte event size (8), then pairs of
  little-endian uint32 (timestamp, data). Version 2 data: x bits 0..13, y bits 14..27,
  polarity bits 28..31; version 1: x bits 0..8, y bits 9..16, polarity bit 17.
* EVT 2.0: 32-bit words, the type in bits 28..31: CD_OFF (0) and CD_ON (1) carry
  x (bits 11..21), y (bits 0..10) and the low 6 bits of the timestamp (bits 22..27);
  EV_TIME_HIGH (8) carries timestamp bits 6..33. Other types are skipped.
* EVT 3.0: 16-bit words decoded statefully (``kernels/numba/events.py``); timestamps are
  ``(TIME_HIGH << 12) | TIME_LOW`` (plus 2**24 us per wrap of the 12-bit time high).
"""

from __future__ import annotations

import re

import numpy as np

from spikelab.data.events import EventFormatError, check_events, make_events
from spikelab.data.formats._header import read_bytes, split_header


def _sensor_from_header(lines, default=None):
    text = "\n".join(lines)
    m = re.search(r"width\s*=\s*(\d+).*?height\s*=\s*(\d+)", text) or re.search(r"geometry\s+(\d+)x(\d+)", text)
    if m:
        return int(m.group(1)), int(m.group(2)), 2
    m = re.search(r"height\s*=\s*(\d+).*?width\s*=\s*(\d+)", text)
    if m:
        return int(m.group(2)), int(m.group(1)), 2
    return default


def _raw_header(data: bytes, path):
    lines, start = split_header(data, b"%", path)
    return lines, start


# ----- DAT -------------------------------------------------------------------------------------

_DAT_EVENT = np.dtype([("t", "<u4"), ("data", "<u4")])


def decode_dat(data: bytes, path=None, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    lines, start = _raw_header(data, path)
    version = dat_version(lines)
    if start + 2 > len(data):
        raise EventFormatError(path, "truncated before the event type and size bytes", start)
    size = data[start + 1]
    if size != 8:
        raise EventFormatError(path, f"event size byte is {size}, expected 8", start + 1)
    body = start + 2
    if (len(data) - body) % 8:
        raise EventFormatError(path, "the last event is truncated", len(data) - (len(data) - body) % 8)
    events, offsets = decode_dat_records(data[body:], version, body, path)
    return check_events(events, path, sensor_size, offsets, allow_unsorted)


def decode_dat_records(body: bytes, version: int, base: int = 0, path=None):
    """Decode whole 8-byte DAT records: ``(events, byte offsets)``."""
    raw = np.frombuffer(body, _DAT_EVENT)
    d = raw["data"].astype(np.int64)
    if version >= 2:
        x, y, p = d & 0x3FFF, (d >> 14) & 0x3FFF, (d >> 28) & 0xF
    else:
        x, y, p = d & 0x1FF, (d >> 9) & 0xFF, (d >> 17) & 1
    if len(p) and p.max() > 1:
        i = int(np.argmax(p > 1))
        raise EventFormatError(path, f"polarity value {int(p[i])} in event {i}, expected 0 or 1", base + 8 * i)
    return make_events(x, y, raw["t"].astype(np.int64), p), base + 8 * np.arange(len(raw))


def dat_version(lines) -> int:
    for line in lines:
        m = re.match(r"%\s*Version\s+(\d+)", line)
        if m:
            return int(m.group(1))
    return 1


def read_dat(path, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of a Prophesee DAT recording (N-CARS, ATIS datasets)."""
    return decode_dat(read_bytes(path), path, sensor_size, allow_unsorted)


# ----- EVT 2.0 ---------------------------------------------------------------------------------

EVT2_CD_OFF, EVT2_CD_ON, EVT2_TIME_HIGH = 0x0, 0x1, 0x8


def decode_evt2(data: bytes, path=None, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    lines, start = _raw_header(data, path)
    if (len(data) - start) % 4:
        raise EventFormatError(path, "data is not a whole number of 32-bit words (truncated?)",
                               len(data) - (len(data) - start) % 4)
    words = np.frombuffer(data, "<u4", offset=start).astype(np.int64)
    kind = words >> 28
    is_high = kind == EVT2_TIME_HIGH
    # the time high in force at each word: that of the last TIME_HIGH word before it
    last_high = np.maximum.accumulate(np.where(is_high, np.arange(len(words)), -1))
    high = np.where(last_high >= 0, words[np.maximum(last_high, 0)] & 0x0FFFFFFF, 0)
    cd = (kind == EVT2_CD_OFF) | (kind == EVT2_CD_ON)
    w = words[cd]
    t = (high[cd] << 6) | ((w >> 22) & 0x3F)
    events = make_events((w >> 11) & 0x7FF, w & 0x7FF, t, kind[cd])
    sensor = sensor_size or _sensor_from_header(lines)
    return check_events(events, path, sensor, start + 4 * np.flatnonzero(cd), allow_unsorted)


def write_evt2(path, events: np.ndarray, sensor_size=(640, 480, 2)) -> None:
    """Write CD events as EVT 2.0 (a TIME_HIGH word wherever bits 6.. of the time change)."""
    t = events["t"].astype(np.int64)
    high = t >> 6
    starts = np.flatnonzero(np.concatenate([[True], np.diff(high) != 0])) if len(t) else np.zeros(0, int)
    cd = ((events["p"].astype(np.int64) << 28) | ((t & 0x3F) << 22)
          | (events["x"].astype(np.int64) << 11) | events["y"].astype(np.int64))
    out = np.empty(len(t) + len(starts), np.int64)
    at = np.arange(len(t)) + np.searchsorted(starts, np.arange(len(t)), side="right")
    out[at] = cd
    out[at[starts] - 1] = (EVT2_TIME_HIGH << 28) | (high[starts] & 0x0FFFFFFF)
    header = (f"% evt 2.0\n% format EVT2;height={sensor_size[1]};width={sensor_size[0]}\n"
              f"% geometry {sensor_size[0]}x{sensor_size[1]}\n% end\n").encode()
    with open(path, "wb") as f:
        f.write(header)
        f.write(out.astype("<u4").tobytes())


# ----- EVT 3.0 ---------------------------------------------------------------------------------

def decode_evt3(data: bytes, path=None, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    from spikelab.kernels.numba.events import evt3_decode

    lines, start = _raw_header(data, path)
    if (len(data) - start) % 2:
        raise EventFormatError(path, "data is not a whole number of 16-bit words (truncated?)", len(data) - 1)
    words = np.frombuffer(data, "<u2", offset=start)
    state = np.zeros(6, np.int64)
    empty = np.zeros(0, np.int64)
    n = evt3_decode(words, empty, empty, empty, empty, empty, False, state.copy())
    x, y, t, p, word = (np.empty(n, np.int64) for _ in range(5))
    evt3_decode(words, x, y, t, p, word, True, state)
    sensor = sensor_size or _sensor_from_header(lines)
    return check_events(make_events(x, y, t, p), path, sensor, start + 2 * word, allow_unsorted)


def write_evt3(path, events: np.ndarray, sensor_size=(1280, 720, 2)) -> None:
    """Write CD events as EVT 3.0 (time high/low, row and single-column words)."""
    t = events["t"].astype(np.int64)
    if len(t) and (t >> 24).max() > 0:
        raise ValueError(f"{path}: this writer covers timestamps below 2**24 us")
    x, y, p = (events[k].astype(np.int64) for k in ("x", "y", "p"))
    words = np.empty((len(t), 4), np.int64)
    words[:, 0] = (0x8 << 12) | ((t >> 12) & 0xFFF)  # TIME_HIGH
    words[:, 1] = (0x6 << 12) | (t & 0xFFF)  # TIME_LOW
    words[:, 2] = (0x0 << 12) | (y & 0x7FF)  # ADDR_Y
    words[:, 3] = (0x2 << 12) | (p << 11) | (x & 0x7FF)  # ADDR_X
    header = (f"% evt 3.0\n% format EVT3;height={sensor_size[1]};width={sensor_size[0]}\n"
              f"% geometry {sensor_size[0]}x{sensor_size[1]}\n% end\n").encode()
    with open(path, "wb") as f:
        f.write(header)
        f.write(words.reshape(-1).astype("<u2").tobytes())


def read_prophesee_raw(path, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of a Prophesee RAW recording; EVT 2.0 or 3.0 from its ``% evt`` header line."""
    data = read_bytes(path)
    lines, _ = _raw_header(data, path)
    for line in lines:
        m = re.match(r"%\s*evt\s+([\d.]+)", line)
        if m:
            version = m.group(1)
            if version.startswith("2"):
                return decode_evt2(data, path, sensor_size, allow_unsorted)
            if version.startswith("3"):
                return decode_evt3(data, path, sensor_size, allow_unsorted)
            raise EventFormatError(path, f"EVT {version} is not supported (EVT 2.0 and 3.0 are)", 0)
    fmt = next((l for l in lines if "format" in l), "")
    if "EVT3" in fmt:
        return decode_evt3(data, path, sensor_size, allow_unsorted)
    if "EVT2" in fmt:
        return decode_evt2(data, path, sensor_size, allow_unsorted)
    raise EventFormatError(path, "RAW header names no encoding ('% evt 2.0' or '% evt 3.0' expected)", 0)
