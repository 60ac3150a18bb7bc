"""Every plot renders to a file and shows what it should: labels, artists, data extents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spikelab import viz
from spikelab.data.events import make_events

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000
    return data


def _stream(n=4000, size=(32, 24), seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 100_000, n))
    return make_events(rng.integers(0, size[0], n), rng.integers(0, size[1], n), t, rng.integers(0, 2, n))


def test_spike_raster(tmp_path):
    spikes = torch.zeros(20, 2, 5)
    spikes[3, 0, 1] = spikes[7, 1, 4] = spikes[19, 0, 0] = 1  # [T, 2, 5] of one sample: 10 neurons
    fig = viz.spike_raster(spikes, tmp_path / "r.png")
    _png(tmp_path / "r.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time step" and ax.get_ylabel() == "neuron"
    points = ax.collections[0].get_offsets()
    assert sorted(map(tuple, np.asarray(points).tolist())) == [(3, 1), (7, 9), (19, 0)]
    assert ax.get_xlim() == (-0.5, 19.5) and ax.get_ylim() == (-0.5, 9.5)
    assert "3 spikes" in ax.get_title()
    with pytest.raises(ValueError, match="expected \\[T, neurons...\\]"):
        viz.spike_raster(torch.zeros(5))


def test_membrane_trace_marks_threshold_spikes_and_resets(tmp_path):
    v = torch.tensor([0.2, 0.6, 1.1, 0.3, 0.9, 1.4, 0.1])
    s = (v >= 1.0).float()
    fig = viz.membrane_trace(v, 1.0, s, tmp_path / "m.png")
    _png(tmp_path / "m.png")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "membrane potential" and ax.get_xlabel() == "time step"
    trace, threshold = ax.lines[0], ax.lines[1]
    assert np.allclose(trace.get_ydata(), v.numpy()) and np.allclose(threshold.get_ydata(), 1.0)
    assert np.allclose(np.asarray(ax.collections[0].get_offsets())[:, 0], [2, 5])  # spike markers
    resets = [ln for ln in ax.lines[2:] if ln.get_linestyle() == ":"]
    assert [ln.get_xdata()[0] for ln in resets] == [2.5, 5.5]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["membrane", "threshold", "spike"]


def test_rate_histogram(tmp_path):
    rates = {"lif1": torch.rand(100) * 0.5, "lif2": torch.full((30,), 0.25)}
    fig = viz.rate_histogram(rates, tmp_path / "h.png", bins=10)
    _png(tmp_path / "h.png")
    assert len(fig.axes) == 2
    for ax, (name, r) in zip(fig.axes, rates.items()):
        heights = [p.get_height() for p in ax.patches]
        assert len(heights) == 10 and sum(heights) == len(r)
        assert ax.get_xlabel() == "firing rate (spikes / step)" and name in ax.get_title()


def test_event_frames_and_animation(tmp_path):
    ev = _stream()
    fig = viz.event_frames(ev, (32, 24, 2), n_frames=4, path=tmp_path / "f.png")
    _png(tmp_path / "f.png")
    assert len(fig.axes) == 4
    for ax in fig.axes:
        img = ax.images[0].get_array()
        assert img.shape == (24, 32, 3)  # H x W x RGB
        assert (np.asarray(img) < 1).any()  # events drawn
        assert ax.get_title().endswith("ms")
    with pytest.raises(ValueError, match="empty"):
        viz.event_frames(ev[:0], (32, 24, 2))
    gif = viz.event_animation(ev, (32, 24, 2), tmp_path / "a.gif", n_frames=5)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 5


def test_events_and_spikes(tmp_path):
    ev = _stream()
    spikes = (torch.rand(12, 8) < 0.2).float()
    fig = viz.events_and_spikes(ev, (32, 24, 2), spikes, tmp_path / "s.png")
    _png(tmp_path / "s.png")
    left, right = fig.axes
    assert left.images[0].get_array().shape == (24, 32, 3) and f"{len(ev)} events" in left.get_title()
    assert len(right.collections[0].get_offsets()) == int(spikes.sum())
    assert right.get_xlabel() == "time step"


def test_accuracy_vs_timesteps(tmp_path):
    acc = {1: 0.2, 4: 0.7, 16: 0.9, 64: 0.95}
    fig = viz.accuracy_vs_timesteps(acc, reference=0.96, path=tmp_path / "a.png")
    _png(tmp_path / "a.png")
    ax = fig.axes[0]
    assert np.allclose(ax.lines[0].get_xdata(), [0, 2, 4, 6]) and np.allclose(ax.lines[0].get_ydata(), list(acc.values()))
    assert np.allclose(ax.lines[1].get_ydata(), 0.96)
    assert ax.get_xlabel() == "log2(time steps)" and ax.get_ylim() == (0, 1)
