"""Prophesee RAW files packed by hand from the format descriptions: EVT 3.0 vectors, time
wraps and ignored word types, decoded whole and a word at a time, with byte offsets in errors."""

import struct

import numpy as np
import pytest

from spikelab import data
from spikelab.data.events import EventFormatError
from spikelab.data.formats import prophesee
from spikelab.data.formats._source import Source, decode
from spikelab.data.stream import iter_chunks
from tests.event_tuples import as_tuples

EVT3_HEADER = b"% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n"


def _w(kind: int, payload: int) -> int:
    """One EVT 3.0 word: the type in bits 12..15, the payload in bits 0..11."""
    assert 0 <= payload < 1 << 12
    return kind << 12 | payload


TIME_HIGH, TIME_LOW, ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8 = 0x8, 0x6, 0x0, 0x2, 0x3, 0x4, 0x5
EXT_TRIGGER, OTHERS, CONTINUED_4, CONTINUED_12 = 0xA, 0xE, 0x7, 0xF

EVT3_WORDS = [
    _w(TIME_HIGH, 1), _w(TIME_LOW, 5),  # t = 1 << 12 | 5 = 4101
    _w(ADDR_Y, 1 << 11 | 10),  # y = 10 (bit 11: the system type, not part of y)
    _w(ADDR_X, 0 << 11 | 100),  # OFF event at x = 100
    _w(VECT_BASE_X, 1 << 11 | 200),  # ON vector from x = 200
    _w(VECT_12, 0b1000_0000_0101),  # x = 200, 202, 211; the base moves to 212
    _w(VECT_8, 0b0001_1000_0001),  # x = 212, 219 (bits 8..11 are unused); the base moves to 220
    _w(EXT_TRIGGER, 0x123), _w(OTHERS, 0x456), _w(CONTINUED_4, 0xF), _w(CONTINUED_12, 0xFFF),  # no CD events
    _w(TIME_LOW, 0xFFF),
    _w(ADDR_X, 1 << 11 | 5),  # ON at x = 5, t = 8191
    _w(TIME_HIGH, 0xFFF), _w(TIME_LOW, 1), _w(ADDR_Y, 719),
    _w(ADDR_X, 0 << 11 | 1279),  # t = 4095 << 12 | 1
    _w(TIME_HIGH, 2),  # the 12-bit time high wrapped: + 2**24 us
    _w(TIME_LOW, 3), _w(VECT_BASE_X, 0 << 11 | 0),
    _w(VECT_8, 0b11),  # x = 0, 1, OFF
]

EVT3_EXPECTED = [  # (x, y, t, p, index of the word that made it)
    (100, 10, 4101, 0, 3),
    (200, 10, 4101, 1, 5), (202, 10, 4101, 1, 5), (211, 10, 4101, 1, 5),
    (212, 10, 4101, 1, 6), (219, 10, 4101, 1, 6),
    (5, 10, 8191, 1, 12),
    (1279, 719, 4095 << 12 | 1, 0, 16),
    (0, 719, (1 << 24) + (2 << 12 | 3), 0, 20), (1, 719, (1 << 24) + (2 << 12 | 3), 0, 20),
]


def _evt3_file(words) -> bytes:
    return EVT3_HEADER + struct.pack(f"<{len(words)}H", *words)


def test_evt3_words_by_hand():
    events = prophesee.decode_evt3(_evt3_file(EVT3_WORDS))
    assert as_tuples(events) == [e[:4] for e in EVT3_EXPECTED]


@pytest.mark.parametrize("chunk", [2, 6, 1 << 16])
def test_evt3_state_carries_across_chunks(tmp_path, chunk):
    path = tmp_path / "hand.raw"
    path.write_bytes(_evt3_file(EVT3_WORDS))
    pieces = list(iter_chunks(path, chunk_bytes=chunk))
    assert as_tuples(np.concatenate(pieces)) == [e[:4] for e in EVT3_EXPECTED]
    assert as_tuples(data.read_events(path)) == [e[:4] for e in EVT3_EXPECTED]


def test_evt3_byte_offsets_of_the_events():
    """Each event's byte offset is that of the word that made it (what errors report)."""
    raw = _evt3_file(EVT3_WORDS)
    sensor, pieces = prophesee.evt3_pieces(Source("hand.raw", raw), None)
    assert sensor == (1280, 720, 2)
    (events, offsets), = list(pieces)
    assert offsets.tolist() == [len(EVT3_HEADER) + 2 * e[4] for e in EVT3_EXPECTED]
    off_sensor = list(EVT3_WORDS)
    off_sensor[16] = _w(ADDR_X, 1280)  # one column past the header's 1280-pixel width
    with pytest.raises(EventFormatError, match=r"hand.raw at byte \d+: event 7 at \(x=1280, y=719\)") as err:
        prophesee.decode_evt3(_evt3_file(off_sensor), path="hand.raw")
    assert err.value.offset == len(EVT3_HEADER) + 2 * 16


def test_evt3_time_high_wraps_only_on_a_large_backward_jump():
    """A time high that falls by more than half its range has wrapped (+2**24 us); a smaller
    fall is a glitch, kept as is (so the timestamps decrease)."""
    words = [_w(ADDR_Y, 1)]
    for high in (0x900, 0x100, 0x900, 0x0FF):  # falls of exactly 0x800 (no wrap), then 0x801 (a wrap)
        words += [_w(TIME_HIGH, high), _w(TIME_LOW, 0), _w(ADDR_X, 1)]
    raw = _evt3_file(words)
    with pytest.raises(EventFormatError, match="timestamps decrease at event 1"):
        prophesee.decode_evt3(raw)
    events = prophesee.decode_evt3(raw, allow_unsorted=True)
    assert events["t"].tolist() == [0x100 << 12, 0x900 << 12, 0x900 << 12, (1 << 24) + (0x0FF << 12)]


# ----- DAT ---------------------------------------------------------------------------------------

def _dat(version, events, type_byte=0x0C, size_byte=8) -> bytes:
    """A DAT file: ``%`` header lines, the event type and size bytes, (uint32 t, uint32 data) pairs."""
    head = b"% Data file containing CD events.\n" + (f"% Version {version}\n".encode() if version else b"")
    return head + bytes([type_byte, size_byte]) + b"".join(struct.pack("<II", t, d) for t, d in events)


def _v2(x, y, p):
    return x | y << 14 | p << 28


def _v1(x, y, p):
    return x | y << 9 | p << 17


def test_dat_versions_by_hand():
    v2 = [(10, _v2(303, 239, 1)), (20, _v2(0, 1, 0)), (30, _v2(16383, 16383, 1))]
    assert as_tuples(prophesee.decode_dat(_dat(2, v2))) == [(303, 239, 10, 1), (0, 1, 20, 0), (16383, 16383, 30, 1)]
    # version 1 (and no Version line at all): x in 9 bits, y in 8, polarity bit 17; higher bits are not ours
    v1 = [(5, _v1(511, 255, 1) | 1 << 20), (6, _v1(3, 4, 0)), (7, _v1(0, 0, 1))]
    expected = [(511, 255, 5, 1), (3, 4, 6, 0), (0, 0, 7, 1)]
    assert as_tuples(prophesee.decode_dat(_dat(1, v1))) == expected
    assert as_tuples(prophesee.decode_dat(_dat(None, v1))) == expected


def test_dat_type_and_size_bytes():
    # the size byte is the second: neither the type byte (0) nor the first event's first byte (9) stands in for it
    events = [(9, _v2(1, 2, 1))]
    assert as_tuples(prophesee.decode_dat(_dat(2, events, type_byte=0))) == [(1, 2, 9, 1)]
    head = len(_dat(2, []))
    with pytest.raises(EventFormatError, match="event size byte is 4, expected 8") as err:
        prophesee.decode_dat(_dat(2, events, size_byte=4))
    assert err.value.offset == head - 1
    assert len(prophesee.decode_dat(_dat(2, []))) == 0  # the two bytes and nothing after them
    with pytest.raises(EventFormatError, match="truncated before the event type and size bytes"):
        prophesee.decode_dat(_dat(2, [])[:-1])


@pytest.mark.parametrize("p", [2, 15])
def test_dat_polarity_above_one_is_refused_after_the_events_before_it(p):
    events = [(1, _v2(1, 1, 1)), (2, _v2(2, 2, 0)), (3, _v2(3, 3, p))]
    raw = _dat(2, events)
    with pytest.raises(EventFormatError, match=f"polarity value {p} in event 2, expected 0 or 1") as err:
        prophesee.decode_dat(raw, path="p.dat")
    assert err.value.offset == len(raw) - 8
    backwards = _dat(2, [(5, _v2(1, 1, 1)), (2, _v2(1, 1, 1)), (3, _v2(3, 3, p))])
    with pytest.raises(EventFormatError, match="timestamps decrease at event 1"):  # the earlier problem first
        prophesee.decode_dat(backwards)


# ----- EVT 2.0 -----------------------------------------------------------------------------------

def _evt2(words, header=b"% evt 2.0\n% end\n") -> bytes:
    return header + struct.pack(f"<{len(words)}I", *words)


def _cd(kind, x, y, low):
    return kind << 28 | low << 22 | x << 11 | y


def test_evt2_words_by_hand():
    words = [_cd(1, 7, 8, 3),  # before any TIME_HIGH: the time high is 0
             0x8 << 28 | 5,  # TIME_HIGH 5: t = 5 << 6 | low
             _cd(0, 2047, 2047, 10), 0xA << 28 | 77,  # an EXT_TRIGGER word: no CD event
             _cd(1, 0, 1, 63), 0x8 << 28 | 0x0FFFFFFF, _cd(1, 3, 4, 1)]
    assert as_tuples(prophesee.decode_evt2(_evt2(words))) == [
        (7, 8, 3, 1), (2047, 2047, 5 << 6 | 10, 0), (0, 1, 5 << 6 | 63, 1), (3, 4, 0x0FFFFFFF << 6 | 1, 1)]


# ----- headers, defaults, writers ----------------------------------------------------------------

@pytest.mark.parametrize("line, size", [
    ("% geometry 640x480", (640, 480, 2)),
    ("% format EVT3;height=720;width=1280", (1280, 720, 2)),
    ("% format EVT3;width=304;height=240", (304, 240, 2)),
])
def test_sensor_size_from_the_header(line, size):
    raw = f"% evt 3.0\n{line}\n% end\n".encode()
    sensor, _ = prophesee.raw_pieces(Source("s.raw", raw), None)
    assert sensor == size
    assert prophesee.raw_pieces(Source("s.raw", raw), None, sensor_size=(8, 8, 2))[0] == (8, 8, 2)


@pytest.mark.parametrize("header, kind", [
    (b"% date 2020-01-01\n% format EVT3;height=720;width=1280\n% end\n", "evt3"),
    (b"% date 2020-01-01\n% format EVT2;height=480;width=640\n% end\n", "evt2"),
])
def test_raw_encoding_from_the_format_line(tmp_path, header, kind):
    words = [_w(TIME_HIGH, 1), _w(TIME_LOW, 2), _w(ADDR_Y, 3), _w(ADDR_X, 1 << 11 | 4)]
    body = struct.pack("<4H", *words) if kind == "evt3" else struct.pack("<2I", 0x8 << 28 | 1, _cd(1, 4, 3, 2))
    expected = [(4, 3, 1 << 12 | 2, 1)] if kind == "evt3" else [(4, 3, 1 << 6 | 2, 1)]
    (tmp_path / "f.raw").write_bytes(header + body)
    assert as_tuples(data.read_events(tmp_path / "f.raw")) == expected


def _decode_raw(raw: bytes):
    return decode(prophesee.raw_pieces, raw, "r.raw")


def test_raw_without_an_encoding_is_refused():
    with pytest.raises(EventFormatError, match="names no encoding"):
        _decode_raw(b"% date 2020-01-01\n% end\n" + bytes(8))
    with pytest.raises(EventFormatError, match="EVT 4.0 is not supported"):
        _decode_raw(b"% evt 4.0\n% end\n" + bytes(8))


def test_readers_refuse_unsorted_events_by_default(tmp_path):
    dat = _dat(2, [(5, _v2(1, 1, 1)), (2, _v2(1, 1, 1))])
    evt2 = _evt2([_cd(1, 1, 1, 5), _cd(1, 1, 1, 2)])
    evt3 = _evt3_file([_w(TIME_LOW, 5), _w(ADDR_X, 1), _w(TIME_LOW, 2), _w(ADDR_X, 1)])
    (tmp_path / "u.dat").write_bytes(dat)
    (tmp_path / "u.raw").write_bytes(evt3)
    for decode_it in (lambda: prophesee.decode_dat(dat), lambda: prophesee.read_dat(tmp_path / "u.dat"),
                      lambda: prophesee.decode_evt2(evt2), lambda: prophesee.decode_evt3(evt3),
                      lambda: prophesee.read_prophesee_raw(tmp_path / "u.raw")):
        with pytest.raises(EventFormatError, match="timestamps decrease at event 1"):
            decode_it()
    assert prophesee.read_prophesee_raw(tmp_path / "u.raw", allow_unsorted=True)["t"].tolist() == [2, 5]


@pytest.mark.parametrize("writer, sensor",
                         [(prophesee.write_evt2, (640, 480, 2)), (prophesee.write_evt3, (1280, 720, 2))])
def test_writers_name_the_sensor_in_the_header(tmp_path, writer, sensor):
    events = data.make_events([1], [2], [3], [1])
    writer(tmp_path / "default.raw", events)
    writer(tmp_path / "small.raw", events, sensor_size=(304, 240, 2))
    for name, (w, h, _) in (("default.raw", sensor), ("small.raw", (304, 240, 2))):
        raw = (tmp_path / name).read_bytes()
        assert f"height={h};width={w}\n".encode() in raw and f"% geometry {w}x{h}\n".encode() in raw
        assert prophesee.raw_pieces(Source(name, raw), None)[0] == (w, h, 2)


def test_evt3_writer_covers_timestamps_below_two_to_the_24(tmp_path):
    ok = data.make_events([1, 2], [1, 1], [0, (1 << 24) - 1], [1, 0])
    prophesee.write_evt3(tmp_path / "ok.raw", ok)
    assert np.array_equal(prophesee.read_prophesee_raw(tmp_path / "ok.raw"), ok)
    with pytest.raises(ValueError, match="below 2\\*\\*24"):
        prophesee.write_evt3(tmp_path / "late.raw", data.make_events([1], [1], [1 << 24], [1]))
