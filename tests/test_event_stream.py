"""Chunked streaming readers: the same events as the whole-file readers, whatever the chunk size."""

import numpy as np
import pytest

from spikelab import data
from spikelab.data.formats import aedat2, aedat3, atis, prophesee
from spikelab.data.stream import iter_chunks, iter_windows

SAMPLES = ["nmnist/sample_nmnist.bin", "aedat2/moving_dark_box_dvs128.aedat", "aedat4/davis346.aedat4",
           "prophesee_dat/sample_ncars.dat", "prophesee_raw/gen3_evt2.raw", "prophesee_raw/gen4_evt3_small.raw"]


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("chunk", [1000, 65536])
def test_streamed_chunks_equal_the_whole_file(samples_dir, name, chunk):
    whole = data.read_events(samples_dir / name)
    parts = list(iter_chunks(samples_dir / name, chunk_bytes=chunk))
    assert len(parts) >= 1 and np.array_equal(np.concatenate(parts), whole)


def test_decoder_state_crosses_chunks(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    events = data.make_events(rng.integers(0, 34, n), rng.integers(0, 34, n),
                              np.sort(rng.integers(0, 3 * (1 << 23), n)), rng.integers(0, 2, n))
    atis.write_atis_bin(tmp_path / "a.bin", events)  # overflow markers mid-file
    prophesee.write_evt2(tmp_path / "e2.raw", events)  # time-high words mid-file
    prophesee.write_evt3(tmp_path / "e3.raw", events[events["t"] < (1 << 24)])
    aedat3.write_aedat3(tmp_path / "g.aedat", events, packet_events=100)
    for path, expected in [(tmp_path / "a.bin", events), (tmp_path / "e2.raw", events),
                           (tmp_path / "e3.raw", events[events["t"] < (1 << 24)]), (tmp_path / "g.aedat", events)]:
        for chunk in (64, 1000, 1 << 20):
            assert np.array_equal(np.concatenate(list(iter_chunks(path, chunk_bytes=chunk))), expected), path


def test_windows_partition_time(samples_dir):
    path = samples_dir / "aedat2" / "moving_dark_box_dvs128.aedat"
    whole = data.read_events(path)
    windows = list(iter_windows(path, 50_000, chunk_bytes=100_000))
    assert np.array_equal(np.concatenate(windows), whole)
    start = whole["t"][0]
    for k, w in enumerate(windows):
        if len(w):
            assert w["t"].min() >= start + k * 50_000 and w["t"].max() < start + (k + 1) * 50_000
    assert len(windows) == (whole["t"][-1] - start) // 50_000 + 1


def test_stream_errors_name_the_offset(tmp_path):
    events = data.make_events([1, 2, 3], [1, 2, 3], [10, 20, 30], [1, 0, 1])
    aedat2.write_aedat2(tmp_path / "t.aedat", events)
    raw = (tmp_path / "t.aedat").read_bytes()
    (tmp_path / "cut.aedat").write_bytes(raw[:-3])
    with pytest.raises(data.EventFormatError, match=r"cut.aedat at byte \d+: the last event is truncated"):
        list(iter_chunks(tmp_path / "cut.aedat", chunk_bytes=8))
    backwards = data.make_events([1, 2], [1, 2], [50, 10], [1, 0])
    aedat2.write_aedat2(tmp_path / "b.aedat", backwards)
    with pytest.raises(data.EventFormatError, match="timestamps decrease"):
        list(iter_chunks(tmp_path / "b.aedat", chunk_bytes=8))
    with pytest.raises(ValueError, match="window_us"):
        list(iter_windows(tmp_path / "t.aedat", 0))
