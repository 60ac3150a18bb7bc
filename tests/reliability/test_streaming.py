"""Streaming reads as strictly as whole-file reading: same events or the same error at the same
byte offset; bounded decompression; only regular files; SHD values range-checked before casts."""

from __future__ import annotations

import os
import struct
import threading
import tracemalloc
import warnings

import numpy as np
import pytest

from spikelab import data
from spikelab.data import EventFormatError, make_events
from spikelab.data.formats import aedat2, aedat3, aedat4, atis, prophesee
from spikelab.data.stream import iter_chunks
from tests.aedat4_files import compress as _compress
from tests.aedat4_files import evts as _evts_flatbuffer
from tests.aedat4_files import write_aedat4

# ----- recordings --------------------------------------------------------------------------------


def write_dat(path, events) -> None:
    """A Prophesee DAT (version 2) recording."""
    raw = np.empty(len(events), [("t", "<u4"), ("data", "<u4")])
    raw["t"] = events["t"]
    raw["data"] = (events["x"].astype(np.int64) | (events["y"].astype(np.int64) << 14)
                   | (events["p"].astype(np.int64) << 28))
    with open(path, "wb") as f:
        f.write(b"% Data file containing CD events.\n% Version 2\n% Date 2020-01-01 00:00:00\n")
        f.write(bytes([0, 8]) + raw.tobytes())


def random_events(n, width, height, seed=0, t_max=3 * (1 << 23)):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, width, n), rng.integers(0, height, n), np.sort(rng.integers(0, t_max, n)),
                       rng.integers(0, 2, n))


# name: (format, sensor (w, h), writer(path, events), read options)
FORMATS = {
    "atis": ("atis", (34, 34), atis.write_atis_bin, {"sensor_size": (34, 34, 2)}),
    "aedat2": ("aedat2", (100, 128), aedat2.write_aedat2, {}),  # x < 100: see the coordinates case
    "aedat3": ("aedat3", (128, 128), lambda p, e: aedat3.write_aedat3(p, e, packet_events=50), {}),
    "aedat4-lz4": ("aedat4", (346, 260), lambda p, e: write_aedat4(p, e, "lz4"), {}),
    "aedat4-none": ("aedat4", (346, 260), lambda p, e: write_aedat4(p, e, "none"), {}),
    "evt2": ("prophesee_raw", (640, 480), prophesee.write_evt2, {}),
    "evt3": ("prophesee_raw", (1280, 720), prophesee.write_evt3, {}),
    "dat": ("dat", (304, 240), write_dat, {"sensor_size": (304, 240, 2)}),
}


def _outcome(fn):
    try:
        return "events", fn()
    except EventFormatError as err:
        return "error", (str(err), err.offset)


def _both(path, fmt, options, chunks=(256, 1000)):
    """The whole-file outcome, after checking every streamed outcome equals it."""
    whole = _outcome(lambda: data.read_events(path, format=fmt, **options))
    for chunk in chunks:
        parts = _outcome(lambda: list(iter_chunks(path, format=fmt, chunk_bytes=chunk, **options)))
        if parts[0] == "events":
            parts = ("events", np.concatenate(parts[1]) if parts[1] else np.zeros(0, data.EVENT_DTYPE))
        assert parts[0] == whole[0], (path.name, chunk, whole[1] if whole[0] == "error" else None,
                                      parts[1] if parts[0] == "error" else None)
        if whole[0] == "events":
            assert np.array_equal(parts[1], whole[1]), (path.name, chunk)
        else:
            assert parts[1] == whole[1], (path.name, chunk)
    return whole


# ----- 5: one validation path: the same events or the same error, offset included -----------------

@pytest.mark.parametrize("name", sorted(FORMATS))
def test_streamed_and_whole_file_agree_on_corrupt_recordings(tmp_path, name):
    fmt, (w, h), writer, options = FORMATS[name]
    n = 1500
    t_max = (1 << 24) - 1 if name == "evt3" else 3 * (1 << 23)
    events = random_events(n, w, h, seed=7, t_max=t_max)
    clean = tmp_path / "clean"
    writer(clean, events)
    raw = clean.read_bytes()
    assert np.array_equal(_both(clean, fmt, options)[1], events)

    cases = {}
    rng = np.random.default_rng(sum(map(ord, name)))
    for seed in range(12):  # random byte flips, mostly in the later part of the file
        blob = bytearray(raw)
        for pos in rng.integers(len(raw) // 4, len(raw), rng.integers(1, 4)):
            blob[pos] ^= int(rng.integers(1, 256))
        cases[f"flip{seed}"] = (bytes(blob), options)
    for cut in (len(raw) - 1, len(raw) - 3, len(raw) * 2 // 3):
        cases[f"cut{cut}"] = (raw[:cut], options)
    late = n * 4 // 5
    bad_xy = events.copy()
    if name == "aedat2":  # 7-bit fields cannot leave the DVS128 array: narrow the sensor instead
        bad_xy["x"][late] = 120
        xy_options = {**options, "sensor_size": (100, 128, 2)}
    else:
        bad_xy["x"][late] = w + 50
        xy_options = options
    path = tmp_path / "xy"
    writer(path, bad_xy)
    cases["coordinates"] = (path.read_bytes(), xy_options)
    if name == "atis":  # the writer refuses unsorted times: zero the low time bytes of a late record
        blob = bytearray(raw)
        records = np.frombuffer(raw, np.uint8).reshape(-1, 5)
        row = late + int((records[:late + 1, 1] == 240).sum())  # skip the overflow markers
        while records[row, 1] == 240:
            row += 1
        blob[5 * row + 2] &= 0x80
        blob[5 * row + 3:5 * row + 5] = b"\0\0"
        cases["backwards"] = (bytes(blob), options)
    else:
        back = events.copy()
        back["t"][late] = back["t"][late // 2]
        path = tmp_path / "back"
        writer(path, back)
        cases["backwards"] = (path.read_bytes(), options)

    late_errors = 0
    for case, (blob, opts) in cases.items():
        path = tmp_path / f"{name}-{case}"
        path.write_bytes(blob)
        kind, what = _both(path, fmt, opts)
        if kind == "error":
            assert path.name in what[0]
            late_errors += what[1] is not None and what[1] > 2000
    assert late_errors >= 5  # the corruptions do reach later chunks
    for case in ("coordinates", "backwards"):
        kind, what = _both(tmp_path / f"{name}-{case}", fmt, cases[case][1])
        assert kind == "error" and what[1] > 1000, (case, what)


def test_aedat3_stream_names_the_byte_of_the_bad_event(tmp_path):
    events = random_events(4000, 128, 128, seed=3)
    aedat3.write_aedat3(tmp_path / "g.aedat", events, packet_events=100)
    raw = bytearray((tmp_path / "g.aedat").read_bytes())
    start = raw.index(b"#!END-HEADER\r\n") + 14
    k = 3456  # packets of 100 events, each after a 28-byte header
    at = start + (k // 100 + 1) * 28 + 8 * k
    word = int.from_bytes(raw[at:at + 4], "little")
    raw[at:at + 4] = ((word & 0x1FFFF) | (200 << 17)).to_bytes(4, "little")  # x = 200 on a 128-wide sensor
    (tmp_path / "bad.aedat").write_bytes(bytes(raw))
    kind, (message, offset) = _both(tmp_path / "bad.aedat", "aedat3", {}, chunks=(64, 4096, 50_000))
    assert kind == "error" and offset == at and f"event {k} at (x=200" in message


# ----- 1: AEDAT 4 header size ----------------------------------------------------------------------

@pytest.mark.parametrize("size", [-16, 0, 8, 1 << 30, 0x7FFFFFFF])
def test_aedat4_corrupt_header_size_fails_alike(tmp_path, size):
    write_aedat4(tmp_path / "ok.aedat4", random_events(500, 346, 260))
    raw = bytearray((tmp_path / "ok.aedat4").read_bytes())
    raw[14:18] = struct.pack("<i", size)
    path = tmp_path / "bad.aedat4"
    path.write_bytes(bytes(raw))
    kind, (message, offset) = _both(path, None, {})
    assert kind == "error" and offset == 14 and "header size" in message and "bad.aedat4" in message


def test_aedat4_header_size_pointing_elsewhere_is_not_silent(tmp_path):
    events = random_events(500, 346, 260)
    write_aedat4(tmp_path / "ok.aedat4", events)
    raw = bytearray((tmp_path / "ok.aedat4").read_bytes())
    good = struct.unpack_from("<i", raw, 14)[0]
    for size in (good - 4, good + 4, len(raw) - 18):
        raw[14:18] = struct.pack("<i", size)
        path = tmp_path / f"h{size}.aedat4"
        path.write_bytes(bytes(raw))
        kind, what = _both(path, None, {})
        assert kind == "error" or np.array_equal(what, events), size  # never fewer events without a word


# ----- 2: huge packet fields -----------------------------------------------------------------------

@pytest.mark.parametrize("capacity", [0x7FFFFFFF, 1 << 28, -5])
def test_aedat3_huge_capacity_is_a_format_error(tmp_path, capacity):
    aedat3.write_aedat3(tmp_path / "g.aedat", random_events(300, 128, 128), packet_events=100)
    raw = bytearray((tmp_path / "g.aedat").read_bytes())
    start = raw.index(b"#!END-HEADER\r\n") + 14
    second = start + 28 + 800
    raw[second + 20:second + 24] = struct.pack("<i", capacity)
    (tmp_path / "cap.aedat").write_bytes(bytes(raw))
    kind, (message, offset) = _both(tmp_path / "cap.aedat", None, {}, chunks=(64, 1 << 20))
    assert kind == "error" and offset == second
    assert "cap.aedat" in message and "eventCapacity" in message and f"{capacity}" in message
    assert "expected 0.." in message


# ----- 3: decompression bounded by the declared size and a cap ------------------------------------

def _bomb(compression: str, prefix: int, total: int) -> bytes:
    """``total`` bytes (a 4-byte FlatBuffer size prefix, then zeros), compressed in a stream."""
    step = bytes(1 << 20)
    first = struct.pack("<I", prefix) + step[4:]
    if compression == "lz4":
        import lz4.frame

        c = lz4.frame.LZ4FrameCompressor()
        parts = [c.begin(), c.compress(first)] + [c.compress(step) for _ in range(total // len(step) - 1)]
        return b"".join(parts + [c.flush()])
    import zstandard

    c = zstandard.ZstdCompressor().compressobj()
    parts = [c.compress(first)] + [c.compress(step) for _ in range(total // len(step) - 1)]
    return b"".join(parts + [c.flush()])


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
@pytest.mark.parametrize("prefix", [0xFFFFFFF0, 100, (256 << 20) - 4])
def test_decompression_bombs_stop_early(tmp_path, compression, prefix):
    body = _bomb(compression, prefix, 256 << 20)  # 256 MiB of zeros in about a megabyte or less
    path = tmp_path / "bomb.aedat4"
    offsets = write_aedat4(path, None, compression, bodies=[body])
    limit = {"max_packet_bytes": 16 << 20}
    tracemalloc.start()
    try:
        kind, (message, offset) = _both(path, None, limit, chunks=(1 << 20,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kind == "error" and offset == offsets[0] and "bomb.aedat4" in message
    assert peak < 64 << 20, peak  # never near the 256 MiB the packet inflates to
    if prefix == 100:
        assert "more than" in message and "declares" in message
    else:
        assert "limit" in message


def test_lz4_frame_declaring_a_huge_size_is_refused_before_decompressing(tmp_path):
    import lz4.frame

    body = lz4.frame.compress(bytes(4 << 20), store_size=True)
    path = tmp_path / "declared.aedat4"
    offsets = write_aedat4(path, None, "lz4", bodies=[body])
    kind, (message, offset) = _both(path, None, {"max_packet_bytes": 1 << 20})
    assert kind == "error" and offset == offsets[0] and "declares 4194304" in message


def test_packet_limit_keyword_environment_and_default(tmp_path, monkeypatch):
    events = random_events(100_000, 346, 260)  # one packet of 1.6 MB decompressed
    path = tmp_path / "big.aedat4"
    offsets = write_aedat4(path, events, "lz4", packet_events=100_000)
    assert aedat4.packet_limit() == aedat4.MAX_PACKET_BYTES == 1 << 30
    assert np.array_equal(_both(path, None, {}, chunks=(1 << 16,))[1], events)
    kind, (message, offset) = _both(path, None, {"max_packet_bytes": 1 << 20}, chunks=(1 << 16,))
    assert kind == "error" and offset == offsets[0] and "limit of 1048576" in message
    monkeypatch.setenv(aedat4.MAX_PACKET_ENV, str(1 << 20))
    assert aedat4.packet_limit() == 1 << 20
    kind, (message, offset) = _both(path, None, {}, chunks=(1 << 16,))
    assert kind == "error" and offset == offsets[0] and aedat4.MAX_PACKET_ENV in message
    assert np.array_equal(data.read_events(path, max_packet_bytes=1 << 22), events)  # the keyword wins
    monkeypatch.setenv(aedat4.MAX_PACKET_ENV, "lots")
    with pytest.raises(ValueError, match=aedat4.MAX_PACKET_ENV):
        data.read_events(path)


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_truncated_or_padded_packets_do_not_pass(tmp_path, compression):
    events = random_events(200, 346, 260)
    flat = _evts_flatbuffer(events)
    for name, buf in {"short": flat[:-16], "long": flat + bytes(16)}.items():
        path = tmp_path / f"{name}.aedat4"
        offsets = write_aedat4(path, None, compression, bodies=[_compress(buf, compression)])
        kind, (message, offset) = _both(path, None, {})
        assert kind == "error" and offset == offsets[0] and "declares" in message, message


# ----- 4: only regular files -----------------------------------------------------------------------

def _refused_quickly(fn, unblock=None):
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        if unblock:
            unblock()
        thread.join(5)
        pytest.fail("the reader hung")
    return box.get("error")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_refused_not_read(tmp_path):
    fifo = tmp_path / "pipe.bin"
    os.mkfifo(fifo)

    def unblock():  # let a reader stuck in open() or read() go
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    calls = [lambda: data.read_events(fifo), lambda: data.read_events(fifo, format="atis"),
             lambda: list(iter_chunks(fifo)), lambda: list(iter_chunks(fifo, format="atis")),
             lambda: data.read_atis_bin(fifo), lambda: data.read_shd(fifo, 0)]
    for call in calls:
        err = _refused_quickly(call, unblock)
        assert isinstance(err, EventFormatError) and "pipe.bin" in str(err) and "FIFO" in str(err), err


def test_directories_and_devices_are_refused(tmp_path):
    folder = tmp_path / "rec.bin"
    folder.mkdir()
    targets = [(folder, "directory")]
    if os.path.exists("/dev/null"):
        targets.append(("/dev/null", "device"))
    for target, kind in targets:
        for call in (lambda: data.read_events(target, format="atis"), lambda: data.read_events(target),
                     lambda: list(iter_chunks(target, format="aedat2"))):
            err = _refused_quickly(call)
            assert isinstance(err, EventFormatError) and str(target) in str(err) and kind in str(err), err
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        list(iter_chunks(tmp_path / "missing.bin", format="atis"))


# ----- 6: SHD values checked before the casts ------------------------------------------------------

def _shd(path, units, times, units_dtype=np.int32):
    import h5py

    with h5py.File(path, "w") as f:
        u = f.create_dataset("spikes/units", (1,), dtype=h5py.vlen_dtype(units_dtype))
        t = f.create_dataset("spikes/times", (1,), dtype=h5py.vlen_dtype(np.float64))
        u[0] = np.asarray(units, units_dtype)
        t[0] = np.asarray(times, np.float64)
        f.create_dataset("labels", data=np.array([2], np.uint16))


@pytest.mark.parametrize("units, times, field, index, value", [
    ([1, 65541, 3], [0.1, 0.2, 0.3], "spikes/units", 1, "65541"),
    ([1, 2, -65531], [0.1, 0.2, 0.3], "spikes/units", 2, "-65531"),
    ([700, 2, 3], [0.1, 0.2, 0.3], "spikes/units", 0, "700"),
    ([1, 2, 3], [0.1, 0.2, 1e13], "spikes/times", 2, "10000000000000.0"),
    ([1, 2, 3], [0.1, float("nan"), 0.3], "spikes/times", 1, "nan"),
    ([1, 2, 3], [-0.5, 0.2, 0.3], "spikes/times", 0, "-0.5"),
])
def test_shd_out_of_range_values_are_refused_without_wrapping(tmp_path, units, times, field, index, value):
    path = tmp_path / "shd_train.h5"
    _shd(path, units, times)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value in cast" on the way
        with pytest.raises(EventFormatError) as err:
            data.read_shd(path, 0)
    message = str(err.value)
    assert "shd_train.h5" in message and field in message and "sample 0" in message
    assert f"spike {index}" in message and value in message


def test_shd_fractional_units_are_refused(tmp_path):
    path = tmp_path / "shd.h5"
    _shd(path, [1.0, 2.5], [0.1, 0.2], units_dtype=np.float32)
    with pytest.raises(EventFormatError, match=r"spikes/units of sample 0, spike 1: value 2.5"):
        data.read_shd(path, 0)
    _shd(path, [1.0, 699.0], [0.1, 9.2e12], units_dtype=np.float32)  # whole floats and the latest time pass
    ev, label = data.read_shd(path, 0)
    assert ev["x"].tolist() == [1, 699] and ev["t"][1] == round(9.2e12 * 1e6) and label == 2
