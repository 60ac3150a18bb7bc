"""AEDAT 3.1 packets packed by hand: the header fields at their limits, byte offsets in errors,
the reader's defaults and the packets the writer lays out (from the cAER format description)."""

import struct

import numpy as np
import pytest

from spikelab import data
from spikelab.data.events import EventFormatError
from spikelab.data.formats import aedat3
from spikelab.data.formats._source import Source
from spikelab.data.stream import iter_chunks
from tests.test_known_answers import _packet, _polarity

HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n"


def _head(kind: int, size: int, capacity: int, number: int, overflow: int = 0) -> bytes:
    """A 28-byte packet header whose capacity and number are given apart from its body."""
    return struct.pack("<hhiiiiii", kind, 1, size, 4, overflow, capacity, number, number)


def _decode(raw: bytes, **options) -> np.ndarray:
    return aedat3.decode_aedat3(raw, path="hand.aedat", **options)


def test_empty_packets_and_a_header_that_ends_the_file():
    raw = (HEADER
           + _head(1, 8, 0, 0)  # no room, no events
           + _head(1, 8, 2, 0) + _polarity(1, 1, 1, 5) + _polarity(2, 2, 1, 6)  # room for two, none counted
           + _packet(1, 8, 0, [_polarity(3, 4, 1, 10)], valid=1)
           + _head(1, 8, 0, 0))  # the last 28 bytes of the file: a header and nothing after it
    events = _decode(raw)
    assert events["x"].tolist() == [3] and events["y"].tolist() == [4] and events["t"].tolist() == [10]


def test_event_size_must_be_positive_and_small_sizes_are_skipped():
    one_byte = _head(5, 1, 3, 3) + b"abc"  # a 1-byte event type we do not read: skipped whole
    raw = HEADER + one_byte + _packet(1, 8, 0, [_polarity(7, 8, 0, 20)], valid=1)
    assert _decode(raw)["x"].tolist() == [7]
    with pytest.raises(EventFormatError, match="hand.aedat at byte 42: corrupt packet header: eventSize 0") as err:
        _decode(HEADER + _head(5, 0, 0, 0))
    assert err.value.offset == len(HEADER)


@pytest.mark.parametrize("kind, size", [(1, 8), (3, 36)])
def test_capacity_up_to_the_end_of_the_file_and_no_further(kind, size):
    tail = bytes(3)  # a few stray bytes: room counts whole events only
    body = bytes(2 * size) + tail
    ok = HEADER + _head(kind, size, 2, 0) + body[:2 * size]
    assert len(_decode(ok)) == 0
    with pytest.raises(EventFormatError, match=r"eventCapacity 3 .* expected 0\.\.2") as err:
        _decode(HEADER + _head(kind, size, 3, 0) + body)
    assert err.value.offset == len(HEADER)


def test_number_above_capacity_is_refused():
    raw = HEADER + _head(1, 8, 1, 2) + _polarity(1, 1, 1, 1)
    with pytest.raises(EventFormatError, match=r"eventNumber 2, expected 0\.\.1"):
        _decode(raw)


def test_errors_name_the_byte_of_the_event():
    first = _packet(1, 8, 0, [_polarity(1, 1, 1, 100), _polarity(1, 1, 1, 200)], valid=2)
    second = _packet(1, 8, 0, [_polarity(1, 1, 1, 300), _polarity(1, 1, 0, 400, valid=0),
                               _polarity(1, 1, 1, 50)], valid=2)
    raw = HEADER + first + second
    with pytest.raises(EventFormatError, match="timestamps decrease at event 3 \\(300 -> 50 us\\)") as err:
        _decode(raw)
    assert err.value.offset == len(HEADER) + len(first) + 28 + 2 * 8  # the third event of the second packet
    outside = HEADER + first + _packet(1, 8, 0, [_polarity(9, 9, 1, 300), _polarity(128, 5, 1, 310)], valid=2)
    with pytest.raises(EventFormatError, match="event 3 at \\(x=128, y=5\\) is outside the 128x128") as err:
        _decode(outside)
    assert err.value.offset == len(HEADER) + len(first) + 28 + 8


def test_default_sensor_and_order_checks(tmp_path):
    edge = HEADER + _packet(1, 8, 0, [_polarity(127, 128, 1, 1)], valid=1)
    backwards = HEADER + _packet(1, 8, 0, [_polarity(1, 1, 1, 9), _polarity(2, 2, 1, 3)], valid=2)
    (tmp_path / "edge.aedat").write_bytes(edge)
    (tmp_path / "back.aedat").write_bytes(backwards)
    for events_of in (lambda name: aedat3.read_aedat3(tmp_path / name),
                      lambda name: aedat3.decode_aedat3((tmp_path / name).read_bytes())):
        with pytest.raises(EventFormatError, match="outside the 128x128 sensor"):
            events_of("edge.aedat")
        with pytest.raises(EventFormatError, match="timestamps decrease"):
            events_of("back.aedat")
    assert aedat3.read_aedat3(tmp_path / "edge.aedat", sensor_size=(128, 129, 2))["y"].tolist() == [128]
    assert aedat3.read_aedat3(tmp_path / "back.aedat", allow_unsorted=True)["t"].tolist() == [3, 9]
    sensor, pieces = aedat3.pieces(Source("edge.aedat", edge), None)
    assert sensor == (128, 128, 2) and len(list(pieces)) == 1


def test_another_version_is_refused():
    raw = b"#!AER-DAT2.0\r\n#!END-HEADER\r\n" + _packet(1, 8, 0, [_polarity(1, 1, 1, 1)], valid=1)
    with pytest.raises(EventFormatError, match="not an AEDAT 3.x file"):
        _decode(raw)


def _packet_headers(raw: bytes) -> list[tuple]:
    pos = raw.index(b"#!END-HEADER\r\n") + 14
    heads = []
    while pos < len(raw):
        head = struct.unpack_from("<hhiiiiii", raw, pos)
        heads.append(head)
        pos += 28 + head[2] * head[5]
    return heads


def test_writer_packets(tmp_path):
    rng = np.random.default_rng(3)
    n = 5000
    events = data.make_events(rng.integers(0, 128, n), rng.integers(0, 128, n), np.arange(n) * 3, rng.integers(0, 2, n))
    aedat3.write_aedat3(tmp_path / "a.aedat", events)
    heads = _packet_headers((tmp_path / "a.aedat").read_bytes())
    # (type, source, eventSize, eventTSOffset, eventTSOverflow, capacity, number, valid)
    assert heads == [(1, 1, 8, 4, 0, 4096, 4096, 4096), (1, 1, 8, 4, 0, 904, 904, 904)]


def test_writer_starts_a_packet_where_the_timestamp_overflows(tmp_path):
    t = [1, 2, (1 << 31) + 1, (1 << 31) + 2, (1 << 31) + 3, (1 << 32) + 7]
    events = data.make_events([1, 2, 3, 4, 5, 6], [1] * 6, t, [1, 0, 1, 0, 1, 0])
    aedat3.write_aedat3(tmp_path / "o.aedat", events, packet_events=4, source=2)
    heads = _packet_headers((tmp_path / "o.aedat").read_bytes())
    assert [(h[1], h[4], h[5]) for h in heads] == [(2, 0, 2), (2, 1, 2), (2, 1, 1), (2, 2, 1)]
    assert np.array_equal(aedat3.read_aedat3(tmp_path / "o.aedat"), events)


def test_streaming_hands_out_a_piece_per_chunk_of_packets(tmp_path):
    events = data.make_events(np.arange(60) % 128, np.zeros(60, int), np.arange(60), np.ones(60, int))
    aedat3.write_aedat3(tmp_path / "s.aedat", events, packet_events=10)  # packets of 28 + 80 bytes
    sizes = [len(piece) for piece in iter_chunks(tmp_path / "s.aedat", chunk_bytes=2 * 108)]
    assert sizes == [20, 20, 20]
    sizes = [len(piece) for piece in iter_chunks(tmp_path / "s.aedat", chunk_bytes=2 * 108 + 1)]
    assert sizes == [30, 30]
