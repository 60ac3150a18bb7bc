"""AEDAT 4.0 (DV): ``#!AER-DAT4.0``, a FlatBuffers ``IOHE`` header, then packets.

Each packet is ``int32 stream id, int32 size`` and a (LZ4-frame or Zstandard compressed,
per the header) size-prefixed FlatBuffer whose identifier names its content. Only event
packets (``EVTS``: a vector of 16-byte structs int64 t, int16 x, int16 y, bool on) are
decoded; frames, IMU samples and triggers are skipped. The sensor size comes from the
header's XML description of the event stream. Timestamps are as stored (absolute Unix
microseconds for DV recordings).
"""

from __future__ import annotations

import os
import struct
import xml.etree.ElementTree as ET
from typing import Optional

import numpy as np

from spikelab.data.events import EventFormatError, make_events
from spikelab.data.formats._source import Source, batched, decode, read

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSION = {0: "none", 1: "lz4", 2: "lz4", 3: "zstd", 4: "zstd"}
_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("_pad", "V3")])

MAX_PACKET_BYTES = 1 << 30
"""Default bound on one packet's decompressed size (``max_packet_bytes=`` or the
``SPIKELAB_MAX_PACKET_BYTES`` environment variable override it)."""
MAX_PACKET_ENV = "SPIKELAB_MAX_PACKET_BYTES"
_STEP = 1 << 20  # decompressed bytes asked of the codec at a time


def packet_limit(max_packet_bytes: Optional[int] = None) -> int:
    """The decompressed-size bound per packet: the argument, else the environment variable,
    else :data:`MAX_PACKET_BYTES`."""
    value, source = max_packet_bytes, "max_packet_bytes"
    if value is None and os.environ.get(MAX_PACKET_ENV):
        value, source = os.environ[MAX_PACKET_ENV], MAX_PACKET_ENV
    if value is None:
        return int(MAX_PACKET_BYTES)
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if limit <= 0:
        raise ValueError(f"{source}: expected a positive number of bytes, got {value!r}")
    return limit


class _FlatTable:
    """Just enough FlatBuffers to read scalar, string and vector fields of the root table whose
    offset is stored at ``root_at``; every read is bounds-checked (errors name ``where``, the
    buffer's offset in the file, and ``what`` it is)."""

    def __init__(self, buf, root_at: int, path, where: int, what: str):
        self.buf, self.path, self.where, self.what = buf, path, where, what
        self.pos = root_at + self.get("<I", root_at)
        self.vtable = self.pos - self.get("<i", self.pos)
        self.vt_size = self.get("<H", self.vtable)

    def get(self, fmt: str, at: int):
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.buf):
            raise EventFormatError(self.path, f"corrupt FlatBuffer in the {self.what}: a field at byte {at} lies "
                                              f"outside its {len(self.buf)} bytes", self.where)
        return struct.unpack_from(fmt, self.buf, at)[0]

    def _field(self, index: int) -> Optional[int]:
        entry = 4 + 2 * index
        if entry + 2 > self.vt_size:
            return None
        off = self.get("<H", self.vtable + entry)
        return self.pos + off if off else None

    def scalar(self, index: int, fmt: str, default):
        at = self._field(index)
        return default if at is None else self.get(fmt, at)

    def indirect(self, index: int) -> Optional[int]:
        at = self._field(index)
        return None if at is None else at + self.get("<I", at)

    def string(self, index: int) -> str:
        at = self.indirect(index)
        if at is None:
            return ""
        n = self.get("<I", at)
        if at + 4 + n > len(self.buf):
            raise EventFormatError(self.path, f"corrupt FlatBuffer in the {self.what}: a string of {n} bytes at "
                                              f"byte {at} overruns it", self.where)
        return bytes(self.buf[at + 4:at + 4 + n]).decode("utf-8", "replace")


def _puller(body, compression: str, path, offset: int, limit: int):
    """``pull(n)``: up to ``n`` more decompressed bytes of ``body`` (b"" at the end of the frame)."""
    if compression == "none":
        once = [body]
        return lambda n: once.pop() if once else b""
    if compression == "lz4":
        import lz4.frame

        declared = lz4.frame.get_frame_info(body).get("content_size", 0)
        decompressor, pending = lz4.frame.LZ4FrameDecompressor(), [body]

        def pull(n: int) -> bytes:
            if decompressor.eof:
                if decompressor.unused_data:
                    raise EventFormatError(path, f"{len(decompressor.unused_data)} bytes follow the lz4 frame in "
                                                 "the packet", offset)
                return b""
            piece = decompressor.decompress(pending.pop() if pending else b"", max_length=n)
            if not piece and not decompressor.eof:
                raise EventFormatError(path, "corrupt lz4 packet (the frame is truncated)", offset)
            return piece
    else:
        import zstandard

        declared = zstandard.frame_content_size(body)
        # a later frame in the packet is read by the next call, and refused as excess
        pull = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=False).read
    if declared > limit:
        raise EventFormatError(path, f"{compression} packet declares {declared} decompressed bytes, above the limit "
                                     f"of {limit} per packet (raise it with max_packet_bytes= or {MAX_PACKET_ENV})",
                               offset)
    return pull


def _inflate(body, compression: str, path, offset: int, limit: int):
    """The packet's size-prefixed FlatBuffer, decompressed a step at a time, never past what
    its size prefix declares nor past ``limit`` bytes; its size must be the declared one."""
    parts, total, bound, declared = [], 0, limit, None
    try:
        pull = _puller(body, compression, path, offset, limit)
        while True:
            piece = pull(min(bound + 1 - total, _STEP))
            if not piece:
                break
            parts.append(piece)
            total += len(piece)
            if declared is None and total >= 4:
                declared = 4 + int.from_bytes(bytes(parts[0][:4] if len(parts[0]) >= 4 else b"".join(parts)[:4]),
                                              "little")
                if declared > limit:
                    raise EventFormatError(path, f"packet's FlatBuffer size prefix declares {declared} bytes, above "
                                                 f"the limit of {limit} per packet (raise it with max_packet_bytes= "
                                                 f"or {MAX_PACKET_ENV})", offset)
                bound = declared
            if total > bound:
                what = "the limit of" if declared is None else "the size its FlatBuffer prefix declares,"
                raise EventFormatError(path, f"{compression} packet decompresses to more than {what} {bound} bytes",
                                       offset)
    except ImportError as err:
        raise ImportError(f"{path}: reading {compression}-compressed AEDAT 4 needs the '{err.name}' package") from None
    except EventFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - any codec failure is a corrupt packet
        raise EventFormatError(path, f"corrupt {compression} packet ({err})", offset) from None
    if declared is None or total != declared:
        raise EventFormatError(path, f"packet holds {total} bytes of FlatBuffer but its size prefix declares "
                                     f"{declared if declared is not None else 'at least 4'} (truncated?)", offset)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _event_stream(info: str):
    """(stream id, (width, height, 2), all stream ids) of the streams described in the header XML."""
    try:
        root = ET.fromstring(info)
    except ET.ParseError:
        return None, None, None
    ids, stream, size = set(), None, None
    for node in root.iter("node"):
        attrs = {a.get("key"): a.text for a in node.findall("attr")}
        name = node.get("name")
        if "typeIdentifier" not in attrs or not (name and name.isdigit()):
            continue
        ids.add(int(name))
        if attrs.get("typeIdentifier") == "EVTS" and stream is None:
            stream = int(name)
            for sub in node.iter("node"):
                sub_attrs = {a.get("key"): a.text for a in sub.findall("attr")}
                if "sizeX" in sub_attrs and "sizeY" in sub_attrs:
                    try:
                        size = (int(sub_attrs["sizeX"]), int(sub_attrs["sizeY"]), 2)
                    except (TypeError, ValueError):
                        size = None
    return stream, size, (ids or None)


def _packets(src: Source, pos: int, end: int, compression: str, stream_id, ids, limit: int):
    """``((event vector bytes, packet's byte offset), packet bytes in the file)`` for each event
    packet from ``pos`` to ``end``; refuses packets that do not fit or are not what the header
    declares."""
    path = src.path
    while pos < end:
        if pos + 8 > end:
            raise EventFormatError(path, f"truncated packet header ({end - pos} of 8 bytes)", pos)
        sid, nbytes = struct.unpack("<ii", src.read(pos, 8))
        if not 0 <= nbytes <= end - pos - 8:
            raise EventFormatError(path, f"packet size {nbytes} runs past the end of the data; expected "
                                         f"0..{end - pos - 8}", pos)
        if ids is not None and sid not in ids:
            raise EventFormatError(path, f"packet of stream {sid}, which the header does not declare (streams "
                                         f"{sorted(ids)})", pos)
        if stream_id is None or sid == stream_id:
            buf = _inflate(src.read(pos + 8, nbytes), compression, path, pos, limit)
            ident = bytes(buf[8:12])
            if ident == b"EVTS":
                packet = _FlatTable(buf, 4, path, pos, "event packet")
                vec = packet.indirect(0)
                if vec is not None:
                    count = packet.get("<I", vec)
                    if vec + 4 + count * _EVENT.itemsize > len(buf):
                        raise EventFormatError(path, f"event vector of {count} events overruns its packet", pos)
                    # a copy of the vector's bytes: holds on to no decompressed buffer
                    yield (bytes(memoryview(buf)[vec + 4:vec + 4 + count * _EVENT.itemsize]), pos), 8 + nbytes
            elif stream_id is not None:
                raise EventFormatError(path, f"packet of the event stream {sid} holds a {ident!r} FlatBuffer, "
                                             "expected b'EVTS'", pos)
        pos += 8 + nbytes


def _flush(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Events and byte offsets (each event's packet) of event-vector bytes."""
    raw = np.frombuffer(parts[0][0] if len(parts) == 1 else b"".join(p[0] for p in parts), _EVENT)
    counts = [len(p[0]) // _EVENT.itemsize for p in parts]
    offsets = np.repeat(np.array([p[1] for p in parts], np.int64), counts)
    return make_events(raw["x"], raw["y"], raw["t"], raw["on"]), offsets


def pieces(src: Source, chunk_bytes: Optional[int], sensor_size=None, max_packet_bytes: Optional[int] = None) -> tuple:
    """The sensor size (the header's unless given) and the ``(events, byte offsets)`` pieces."""
    path = src.path
    limit = packet_limit(max_packet_bytes)
    if bytes(src.read(0, len(MAGIC))) != MAGIC:
        raise EventFormatError(path, "not an AEDAT 4.0 file: expected '#!AER-DAT4.0'", 0)
    pos = len(MAGIC)
    if pos + 4 > src.size:
        raise EventFormatError(path, "truncated before the header size", pos)
    size = struct.unpack("<i", src.read(pos, 4))[0]
    start = pos + 4
    if not 8 < size <= src.size - start:
        raise EventFormatError(path, f"header size {size} does not fit the file; expected 9..{src.size - start}", pos)
    header = bytes(src.read(start, size))
    if header[4:8] != b"IOHE":
        raise EventFormatError(path, "header is not an IOHE FlatBuffer", start)
    table = _FlatTable(header, 0, path, start, "file header")
    code = table.scalar(0, "<i", 0)
    compression = COMPRESSION.get(code)
    if compression is None:
        raise EventFormatError(path, f"unknown compression type {code}; expected one of {sorted(COMPRESSION)}", start)
    data_table = table.scalar(1, "<q", -1)
    info, at = table.string(2), table.indirect(2)
    # a FlatBuffer is built back to front: its first object (the XML string) ends it, followed by
    # at most 7 bytes of alignment; a header size reaching further hides packets
    extent = max(table.vtable + table.vt_size, table.pos + table.get("<H", table.vtable + 2),
                 0 if at is None else at + 4 + table.get("<I", at) + 1)
    if not 0 <= size - extent < 8:
        raise EventFormatError(path, f"header size {size} does not match the header FlatBuffer ({extent} bytes); "
                                     f"expected {extent}..{extent + 7}", pos)
    stream_id, header_sensor, ids = _event_stream(info)
    first = start + size
    if 0 < data_table < first:
        raise EventFormatError(path, f"data table position {data_table} lies inside the header; expected "
                                     f"{first}..{src.size} (or -1 for none)", start)
    end = data_table if 0 < data_table <= src.size else src.size  # the file's index at the end is not a packet
    parts = _packets(src, first, end, compression, stream_id, ids, limit)
    return (sensor_size or header_sensor), batched(parts, _flush, chunk_bytes)


def decode_aedat4(data: bytes, path=None, allow_unsorted: bool = False, sensor_size=None,
                  max_packet_bytes: Optional[int] = None) -> np.ndarray:
    """Polarity events of an AEDAT 4.0 recording held in memory."""
    return decode(pieces, data, path, allow_unsorted, sensor_size=sensor_size, max_packet_bytes=max_packet_bytes)


def read_aedat4(path, allow_unsorted: bool = False, sensor_size=None,
                max_packet_bytes: Optional[int] = None) -> np.ndarray:
    """Polarity events of an AEDAT 4.0 recording (frames, IMU and triggers skipped); each
    packet's decompressed size is bounded by ``max_packet_bytes`` (see :func:`packet_limit`)."""
    return read(pieces, path, allow_unsorted, sensor_size=sensor_size, max_packet_bytes=max_packet_bytes)


__all__ = ["MAGIC", "MAX_PACKET_BYTES", "MAX_PACKET_ENV", "packet_limit", "pieces", "decode_aedat4", "read_aedat4"]
