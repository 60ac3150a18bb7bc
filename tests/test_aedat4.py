"""AEDAT 4.0 files built by hand (``tests/aedat4_files.py``): every compression code, headers laid
out in other legal ways, fields at their limits, the XML stream description, packets that do
not belong, decompression limits at exactly their bound, and the readers' defaults."""

import struct

import numpy as np
import pytest

from spikelab import data
from spikelab.data.events import EventFormatError
from spikelab.data.formats import aedat4
from spikelab.data.formats._source import Source
from spikelab.data.stream import iter_chunks
from tests.aedat4_files import CODES, EVENT, XML, aedat4_bytes, compress, evts, flatbuffer, iohe, packet
from tests.event_tuples import as_tuples

EVENTS = data.make_events([0, 345, 7], [259, 0, 8], [10, 20, 30], [1, 0, 1])
HEAD = len(aedat4.MAGIC) + 4  # where the header FlatBuffer starts


def _decode(raw: bytes, **options) -> np.ndarray:
    return aedat4.decode_aedat4(raw, path="hand.aedat4", **options)


def _file(compression="none", code=None, info=XML.format(w=346, h=260), packets=None, **header) -> bytes:
    """The header (compression ``code``, else that of ``compression``) and ``packets`` (else one
    packet of EVENTS compressed with ``compression``)."""
    if packets is None:
        packets = [packet(0, compress(evts(EVENTS), compression))]
    return aedat4_bytes(iohe(CODES[compression] if code is None else code, info=info, **header), packets)


@pytest.mark.parametrize("code, compression", [(0, "none"), (1, "lz4"), (2, "lz4"), (3, "zstd"), (4, "zstd")])
def test_every_compression_code(code, compression):
    """0 none, 1 LZ4, 2 LZ4 (high compression), 3 Zstandard, 4 Zstandard (high compression)."""
    assert as_tuples(_decode(_file(compression, code))) == as_tuples(EVENTS)


def test_unknown_compression_code_is_refused():
    with pytest.raises(EventFormatError, match=r"unknown compression type 5; expected one of \[0, 1, 2, 3, 4\]"):
        _decode(_file(code=5))


def test_sensor_size_and_streams_from_the_xml():
    raw = _file(info=XML.format(w=640, h=480))
    sensor, _ = aedat4.pieces(Source("h", raw), None)
    assert sensor == (640, 480, 2)
    assert aedat4.pieces(Source("h", raw), None, sensor_size=(9, 9, 2))[0] == (9, 9, 2)
    with pytest.raises(EventFormatError, match="event 1 at \\(x=345, y=0\\) is outside the 345x260"):
        _decode(_file(info=XML.format(w=345, h=260)))


def test_xml_nodes_without_a_type_or_with_a_named_stream_are_not_streams():
    info = ('<dv><node name="outInfo">'
            '<node name="info"><attr key="typeIdentifier" type="string">EVTS</attr></node>'  # not a number
            '<node name="5"><attr key="compression" type="string">none</attr></node>'  # no type
            '<node name="2"><attr key="typeIdentifier" type="string">TRIG</attr></node>'
            '<node name="3"><attr key="typeIdentifier" type="string">EVTS</attr>'
            '<node name="info"><attr key="sizeX" type="int">346</attr><attr key="sizeY" type="int">260</attr>'
            '</node></node>'
            '<node name="4"><attr key="typeIdentifier" type="string">EVTS</attr>'  # a second event stream
            '<node name="info"><attr key="sizeX" type="int">16</attr><attr key="sizeY" type="int">16</attr>'
            '</node></node></node></dv>')
    other = data.make_events([1], [1], [5], [1])
    raw = _file(info=info, packets=[packet(2, flatbuffer(b"TRIG")), packet(3, evts(EVENTS)), packet(4, evts(other))])
    assert aedat4.pieces(Source("h", raw), None)[0] == (346, 260, 2)
    assert as_tuples(_decode(raw)) == as_tuples(EVENTS)  # the first event stream (3) only
    for undeclared in (5, 0):
        with pytest.raises(EventFormatError, match=f"packet of stream {undeclared}, which the header does not "
                                                   r"declare \(streams \[2, 3, 4\]\)"):
            _decode(_file(info=info, packets=[packet(undeclared, evts(EVENTS))]))


def test_a_size_without_its_other_half_gives_no_sensor():
    info = ('<dv><node name="0"><attr key="typeIdentifier" type="string">EVTS</attr>'
            '<node name="info"><attr key="sizeX" type="int">346</attr></node></node></dv>')
    raw = _file(info=info)
    assert aedat4.pieces(Source("h", raw), None)[0] is None
    assert as_tuples(_decode(raw)) == as_tuples(EVENTS)


def test_a_non_event_flatbuffer_in_the_event_stream_is_refused():
    raw = _file(packets=[packet(1, flatbuffer(b"TRIG")), packet(0, flatbuffer(b"FRME"))])
    with pytest.raises(EventFormatError, match="packet of the event stream 0 holds a b'FRME' FlatBuffer") as err:
        _decode(raw)
    assert err.value.offset == HEAD + len(iohe(0, info=XML.format(w=346, h=260))) + 8 + len(flatbuffer(b"TRIG"))


def test_without_a_description_every_stream_is_read_and_other_kinds_skipped():
    raw = _file(info=None, packets=[packet(7, flatbuffer(b"TRIG")), packet(9, evts(EVENTS))])
    assert aedat4.pieces(Source("h", raw), None)[0] is None
    assert as_tuples(_decode(raw)) == as_tuples(EVENTS)


@pytest.mark.parametrize("header", [{"fields": 0}, {"fields": 1}, {"fields": 2}, {"data_table": None}],
                         ids=["no fields", "compression only", "no description", "no data table"])
def test_fields_left_out_take_their_defaults(header):
    """Fields beyond the vtable, or set to 0 in it, take their defaults: no compression, no data
    table (-1), no description."""
    raw = _file(info=None, packets=[packet(0, evts(EVENTS))], **header)
    assert as_tuples(_decode(raw)) == as_tuples(EVENTS)


def test_header_laid_out_with_its_vtable_last():
    raw = _file(vtable_last=True)
    assert as_tuples(_decode(raw)) == as_tuples(EVENTS)
    head = iohe(0, info=None, vtable_last=True)
    raw = aedat4_bytes(head, [packet(0, evts(EVENTS))])
    assert as_tuples(_decode(raw)) == as_tuples(EVENTS)


@pytest.mark.parametrize("vtable_last", [False, True])
@pytest.mark.parametrize("pad, ok", [(0, True), (7, True), (8, False)])
def test_header_alignment_padding_up_to_seven_bytes(vtable_last, pad, ok):
    for info in (None, XML.format(w=346, h=260)):
        raw = _file(info=info, pad=pad, vtable_last=vtable_last)
        if ok:
            assert as_tuples(_decode(raw)) == as_tuples(EVENTS)
        else:
            with pytest.raises(EventFormatError, match="does not match the header FlatBuffer"):
                _decode(raw)


def test_description_strings_that_overrun_or_lack_their_zero():
    head = bytearray(iohe(0, info=XML.format(w=346, h=260)))
    at = 8 + 10 + 20  # the string's length field, after the vtable and the table
    struct.pack_into("<I", head, at, len(head) - at - 4 + 1)  # past the zero, one byte beyond the buffer
    with pytest.raises(EventFormatError, match="a string of .* bytes at byte 38 overruns it"):
        _decode(aedat4_bytes(bytes(head), [packet(0, evts(EVENTS))]))
    with pytest.raises(EventFormatError, match="does not match the header FlatBuffer"):  # not an overrun
        _decode(_file(nul=False))


# an EVTS FlatBuffer: size prefix, root offset (16), "EVTS", vtable at 12, table at 20 whose
# field 0 (at 24) holds the offset from there to the event vector
VECTOR_FIELD = 24


@pytest.mark.parametrize("where, what", [(-2, "straddles the end"), (10, "lies past the end"),
                                         (None, "the table's vtable before the buffer")])
def test_flatbuffer_fields_outside_the_buffer_are_refused(where, what):
    buf = bytearray(evts(EVENTS))
    if where is None:
        struct.pack_into("<i", buf, 20, 64)  # the table's vtable offset points before the buffer
    else:
        struct.pack_into("<I", buf, VECTOR_FIELD, len(buf) + where - VECTOR_FIELD)
    with pytest.raises(EventFormatError, match=f"corrupt FlatBuffer in the event packet: a field at byte -?[0-9]+ "
                                               f"lies outside its {len(buf)} bytes"):
        _decode(_file(packets=[packet(0, bytes(buf))]))


def test_event_vectors_empty_full_and_overrunning():
    empty = data.make_events([], [], [], [])
    assert len(_decode(_file(packets=[packet(0, evts(empty))]))) == 0  # the count is the packet's last 4 bytes
    for tail in (b"", bytes(8), bytes(15)):  # other data after the vector, but less than one more event
        with pytest.raises(EventFormatError, match="event vector of 4 events overruns its packet"):
            _decode(_file(packets=[packet(0, evts(EVENTS, count=4, tail=tail))]))
    fourth = np.zeros(1, EVENT)
    fourth["t"], fourth["x"], fourth["y"], fourth["on"] = 40, 1, 2, 1
    assert as_tuples(_decode(_file(packets=[packet(0, evts(EVENTS, count=4, tail=fourth.tobytes()))]))) == \
        as_tuples(EVENTS) + [(1, 2, 40, 1)]
    assert as_tuples(_decode(_file(packets=[packet(0, evts(EVENTS, count=2))]))) == as_tuples(EVENTS[:2])


def test_packet_headers_at_the_end_of_the_file():
    trig = flatbuffer(b"TRIG")
    base = _file(packets=[packet(0, evts(EVENTS))])
    assert as_tuples(_decode(base + packet(1, b""))) == as_tuples(EVENTS)  # an empty packet ends the file
    with pytest.raises(EventFormatError, match=r"truncated packet header \(7 of 8 bytes\)"):
        _decode(base + packet(1, b"")[:7])
    with pytest.raises(EventFormatError, match=rf"packet size {len(trig) + 1} runs past the end of the data; "
                                               rf"expected 0\.\.{len(trig)}") as err:
        _decode(base + struct.pack("<ii", 1, len(trig) + 1) + trig)
    assert err.value.offset == len(base)
    with pytest.raises(EventFormatError, match=r"packet size -1 runs past"):
        _decode(base + struct.pack("<ii", 1, -1))


def test_file_and_header_sizes_at_their_limits():
    head = iohe(0, info=None)
    with pytest.raises(EventFormatError, match="truncated before the header size"):
        _decode(aedat4.MAGIC + bytes(3))
    with pytest.raises(EventFormatError, match=r"header size 0 does not fit the file; expected 9\.\.0"):
        _decode(aedat4.MAGIC + bytes(4))
    assert len(_decode(aedat4_bytes(head))) == 0  # a header that ends the file: no events
    for size in (8, len(head) + 1):
        with pytest.raises(EventFormatError, match=f"header size {size} does not fit the file; expected "
                                                   rf"9\.\.{len(head)}") as err:
            _decode(aedat4.MAGIC + struct.pack("<i", size) + head)
        assert err.value.offset == len(aedat4.MAGIC)
    with pytest.raises(EventFormatError, match="header is not an IOHE FlatBuffer"):  # 9 bytes: fits, but is not one
        _decode(aedat4.MAGIC + struct.pack("<i", 9) + bytes(9))
    with pytest.raises(EventFormatError, match="not an AEDAT 4.0 file"):
        _decode(b"#!AER-DAT3.1\r\n" + bytes(8))


def test_data_table_position():
    raw = _file(packets=[packet(0, evts(EVENTS))])
    index = b"an index, not a packet"
    table_at = len(raw)
    with_table = aedat4_bytes(iohe(0, data_table=table_at, info=XML.format(w=346, h=260)),
                              [packet(0, evts(EVENTS))]) + index
    assert as_tuples(_decode(with_table)) == as_tuples(EVENTS)
    first = HEAD + len(iohe(0, info=XML.format(w=346, h=260)))
    with pytest.raises(EventFormatError, match=f"data table position {first - 1} lies inside the header"):
        _decode(_file(data_table=first - 1))
    assert as_tuples(_decode(_file(data_table=first, packets=[packet(0, evts(EVENTS))]))) == []
    with pytest.raises(EventFormatError, match="data table position 1 lies inside the header"):
        _decode(_file(data_table=1))
    for none in (0, -1, -5, len(with_table) + 100):  # no table, or one past the end: every packet is read
        assert as_tuples(_decode(_file(data_table=none))) == as_tuples(EVENTS), none


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_packet_limit_at_exactly_the_packet_size(compression):
    flat = evts(EVENTS)
    raw = _file(compression=compression)
    assert as_tuples(_decode(raw, max_packet_bytes=len(flat))) == as_tuples(EVENTS)
    with pytest.raises(EventFormatError, match=f"above the limit of {len(flat) - 1} per packet"):
        _decode(raw, max_packet_bytes=len(flat) - 1)
    with pytest.raises(EventFormatError, match="size prefix declares .* above the limit of 3 per packet"):
        _decode(_file(), max_packet_bytes=3)  # the 4-byte size prefix is read, then refused


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_packet_limit_below_the_size_prefix_when_the_frame_states_no_size(compression):
    flat = evts(EVENTS)
    raw = _file(compression, packets=[packet(0, compress(flat, compression, store_size=False))])
    assert as_tuples(_decode(raw, max_packet_bytes=len(flat))) == as_tuples(EVENTS)
    with pytest.raises(EventFormatError, match=f"size prefix declares {len(flat)} bytes, above the limit of "
                                               f"{len(flat) - 1} per packet"):
        _decode(raw, max_packet_bytes=len(flat) - 1)
    with pytest.raises(EventFormatError, match=f"size prefix declares {len(flat)} bytes, above the limit of 3 per"):
        _decode(raw, max_packet_bytes=3)  # the 4-byte size prefix is read whole, then refused
    with pytest.raises(EventFormatError, match=f"{compression} packet decompresses to more than the limit of 2 bytes"):
        _decode(raw, max_packet_bytes=2)  # not even the size prefix fits


def test_packet_limit_values():
    assert aedat4.packet_limit(1) == 1 and aedat4.packet_limit("7") == 7
    for bad in (0, -1, "abc", "1.5", "0"):
        with pytest.raises(ValueError, match="max_packet_bytes: expected a positive number of bytes"):
            aedat4.packet_limit(bad)


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_bytes_after_the_compressed_frame_are_refused(compression):
    body = compress(evts(EVENTS), compression)
    for extra in (compress(b"more", compression), b"junk"):
        refused = f"hand.aedat4 at byte .*(lz4 frame|more than|corrupt {compression})"
        with pytest.raises(EventFormatError, match=refused):
            _decode(_file(compression, packets=[packet(0, body + extra)]))


def test_truncated_lz4_frame_is_named():
    body = compress(evts(EVENTS), "lz4")
    with pytest.raises(EventFormatError, match=r"corrupt lz4 packet \(the frame is truncated\)"):
        _decode(_file("lz4", packets=[packet(0, body[:-6])]))


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_packets_larger_than_one_decompression_step(compression):
    n = 70_000  # 1.1 MB of events: several steps of the decompressor
    rng = np.random.default_rng(0)
    events = data.make_events(rng.integers(0, 346, n), rng.integers(0, 260, n), np.arange(n), rng.integers(0, 2, n))
    raw = _file(compression, packets=[packet(0, compress(evts(events), compression))])
    assert np.array_equal(_decode(raw), events)


def test_readers_refuse_unsorted_events_by_default(tmp_path):
    backwards = data.make_events([1, 2], [1, 2], [50, 40], [1, 0])
    raw = _file(packets=[packet(0, evts(backwards))])
    (tmp_path / "u.aedat4").write_bytes(raw)
    for decode_it in (lambda: aedat4.decode_aedat4(raw), lambda: aedat4.read_aedat4(tmp_path / "u.aedat4")):
        with pytest.raises(EventFormatError, match="timestamps decrease"):
            decode_it()
    assert aedat4.read_aedat4(tmp_path / "u.aedat4", allow_unsorted=True)["t"].tolist() == [40, 50]


def test_streaming_hands_out_a_piece_per_chunk_of_packets(tmp_path):
    events = data.make_events(np.arange(60) % 300, np.zeros(60, int), np.arange(60), np.ones(60, int))
    packets = [packet(0, evts(events[i:i + 10])) for i in range(0, 60, 10)]
    (tmp_path / "s.aedat4").write_bytes(_file(packets=packets))
    size = len(packets[0])  # 8 bytes of packet header and the FlatBuffer
    assert [len(p) for p in iter_chunks(tmp_path / "s.aedat4", chunk_bytes=2 * size)] == [20, 20, 20]
    assert [len(p) for p in iter_chunks(tmp_path / "s.aedat4", chunk_bytes=2 * size + 1)] == [30, 30]
