"""Event file readers: the real recordings in ../shared/samples, round trips, bad input, fuzzing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikelab import data
from spikelab.data import EventFormatError, make_events
from spikelab.data.formats import aedat2, aedat3, aedat4, atis, prophesee

MANIFEST_FIELDS = ("events", "t_first_us", "t_last_us", "x_min", "x_max", "y_min", "y_max", "on_events")


def _manifest(samples_dir):
    return [e for e in json.loads((samples_dir / "MANIFEST.json").read_text()) if "expected" in e]


def _figures(ev):
    return {"events": len(ev), "t_first_us": int(ev["t"][0]), "t_last_us": int(ev["t"][-1]),
            "x_min": int(ev["x"].min()), "x_max": int(ev["x"].max()), "y_min": int(ev["y"].min()),
            "y_max": int(ev["y"].max()), "on_events": int(ev["p"].sum())}


def test_every_sample_recording_reads_exactly(samples_dir):
    entries = _manifest(samples_dir)
    assert len(entries) >= 60
    for entry in entries:
        ev = data.read_events(samples_dir / entry["file"])
        assert ev.dtype == data.EVENT_DTYPE
        expected = {k: entry["expected"][k] for k in MANIFEST_FIELDS}
        assert _figures(ev) == expected, entry["file"]


def test_detected_formats(samples_dir):
    names = {"nmnist/sample_nmnist.bin": "atis", "aedat2/moving_dark_box_dvs128.aedat": "aedat2",
             "aedat4/davis346.aedat4": "aedat4", "prophesee_dat/sample_ncars.dat": "dat",
             "prophesee_raw/gen3_evt2.raw": "prophesee_raw"}
    for name, fmt in names.items():
        assert data.detect_format(samples_dir / name) == fmt


def random_events(n, width, height, seed=0, t_max=10_000_000):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, width, n), rng.integers(0, height, n), np.sort(rng.integers(0, t_max, n)),
                       rng.integers(0, 2, n))


@pytest.mark.parametrize("writer, reader, size", [
    (atis.write_atis_bin, atis.read_atis_bin, (34, 34)),
    (aedat2.write_aedat2, aedat2.read_aedat2, (128, 128)),
    (aedat3.write_aedat3, aedat3.read_aedat3, (128, 128)),
    (prophesee.write_evt2, prophesee.read_prophesee_raw, (640, 480)),
    (prophesee.write_evt3, prophesee.read_prophesee_raw, (1280, 720)),
])
@pytest.mark.parametrize("n", [0, 1, 5000])
def test_round_trip(tmp_path, writer, reader, size, n):
    events = random_events(n, *size, seed=n)
    path = tmp_path / "rec"
    writer(path, events)
    assert np.array_equal(reader(path), events)


def test_atis_overflow_marker_adds_2_pow_23(tmp_path):
    events = make_events([1, 2, 3], [4, 5, 6], [10, (1 << 23) + 7, (1 << 24) + 9], [1, 0, 1])
    atis.write_atis_bin(tmp_path / "a.bin", events)
    raw = np.fromfile(tmp_path / "a.bin", np.uint8).reshape(-1, 5)
    assert (raw[:, 1] == 240).sum() == 2  # two wraps, two markers
    assert np.array_equal(atis.read_atis_bin(tmp_path / "a.bin"), events)


def test_aedat3_long_recording_uses_overflow(tmp_path):
    events = make_events([3, 4], [5, 6], [100, (1 << 31) + 5], [0, 1])
    aedat3.write_aedat3(tmp_path / "g.aedat", events)
    assert np.array_equal(aedat3.read_aedat3(tmp_path / "g.aedat"), events)


def test_shd_round_trip(tmp_path):
    samples = [make_events([0, 699, 5], [0, 0, 0], [10, 20_000, 900_000], [1, 1, 1]), make_events([], [], [], [])]
    data.write_shd(tmp_path / "shd.h5", samples, [3, 17])
    ev, label = data.read_shd(tmp_path / "shd.h5", 0)
    assert label == 3 and np.array_equal(ev, samples[0])
    all_ev, labels = data.read_shd_all(tmp_path / "shd.h5")
    assert labels.tolist() == [3, 17] and len(all_ev[1]) == 0
    assert np.array_equal(data.read_events(tmp_path / "shd.h5", index=0), samples[0])
    with pytest.raises(ValueError, match="index"):
        data.read_events(tmp_path / "shd.h5")


# ----- bad input -------------------------------------------------------------------------------

def test_truncated_files_name_the_offset(tmp_path, samples_dir):
    cases = {"nmnist/sample_nmnist.bin": 5, "aedat2/moving_dark_box_dvs128.aedat": 8,
             "prophesee_dat/sample_ncars.dat": 8, "prophesee_raw/gen3_evt2.raw": 4}
    for name, record in cases.items():
        raw = (samples_dir / name).read_bytes()
        cut = tmp_path / name.replace("/", "_")
        cut.write_bytes(raw[:-1])
        with pytest.raises(EventFormatError, match=rf"{cut.name}.* at byte \d+.*truncated") as err:
            data.read_events(cut, format=data.detect_format(samples_dir / name))
        assert err.value.offset == len(raw) - record
    raw = (samples_dir / "aedat4/davis346.aedat4").read_bytes()
    (tmp_path / "cut.aedat4").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(EventFormatError, match="cut.aedat4 at byte"):
        data.read_events(tmp_path / "cut.aedat4")


def test_wrong_magic_and_corrupt_packets(tmp_path, samples_dir):
    (tmp_path / "x.aedat").write_bytes(b"#!AER-DAT9.9\r\n" + bytes(16))
    with pytest.raises(EventFormatError, match="unrecognised|AEDAT"):
        data.read_events(tmp_path / "x.aedat")
    with pytest.raises(EventFormatError, match="AEDAT 2.0"):
        data.read_events(tmp_path / "x.aedat", format="aedat2")
    events = random_events(100, 128, 128)
    aedat3.write_aedat3(tmp_path / "g.aedat", events)
    raw = bytearray((tmp_path / "g.aedat").read_bytes())
    start = raw.index(b"#!END-HEADER\r\n") + 14
    raw[start + 16:start + 24] = (10**6).to_bytes(4, "little") * 2  # capacity and number far too big
    (tmp_path / "bad.aedat").write_bytes(bytes(raw))
    with pytest.raises(EventFormatError, match=rf"bad.aedat at byte {start}.*past the end"):
        data.read_events(tmp_path / "bad.aedat")
    raw = bytearray((samples_dir / "aedat4/davis346.aedat4").read_bytes())
    header = int.from_bytes(raw[14:18], "little")
    first = 18 + header  # a trigger packet; the event packet follows it
    second = first + 8 + int.from_bytes(raw[first + 4:first + 8], "little")
    raw[second + 8:second + 40] = bytes(32)  # garble the event packet's compressed bytes
    (tmp_path / "bad.aedat4").write_bytes(bytes(raw))
    with pytest.raises(EventFormatError, match=rf"bad.aedat4 at byte {second}: corrupt lz4"):
        data.read_events(tmp_path / "bad.aedat4")


def test_out_of_range_and_unsorted(tmp_path):
    events = make_events([1, 2, 3], [1, 2, 3], [30, 10, 20], [1, 1, 0])
    aedat2.write_aedat2(tmp_path / "u.aedat", events)
    with pytest.raises(EventFormatError, match=r"u.aedat at byte \d+: timestamps decrease at event 1"):
        data.read_events(tmp_path / "u.aedat")
    repaired = data.read_events(tmp_path / "u.aedat", allow_unsorted=True)
    assert repaired["t"].tolist() == [10, 20, 30]
    atis.write_atis_bin(tmp_path / "big.bin", make_events([40], [5], [1], [1]))
    with pytest.raises(EventFormatError, match=r"big.bin at byte 0: event 0 at \(x=40, y=5\) is outside the 34x34"):
        data.read_events(tmp_path / "big.bin", sensor_size=(34, 34, 2))


def test_unknown_files(tmp_path):
    (tmp_path / "note.txt").write_bytes(b"hello")
    with pytest.raises(EventFormatError, match="unrecognised"):
        data.read_events(tmp_path / "note.txt")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        data.read_events(tmp_path / "nope.bin", format="atis")


# ----- fuzzing: random bytes never crash with anything but EventFormatError -----------------------

DECODERS = {
    "atis": lambda b: atis.decode_atis(b),
    "aedat2": lambda b: aedat2.decode_aedat2(b"#!AER-DAT2.0\r\n" + b),
    "aedat2-raw": lambda b: aedat2.decode_aedat2(b),
    "aedat3": lambda b: aedat3.decode_aedat3(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + b),
    "aedat4": lambda b: aedat4.decode_aedat4(aedat4.MAGIC + b),
    "dat": lambda b: prophesee.decode_dat(b"% Version 2\n" + b),
    "evt2": lambda b: prophesee.decode_evt2(b"% evt 2.0\n" + b),
    "evt3": lambda b: prophesee.decode_evt3(b"% evt 3.0\n" + b),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=600))
def test_random_bytes_only_raise_our_error(name, blob):
    try:
        events = DECODERS[name](blob)
    except EventFormatError:
        return
    assert events.dtype == data.EVENT_DTYPE


def _aedat4_prefix_strategy():
    """Valid AEDAT4 header bytes followed by random packets, to fuzz past the header."""
    return st.binary(max_size=400)


@settings(max_examples=150, deadline=None)
@given(tail=_aedat4_prefix_strategy(), cut=st.integers(0, 5000))
def test_aedat4_random_packets_after_a_real_header(tail, cut):
    from tests.needs import samples

    raw = (samples() / "aedat4" / "davis346.aedat4").read_bytes()
    header_end = 18 + int.from_bytes(raw[14:18], "little")
    blob = raw[:header_end] + raw[header_end:header_end + cut] + tail
    try:
        aedat4.decode_aedat4(blob)
    except EventFormatError:
        pass


@settings(max_examples=30, deadline=None)
@given(blob=st.binary(max_size=300))
def test_random_bytes_as_shd_file(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("shd") / "shd_train.h5"
    path.write_bytes(blob)
    with pytest.raises(EventFormatError, match="shd_train.h5"):
        data.read_shd(path, 0)


# ATIS .bin packed by hand from the layout (x; y; p << 7 | t[22:16]; t[15:8]; t[7:0]; y = 240 marks
# a 23-bit timestamp wrap), independent of write_atis_bin.
_ATIS_HAND = bytes([3, 4, 0x80 | 0x01, 0x23, 0x45,  # x 3, y 4, ON, t 0x12345
                    0, 240, 0, 0, 0,  # overflow marker: later events gain 2**23 us
                    5, 6, 0x00, 0x00, 0x07])  # x 5, y 6, OFF, t 7 + 2**23


def test_atis_packed_by_hand(tmp_path):
    ev = atis.decode_atis(_ATIS_HAND)
    assert ev["x"].tolist() == [3, 5] and ev["y"].tolist() == [4, 6] and ev["p"].tolist() == [1, 0]
    assert ev["t"].tolist() == [0x12345, 2 ** 23 + 7]
    bad = _ATIS_HAND + bytes([99, 6, 0, 0, 9])  # the 4th record (byte 15), 3rd event: outside 34 x 34
    (tmp_path / "bad.bin").write_bytes(bad)
    with pytest.raises(EventFormatError, match=r"bad.bin at byte 15: event 2 at \(x=99, y=6\) is outside"):
        atis.read_atis_bin(tmp_path / "bad.bin", sensor_size=(34, 34, 2))


def test_atis_unsorted_is_refused_unless_allowed(tmp_path):
    blob = bytes([1, 1, 0, 0, 10, 2, 2, 0, 0, 5])  # t = 10 then 5
    (tmp_path / "u.bin").write_bytes(blob)
    for read in (lambda: atis.read_atis_bin(tmp_path / "u.bin"), lambda: atis.decode_atis(blob, "u.bin")):
        with pytest.raises(EventFormatError, match=r"u.bin at byte 5: timestamps decrease at event 1"):
            read()
    assert atis.read_atis_bin(tmp_path / "u.bin", allow_unsorted=True)["t"].tolist() == [5, 10]
    assert atis.decode_atis(blob, "u.bin", allow_unsorted=True)["t"].tolist() == [5, 10]


@pytest.mark.parametrize("x, y, t", [(256, 1, [1]), (1, 256, [1]), (-1, 1, [1]), (1, -1, [1]), (1, 240, [1]),
                                     (1, 1, [-1])])
def test_atis_writer_refuses_what_the_layout_cannot_hold(tmp_path, x, y, t):
    with pytest.raises(ValueError, match="ATIS .bin"):
        atis.write_atis_bin(tmp_path / "w.bin", make_events([x], [y], t, [1]))


def test_atis_writer_edges(tmp_path):
    with pytest.raises(ValueError, match="sorted"):
        atis.write_atis_bin(tmp_path / "w.bin", make_events([1, 1], [1, 1], [5, 4], [1, 1]))
    atis.write_atis_bin(tmp_path / "w.bin", make_events([255, 0], [255, 239], [0, 1], [1, 0]))
    assert (tmp_path / "w.bin").read_bytes() == bytes([255, 255, 0x80, 0, 0, 0, 239, 0, 0, 1])
    atis.write_atis_bin(tmp_path / "e.bin", make_events([], [], [], []))
    assert (tmp_path / "e.bin").read_bytes() == b""
