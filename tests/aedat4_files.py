"""AEDAT 4.0 files built by hand for the tests, from the format description (not from spikelab's
reader): ``#!AER-DAT4.0\\r\\n``, an int32 header size, an ``IOHE`` FlatBuffer header (compression,
data table position, the XML description of the streams), then ``int32 stream, int32 size``
packets holding size-prefixed FlatBuffers (``EVTS``: a vector of 16-byte events)."""

from __future__ import annotations

import struct
from typing import Optional

import numpy as np

MAGIC = b"#!AER-DAT4.0\r\n"
CODES = {"none": 0, "lz4": 1, "zstd": 3}
EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("_pad", "V3")])
XML = ('<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
       '<node name="0" path="/mainloop/Recorder/outInfo/0/"><attr key="typeIdentifier" type="string">EVTS</attr>'
       '<node name="info" path="/mainloop/Recorder/outInfo/0/info/"><attr key="sizeX" type="int">{w}</attr>'
       '<attr key="sizeY" type="int">{h}</attr></node></node>'
       '<node name="1" path="/mainloop/Recorder/outInfo/1/"><attr key="typeIdentifier" type="string">TRIG</attr>'
       '</node></node></dv>')


def iohe(code: int = 0, data_table: Optional[int] = -1, info: Optional[str] = None, fields: int = 3,
         vtable_last: bool = False, pad: int = 0, nul: bool = True) -> bytes:
    """An ``IOHE`` header FlatBuffer. ``fields`` < 3 leaves the last fields out of the vtable,
    ``data_table=None`` leaves that field out, ``info=None`` has no string; ``vtable_last`` puts the
    vtable after the table (and string); ``pad`` bytes of alignment follow; ``nul=False`` drops
    the string's terminating zero."""
    text = None if info is None else info.encode()
    entries = [4, 0 if data_table is None else 8, 0 if text is None else 16][:fields]
    vtable = struct.pack(f"<HH{len(entries)}H", 4 + 2 * len(entries), 20, *entries)
    string = b"" if text is None else struct.pack("<I", len(text)) + text + (b"\0" if nul else b"")
    table_at = 8 if vtable_last else 8 + len(vtable)
    vtable_at = 8 + 20 + len(string) if vtable_last else 8
    table = struct.pack("<iiqI", table_at - vtable_at, code, -1 if data_table is None else data_table,
                        0 if text is None else 20 - 16)  # the string starts right after the table
    body = table + string + vtable if vtable_last else vtable + table + string
    return struct.pack("<I", table_at) + b"IOHE" + body + bytes(pad)


def evts(events: np.ndarray, count: Optional[int] = None, tail: bytes = b"") -> bytes:
    """A size-prefixed ``EVTS`` FlatBuffer holding ``events`` (its vector length ``count`` if
    given), with ``tail`` after the vector."""
    raw = np.zeros(len(events), EVENT)
    raw["t"], raw["x"], raw["y"], raw["on"] = events["t"], events["x"], events["y"], events["p"]
    n = len(events) if count is None else count
    body = (struct.pack("<I", 16) + b"EVTS" + struct.pack("<HHH", 6, 8, 4) + bytes(2)
            + struct.pack("<iI", 8, 4) + struct.pack("<I", n) + raw.tobytes() + tail)
    return struct.pack("<I", len(body)) + body


def flatbuffer(ident: bytes, payload: bytes = b"") -> bytes:
    """A size-prefixed FlatBuffer of another kind (``TRIG``, ``FRME``...): an empty root table."""
    body = struct.pack("<I", 12) + ident + struct.pack("<HH", 4, 4) + struct.pack("<i", 4) + payload
    return struct.pack("<I", len(body)) + body


def compress(buf: bytes, compression: str, store_size: bool = True) -> bytes:
    """``buf`` as one LZ4 or Zstandard frame (which states its content size unless ``store_size``
    is false), or as is."""
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.compress(buf, store_size=store_size)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(write_content_size=store_size).compress(buf)
    return buf


def packet(stream: int, body: bytes) -> bytes:
    return struct.pack("<ii", stream, len(body)) + body


def aedat4_bytes(header: bytes, packets=()) -> bytes:
    return MAGIC + struct.pack("<i", len(header)) + header + b"".join(packets)


def write_aedat4(path, events, compression="lz4", packet_events=64, size=(346, 260), bodies=()) -> list[int]:
    """An AEDAT 4.0 file: a trigger packet, then event packets (or the given compressed
    ``bodies`` of stream 0); returns the byte offset of every event-stream packet."""
    header = iohe(CODES[compression], info=XML.format(w=size[0], h=size[1]))
    out = bytearray(aedat4_bytes(header, [packet(1, b"trig!")]))  # another stream: never decoded
    if not bodies:
        bodies = [compress(evts(events[i:i + packet_events]), compression)
                  for i in range(0, len(events), packet_events)]
    offsets = []
    for body in bodies:
        offsets.append(len(out))
        out += packet(0, body)
    with open(path, "wb") as f:
        f.write(out)
    return offsets
