"""AEDAT 4.0 (DV): ``#!AER-DAT4.0``, a FlatBuffers ``IOHE`` header, then packets.

Each packet is ``int32 stream id, int32 size`` and a (LZ4-frame or Zstandard compressed,
per the header) size-prefixed FlatBuffer whose identifier names its content. Only event
packets (``EVTS``: a vector of 16-byte structs int64 t, int16 x, int16 y, bool on) are
decoded; frames, IMU samples and triggers are skipped. The sensor size comes from the
header's XML description of the event stream. Timestamps are as stored (absolute Unix
microseconds for DV recordings).
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from typing import Optional

import numpy as np

from spikelab.data.events import EventFormatError, check_events, make_events
from spikelab.data.formats._header import read_bytes

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSION = {0: "none", 1: "lz4", 2: "lz4", 3: "zstd", 4: "zstd"}
_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("_pad", "V3")])


class _FlatTable:
    """Just enough FlatBuffers to read scalar, string and vector fields of one table."""

    def __init__(self, buf: bytes, pos: int, path, base: int):
        self.buf, self.pos, self.path, self.base = buf, pos, path, base
        try:
            vtable = pos - struct.unpack_from("<i", buf, pos)[0]
            self.vt_size = struct.unpack_from("<H", buf, vtable)[0]
            self.vtable = vtable
        except struct.error as err:
            raise EventFormatError(path, f"corrupt FlatBuffer table ({err})", base + pos) from None

    def _field(self, index: int) -> Optional[int]:
        entry = 4 + 2 * index
        if entry >= self.vt_size:
            return None
        off = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + off if off else None

    def scalar(self, index: int, fmt: str, default):
        at = self._field(index)
        return default if at is None else struct.unpack_from(fmt, self.buf, at)[0]

    def indirect(self, index: int) -> Optional[int]:
        at = self._field(index)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def string(self, index: int) -> str:
        at = self.indirect(index)
        if at is None:
            return ""
        n = struct.unpack_from("<I", self.buf, at)[0]
        return self.buf[at + 4:at + 4 + n].decode("utf-8", "replace")


def _decompress(body: bytes, compression: str, path, offset: int) -> bytes:
    try:
        if compression == "lz4":
            import lz4.frame

            return lz4.frame.decompress(body)
        if compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    except ImportError as err:
        raise ImportError(f"{path}: reading {compression}-compressed AEDAT 4 needs the '{err.name}' package") from None
    except Exception as err:  # noqa: BLE001 - any codec failure is a corrupt packet
        raise EventFormatError(path, f"corrupt {compression} packet ({err})", offset) from None
    return body


def _event_stream(info: str, path):
    """(stream id, (width, height, 2)) of the event stream described in the header XML."""
    try:
        root = ET.fromstring(info)
    except ET.ParseError:
        return None, None
    for node in root.iter("node"):
        attrs = {a.get("key"): a.text for a in node.findall("attr")}
        if attrs.get("typeIdentifier") == "EVTS":
            stream = node.get("name")
            size = None
            for sub in node.iter("node"):
                sub_attrs = {a.get("key"): a.text for a in sub.findall("attr")}
                if "sizeX" in sub_attrs and "sizeY" in sub_attrs:
                    size = (int(sub_attrs["sizeX"]), int(sub_attrs["sizeY"]), 2)
            return (int(stream) if stream and stream.isdigit() else None), size
    return None, None


def decode_aedat4(data: bytes, path=None, allow_unsorted: bool = False) -> np.ndarray:
    if not data.startswith(MAGIC):
        raise EventFormatError(path, "not an AEDAT 4.0 file: expected '#!AER-DAT4.0'", 0)
    pos = len(MAGIC)
    if pos + 4 > len(data):
        raise EventFormatError(path, "truncated before the header size", pos)
    size = struct.unpack_from("<i", data, pos)[0]
    start = pos + 4
    if size <= 8 or start + size > len(data):
        raise EventFormatError(path, f"header size {size} does not fit the file", pos)
    header = data[start:start + size]
    if header[4:8] != b"IOHE":
        raise EventFormatError(path, "header is not an IOHE FlatBuffer", start)
    table = _FlatTable(header, struct.unpack_from("<I", header, 0)[0], path, start)
    compression = COMPRESSION.get(table.scalar(0, "<i", 0))
    if compression is None:
        raise EventFormatError(path, f"unknown compression type {table.scalar(0, '<i', 0)}", start)
    data_table = table.scalar(1, "<q", -1)
    stream_id, sensor_size = _event_stream(table.string(2), path)
    end = data_table if 0 < data_table <= len(data) else len(data)
    pos = start + size
    chunks, offsets = [], []
    while pos < end:
        if pos + 8 > end:
            raise EventFormatError(path, "truncated packet header", pos)
        sid, nbytes = struct.unpack_from("<ii", data, pos)
        if nbytes < 0 or pos + 8 + nbytes > end:
            raise EventFormatError(path, f"packet of {nbytes} bytes runs past the end of the data", pos)
        if stream_id is None or sid == stream_id:
            buf = _decompress(data[pos + 8:pos + 8 + nbytes], compression, path, pos)
            if len(buf) >= 12 and buf[8:12] == b"EVTS":
                packet = _FlatTable(buf, 4 + struct.unpack_from("<I", buf, 4)[0], path, pos)
                vec = packet.indirect(0)
                if vec is not None:
                    count = struct.unpack_from("<I", buf, vec)[0]
                    if vec + 4 + count * _EVENT.itemsize > len(buf):
                        raise EventFormatError(path, f"event vector of {count} events overruns its packet", pos)
                    chunks.append(np.frombuffer(buf, _EVENT, count=count, offset=vec + 4))
                    offsets.append(np.full(count, pos))
        pos += 8 + nbytes
    raw = np.concatenate(chunks) if chunks else np.zeros(0, _EVENT)
    events = make_events(raw["x"], raw["y"], raw["t"], raw["on"])
    return check_events(events, path, sensor_size, np.concatenate(offsets) if offsets else None, allow_unsorted)


def read_aedat4(path, allow_unsorted: bool = False) -> np.ndarray:
    """Polarity events of an AEDAT 4.0 recording (frames, IMU and triggers skipped)."""
    return decode_aedat4(read_bytes(path), path, allow_unsorted)
