"""Streaming readers for recordings larger than memory: chunks of events, or fixed time windows.

The file is read ``chunk_bytes`` at a time; decoders that carry state (ATIS overflow count,
EVT 2.0 time high, EVT 3.0 row/column/time words) keep it from one chunk to the next, and
packet formats (AEDAT 3.1, 4.0) are read packet by packet. Ordering and coordinate checks
run on every chunk and across chunk boundaries, naming the byte offset like the whole-file
readers do.
"""

from __future__ import annotations

import struct
from typing import Iterator, Optional

import numpy as np

from spikelab.data.events import EVENT_DTYPE, EventFormatError, check_events, make_events
from spikelab.data.formats import aedat2, aedat3, aedat4, atis, prophesee
from spikelab.data.formats._header import split_header
from spikelab.data.io import detect_format

DEFAULT_CHUNK = 16 << 20


def _header_end(path, marker: bytes, end_line: Optional[bytes] = None, probe: int = 1 << 20):
    with open(path, "rb") as f:
        head = f.read(probe)
    return split_header(head, marker, path, end_line)


def _fixed_records(path, start: int, record: int, chunk_bytes: int):
    """(block bytes, byte offset of the block) of whole records; refuses a truncated tail."""
    step = max(record, chunk_bytes // record * record)
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while True:
            block = f.read(step)
            if not block:
                return
            if len(block) % record:
                raise EventFormatError(path, "the last event is truncated", pos + len(block) - len(block) % record)
            yield block, pos
            pos += len(block)


def _atis_chunks(path, chunk_bytes, **_):
    wraps = 0
    for block, pos in _fixed_records(path, 0, atis.RECORD, chunk_bytes):
        events, offsets, wraps = atis.decode_records(block, pos, wraps)
        yield events, offsets


def _aedat2_chunks(path, chunk_bytes, camera: str = "dvs128", **_):
    lines, start = _header_end(path, b"#")
    if not lines or not lines[0].startswith("#!AER-DAT2"):
        raise EventFormatError(path, "not an AEDAT 2.0 file: expected a first line '#!AER-DAT2.0'", 0)
    for block, pos in _fixed_records(path, start, aedat2.RECORD, chunk_bytes):
        pairs = np.frombuffer(block, dtype=aedat2._PAIR)
        keep, x, y, p = aedat2._decode_addresses(pairs["address"], camera)
        yield (make_events(x[keep], y[keep], pairs["t"][keep].astype(np.int64), p[keep]),
               pos + aedat2.RECORD * np.flatnonzero(keep))


def _dat_chunks(path, chunk_bytes, **_):
    lines, start = _header_end(path, b"%")
    with open(path, "rb") as f:
        prophesee.decode_dat(f.read(start + 2), path)  # the header, type and size bytes, checked
    version = prophesee.dat_version(lines)
    for block, pos in _fixed_records(path, start + 2, 8, chunk_bytes):
        yield prophesee.decode_dat_records(block, version, pos, path)


def _evt2_chunks(path, chunk_bytes, **_):
    lines, start = _header_end(path, b"%")
    high_state = 0
    for block, pos in _fixed_records(path, start, 4, chunk_bytes):
        words = np.frombuffer(block, "<u4").astype(np.int64)
        kind = words >> 28
        last = np.maximum.accumulate(np.where(kind == prophesee.EVT2_TIME_HIGH, np.arange(len(words)), -1))
        high = np.where(last >= 0, words[np.maximum(last, 0)] & 0x0FFFFFFF, high_state)
        if len(words):
            high_state = int(high[-1])
        cd = (kind == prophesee.EVT2_CD_OFF) | (kind == prophesee.EVT2_CD_ON)
        w = words[cd]
        yield (make_events((w >> 11) & 0x7FF, w & 0x7FF, (high[cd] << 6) | ((w >> 22) & 0x3F), kind[cd]),
               pos + 4 * np.flatnonzero(cd))


def _evt3_chunks(path, chunk_bytes, **_):
    from spikelab.kernels.numba.events import evt3_decode

    lines, start = _header_end(path, b"%")
    state = np.zeros(6, np.int64)
    empty = np.zeros(0, np.int64)
    for block, pos in _fixed_records(path, start, 2, chunk_bytes):
        words = np.frombuffer(block, "<u2")
        n = evt3_decode(words, empty, empty, empty, empty, empty, False, state.copy())
        x, y, t, p, word = (np.empty(n, np.int64) for _ in range(5))
        evt3_decode(words, x, y, t, p, word, True, state)
        yield make_events(x, y, t, p), pos + 2 * word


def _packets(f, path, pos: int, header_size: int, parse, stop: Optional[int] = None):
    """Packet by packet: ``parse(header bytes, pos)`` gives the body length; yields (header, body, pos)
    until the end of the file (or the byte offset ``stop``)."""
    while stop is None or pos < stop:
        head = f.read(header_size)
        if not head:
            return
        if len(head) < header_size:
            raise EventFormatError(path, f"truncated packet header ({len(head)} of {header_size} bytes)", pos)
        size = parse(head, pos)
        body = f.read(size)
        if len(body) < size:
            raise EventFormatError(path, f"packet of {size} bytes runs past the end of the file", pos)
        yield head, body, pos
        pos += header_size + size


def _aedat3_chunks(path, chunk_bytes, sensor_size=(128, 128, 2), **_):
    lines, start = _header_end(path, b"#", end_line=b"#!END-HEADER")
    prefix = "\r\n".join(lines).encode() + b"\r\n"

    def parse(head, pos):
        h = np.frombuffer(head, aedat3.PACKET_HEADER)[0]
        if int(h["size"]) <= 0 or int(h["capacity"]) < 0 or int(h["number"]) > int(h["capacity"]):
            raise EventFormatError(path, "corrupt packet header", pos)
        return int(h["size"]) * int(h["capacity"])

    with open(path, "rb") as f:
        f.seek(start)
        pending, size = [], 0
        for head, body, pos in _packets(f, path, start, aedat3.PACKET_HEADER.itemsize, parse):
            pending.append(head + body)
            size += len(head) + len(body)
            if size >= chunk_bytes:
                yield aedat3.decode_aedat3(prefix + b"".join(pending), path, sensor_size), None
                pending, size = [], 0
        if pending:
            yield aedat3.decode_aedat3(prefix + b"".join(pending), path, sensor_size), None


def _aedat4_chunks(path, chunk_bytes, **_):
    with open(path, "rb") as f:
        magic = f.read(len(aedat4.MAGIC))
        if magic != aedat4.MAGIC:
            raise EventFormatError(path, "not an AEDAT 4.0 file: expected '#!AER-DAT4.0'", 0)
        raw_size = f.read(4)
        if len(raw_size) < 4:
            raise EventFormatError(path, "truncated before the header size", len(magic))
        header = f.read(struct.unpack("<i", raw_size)[0])
        prefix = magic + raw_size + header
        if header[4:8] != b"IOHE":
            raise EventFormatError(path, "header is not an IOHE FlatBuffer", len(magic) + 4)
        table = aedat4._FlatTable(header, struct.unpack_from("<I", header, 0)[0], path, len(magic) + 4)
        data_table = table.scalar(1, "<q", -1)  # the file's index at the end is not a packet
        pending, size = [], 0
        for head, body, pos in _packets(f, path, len(prefix), 8, lambda h, p: max(struct.unpack("<ii", h)[1], 0),
                                        stop=data_table if data_table > 0 else None):
            pending.append(head + body)
            size += len(head) + len(body)
            if size >= chunk_bytes:
                yield aedat4.decode_aedat4(prefix + b"".join(pending), path), None
                pending, size = [], 0
        if pending:
            yield aedat4.decode_aedat4(prefix + b"".join(pending), path), None


_STREAMS = {"atis": _atis_chunks, "aedat2": _aedat2_chunks, "aedat3": _aedat3_chunks, "aedat4": _aedat4_chunks,
            "dat": _dat_chunks, "evt2": _evt2_chunks, "evt3": _evt3_chunks}


def _raw_kind(path) -> str:
    lines, _ = _header_end(path, b"%", probe=1 << 16)
    text = "\n".join(lines)
    if "evt 3" in text or "EVT3" in text:
        return "evt3"
    if "evt 2" in text or "EVT2" in text:
        return "evt2"
    raise EventFormatError(path, "RAW header names no encoding ('% evt 2.0' or '% evt 3.0' expected)", 0)


def iter_chunks(path, format: Optional[str] = None, chunk_bytes: int = DEFAULT_CHUNK, sensor_size=None,
                **options) -> Iterator[np.ndarray]:
    """Events of ``path`` in file order, about ``chunk_bytes`` of the file at a time."""
    fmt = format or detect_format(path)
    if fmt == "prophesee_raw":
        fmt = _raw_kind(path)
    if fmt not in _STREAMS:
        raise ValueError(f"format: streaming covers {sorted(_STREAMS)}, got {fmt!r} (SHD files are per-sample)")
    last_t = None
    for events, offsets in _STREAMS[fmt](path, chunk_bytes, **options):
        events = check_events(events, path, sensor_size, offsets)
        if len(events):
            if last_t is not None and events["t"][0] < last_t:
                where = None if offsets is None else int(offsets[0])
                raise EventFormatError(path, f"timestamps decrease across chunks ({last_t} -> {events['t'][0]} us)",
                                       where)
            last_t = events["t"][-1]
        yield events


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
