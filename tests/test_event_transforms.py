"""Event transforms: Tonic's results where Tonic defines them, hand checks elsewhere, interop."""

import numpy as np
import pytest
import tonic.functional as TF
import tonic.transforms as TT
from hypothesis import given, settings
from hypothesis import strategies as st

from spikelab.data import functional as F
from spikelab.data import transforms as T
from spikelab.data.events import EVENT_DTYPE, make_events


def random_events(n, w=32, h=24, t_max=100_000, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), np.sort(rng.integers(0, t_max, n)),
                       rng.integers(0, 2, n))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 10_000), mode=st.sampled_from(
    ["n_time_bins", "time_window", "event_count", "n_event_bins"]), overlap=st.sampled_from([0, 0.25]),
    incomplete=st.booleans())
def test_to_frame_equals_tonic(n, seed, mode, overlap, incomplete):
    events = random_events(n, seed=seed)
    size = (32, 24, 2)
    kwargs = {"n_time_bins": dict(n_time_bins=5, overlap=overlap),
              "n_event_bins": dict(n_event_bins=4, overlap=overlap),
              "time_window": dict(time_window=7000.0, overlap=7000 * overlap, include_incomplete=incomplete),
              "event_count": dict(event_count=max(1, n // 3), overlap=int(n // 3 * overlap),
                                  include_incomplete=incomplete)}[mode]
    ours = T.ToFrame(size, **kwargs)(events)
    theirs = TF.to_frame_numpy(events.copy(), size, **kwargs)
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)
    if mode == "event_count" and not incomplete:
        assert ours.sum() == ours.shape[0] * min(n // 3 or 1, n)


def test_to_frame_single_polarity_and_dtype():
    events = random_events(500)
    frames = F.to_frame(events, (32, 24, 1), n_time_bins=3, dtype=np.float32)
    assert frames.shape == (3, 1, 24, 32) and frames.dtype == np.float32
    with pytest.raises(ValueError, match="exactly one"):
        F.to_frame(events, (32, 24, 2), n_time_bins=3, event_count=4)


def brute_denoise(events, filter_time):
    keep = []
    for i, e in enumerate(events):
        earlier = events[:i]
        near = (np.abs(earlier["x"].astype(int) - e["x"]) + np.abs(earlier["y"].astype(int) - e["y"]) == 1)
        keep.append(bool((near & (earlier["t"] > e["t"] - filter_time)).any()))
    return events[np.array(keep, bool)]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 10_000), filter_time=st.integers(1, 20_000))
def test_denoise_matches_its_definition(n, seed, filter_time):
    events = random_events(n, w=8, h=8, seed=seed)
    out = F.denoise(events, filter_time)
    expected = brute_denoise(events, filter_time)
    # a same-timestamp neighbour that fires later in the array also counts for the latest pixel
    # memory; the brute force only looks backwards, so compare on strictly increasing times
    if np.all(np.diff(events["t"]) > 0):
        assert np.array_equal(out, expected)
    assert set(out["t"]) <= set(events["t"])


def test_denoise_equals_tonic_after_the_first_window():
    events = random_events(5000, w=16, h=16, t_max=1_000_000, seed=3)
    events["t"] += 10_000  # Tonic treats every pixel as active at t < filter_time
    assert np.array_equal(T.Denoise(filter_time=10_000)(events), TF.denoise_numpy(events, 10_000))


def test_voxel_grid_conserves_polarity_sum():
    events = random_events(1000, seed=4)
    grid = T.ToVoxelGrid((32, 24, 2), n_time_bins=6)(events)
    assert grid.shape == (6, 24, 32)
    signed = np.where(events["p"], 1.0, -1.0)
    assert grid.sum() == pytest.approx(signed.sum(), abs=1e-3)
    # the first event lands entirely in bin 0, the last entirely in the last bin
    one = make_events([1, 2], [3, 4], [0, 100], [1, 0])
    g = F.to_voxel_grid(one, (8, 8, 2), 3)
    assert g[0, 3, 1] == 1.0 and g[2, 4, 2] == -1.0 and np.abs(g).sum() == 2.0


def test_geometric_transforms():
    events = make_events([0, 5, 9], [0, 2, 4], [1, 2, 3], [1, 0, 1])
    assert F.flip_lr(events, (10, 5, 2))["x"].tolist() == [9, 4, 0]
    assert F.flip_ud(events, (10, 5, 2))["y"].tolist() == [4, 2, 0]
    cropped = T.CenterCrop((10, 5, 2), (4, 3))(events)
    assert cropped["x"].tolist() == [2] and cropped["y"].tolist() == [1]
    assert F.downsample(events, 0.5)["x"].tolist() == [0, 2, 4]
    assert T.MergePolarities()(events)["p"].tolist() == [False] * 3
    rng = np.random.default_rng(0)
    many = random_events(10_000)
    kept = T.DropEvent(p=0.3, rng=rng)(many)
    assert 0.65 < len(kept) / len(many) < 0.75
    jittered = T.TimeJitter(std=100, rng=rng)(many)
    assert np.all(np.diff(jittered["t"]) >= 0) and jittered["t"].min() >= 0


def test_tonic_interop_both_ways():
    ours = random_events(2000, w=34, h=34)
    # Tonic's transforms on our arrays
    frames = TT.ToFrame(sensor_size=(34, 34, 2), n_time_bins=4)(ours)
    assert frames.shape == (4, 2, 34, 34)
    flipped = TT.RandomFlipLR(sensor_size=(34, 34, 2), p=1.0)(ours)
    assert np.array_equal(flipped["x"], 33 - ours["x"])
    # our transforms on Tonic's arrays, and mixed in one Tonic pipeline
    tonic_events = np.zeros(3, dtype=np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)]))
    assert tonic_events.dtype == EVENT_DTYPE
    pipeline = TT.Compose([TT.Downsample(spatial_factor=0.5), T.ToFrame((17, 17, 2), n_event_bins=1)])
    assert pipeline(ours).shape == (1, 2, 17, 17)


def test_bad_inputs():
    with pytest.raises(TypeError, match="structured array"):
        F.to_frame(np.zeros((5, 4)), (4, 4, 2), n_time_bins=2)
    with pytest.raises(ValueError, match="overlap"):
        F.to_frame(random_events(10), (32, 24, 2), time_window=10, overlap=10)


def test_time_surface_decays_from_the_last_event():
    events = make_events([1, 1, 2], [0, 0, 1], [0, 1000, 2000], [1, 1, 0])
    surf = T.ToTimeSurface((4, 3, 2), tau=1000.0, n_time_bins=2)(events)
    assert surf.shape == (2, 2, 3, 4)
    # sample 0 at t=1000: pixel (1,0) ON fired at 1000 -> 1; pixel (2,1) OFF not yet
    assert surf[0, 1, 0, 1] == pytest.approx(1.0) and surf[0, 0, 1, 2] == 0.0
    # sample 1 at t=2000: (1,0) ON last at 1000 -> e^-1; (2,1) OFF at 2000 -> 1
    assert surf[1, 1, 0, 1] == pytest.approx(np.exp(-1.0)) and surf[1, 0, 1, 2] == pytest.approx(1.0)


def test_large_inputs_take_the_parallel_path_and_agree():
    events = random_events(300_000, w=64, h=48, t_max=2_000_000, seed=9)
    ours = F.to_frame(events, (64, 48, 2), n_time_bins=8)
    assert np.array_equal(ours, TF.to_frame_numpy(events.copy(), (64, 48, 2), n_time_bins=8))
