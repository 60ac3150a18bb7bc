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
from typing import Optional

import numpy as np

from spikelab.data.events import EventFormatError, make_events
from spikelab.data.formats._source import Source, decode, read, read_header, records


def _sensor_from_header(lines, default=None):
    text = "\n".join(lines)
    m = re.search(r"width\s*=\s*(\d+).*?height\s*=\s*(\d+)", text) or re.search(r"geometry\s+(\d+)x(\d+)", text)
    if m:
        return int(m.group(1)), int(m.group(2)), 2
    m = re.search(r"height\s*=\s*(\d+).*?width\s*=\s*(\d+)", text)
    if m:
        return int(m.group(2)), int(m.group(1)), 2
    return default


def _raw_header(src: Source):
    """Header lines and data offset of a RAW file (``% end`` closes the header when present)."""
    return read_header(src, b"%", end_line=b"% end")


# ----- DAT -------------------------------------------------------------------------------------

_DAT_EVENT = np.dtype([("t", "<u4"), ("data", "<u4")])


def dat_pieces(src: Source, chunk_bytes: Optional[int], sensor_size=None) -> tuple:
    """The sensor size and the ``(events, byte offsets)`` pieces of a DAT recording."""
    lines, start = read_header(src, b"%")
    version = dat_version(lines)
    if start + 2 > src.size:
        raise EventFormatError(src.path, "truncated before the event type and size bytes", start)
    size = bytes(src.read(start + 1, 1))[0]
    if size != 8:
        raise EventFormatError(src.path, f"event size byte is {size}, expected 8", start + 1)
    body = start + 2

    def gen():
        for block, pos in records(src, body, 8, chunk_bytes):
            raw = np.frombuffer(block, _DAT_EVENT)
            d = raw["data"].astype(np.int64)
            if version >= 2:
                x, y, p = d & 0x3FFF, (d >> 14) & 0x3FFF, (d >> 28) & 0xF
            else:
                x, y, p = d & 0x1FF, (d >> 9) & 0xFF, (d >> 17) & 1
            n = int(np.argmax(p > 1)) if len(p) and p.max() > 1 else len(raw)
            # the events before a bad polarity go out (and are checked) first: they may hold an earlier error
            yield make_events(x[:n], y[:n], raw["t"][:n], p[:n]), pos + 8 * np.arange(n, dtype=np.int64)
            if n < len(raw):
                raise EventFormatError(src.path, f"polarity value {int(p[n])} in event {(pos - body) // 8 + n}, "
                                                 "expected 0 or 1", pos + 8 * n)

    return sensor_size, gen()


def decode_dat(data: bytes, path=None, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of a DAT recording held in memory."""
    return decode(dat_pieces, data, path, allow_unsorted, sensor_size=sensor_size)


def dat_version(lines) -> int:
    for line in lines:
        m = re.match(r"%\s*Version\s+(\d+)", line)
        if m:
            return int(m.group(1))
    return 1


def read_dat(path, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of a Prophesee DAT recording (N-CARS, ATIS datasets)."""
    return read(dat_pieces, path, allow_unsorted, sensor_size=sensor_size)


# ----- EVT 2.0 ---------------------------------------------------------------------------------

EVT2_CD_OFF, EVT2_CD_ON, EVT2_TIME_HIGH = 0x0, 0x1, 0x8


def evt2_pieces(src: Source, chunk_bytes: Optional[int], sensor_size=None) -> tuple:
    """The sensor size (the header's unless given) and the ``(events, byte offsets)`` pieces of
    an EVT 2.0 recording; the time high carries from block to block."""
    lines, start = _raw_header(src)

    def gen():
        high_state = 0
        for block, pos in records(src, start, 4, chunk_bytes, "32-bit word"):
            words = np.frombuffer(block, "<u4").astype(np.int64)
            kind = words >> 28
            # the time high in force at each word: that of the last TIME_HIGH word before it
            last = np.maximum.accumulate(np.where(kind == EVT2_TIME_HIGH, np.arange(len(words)), -1))
            high = np.where(last >= 0, words[np.maximum(last, 0)] & 0x0FFFFFFF, high_state)
            if len(words):
                high_state = int(high[-1])
            cd = (kind == EVT2_CD_OFF) | (kind == EVT2_CD_ON)
            w = words[cd]
            yield (make_events((w >> 11) & 0x7FF, w & 0x7FF, (high[cd] << 6) | ((w >> 22) & 0x3F), kind[cd]),
                   pos + 4 * np.flatnonzero(cd))

    return (sensor_size or _sensor_from_header(lines)), gen()


def decode_evt2(data: bytes, path=None, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of an EVT 2.0 RAW recording held in memory."""
    return decode(evt2_pieces, data, path, allow_unsorted, sensor_size=sensor_size)


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

def evt3_pieces(src: Source, chunk_bytes: Optional[int], sensor_size=None) -> tuple:
    """The sensor size (the header's unless given) and the ``(events, byte offsets)`` pieces of
    an EVT 3.0 recording; the decoder state carries from block to block."""
    from spikelab.kernels.numba.events import evt3_decode

    lines, start = _raw_header(src)

    def gen():
        state = np.zeros(6, np.int64)
        empty = np.zeros(0, np.int64)
        for block, pos in records(src, start, 2, chunk_bytes, "16-bit word"):
            words = np.frombuffer(block, "<u2")
            n = evt3_decode(words, empty, empty, empty, empty, empty, False, state.copy())
            x, y, t, p, word = (np.empty(n, np.int64) for _ in range(5))
            evt3_decode(words, x, y, t, p, word, True, state)
            yield make_events(x, y, t, p), pos + 2 * word

    return (sensor_size or _sensor_from_header(lines)), gen()


def decode_evt3(data: bytes, path=None, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of an EVT 3.0 RAW recording held in memory."""
    return decode(evt3_pieces, data, path, allow_unsorted, sensor_size=sensor_size)


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


def raw_pieces(src: Source, chunk_bytes: Optional[int], sensor_size=None) -> tuple:
    """EVT 2.0 or 3.0 pieces, from the RAW header's ``% evt`` (or ``format``) line."""
    lines, _ = _raw_header(src)
    for line in lines:
        m = re.match(r"%\s*evt\s+([\d.]+)", line)
        if m:
            version = m.group(1)
            if version.startswith("2"):
                return evt2_pieces(src, chunk_bytes, sensor_size)
            if version.startswith("3"):
                return evt3_pieces(src, chunk_bytes, sensor_size)
            raise EventFormatError(src.path, f"EVT {version} is not supported (EVT 2.0 and 3.0 are)", 0)
    fmt = next((line for line in lines if "format" in line), "")
    if "EVT3" in fmt:
        return evt3_pieces(src, chunk_bytes, sensor_size)
    if "EVT2" in fmt:
        return evt2_pieces(src, chunk_bytes, sensor_size)
    raise EventFormatError(src.path, "RAW header names no encoding ('% evt 2.0' or '% evt 3.0' expected)", 0)


def read_prophesee_raw(path, sensor_size=None, allow_unsorted: bool = False) -> np.ndarray:
    """Events of a Prophesee RAW recording; EVT 2.0 or 3.0 from its ``% evt`` header line."""
    return read(raw_pieces, path, allow_unsorted, sensor_size=sensor_size)


__all__ = ["dat_pieces", "decode_dat", "read_dat", "evt2_pieces", "decode_evt2", "write_evt2", "evt3_pieces",
           "decode_evt3", "write_evt3", "raw_pieces", "read_prophesee_raw"]
