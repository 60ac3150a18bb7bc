"""Plots of spiking activity and event streams, drawn with matplotlib straight to files.

Every function builds a :class:`matplotlib.figure.Figure` without pyplot (no display, no global
state), saves it when ``path`` is given (the format follows the suffix) and returns it, so a
notebook can show it and a test can read its axes. ``event_animation`` writes a GIF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.figure import Figure

PathLike = Union[str, Path, None]
ON, OFF = np.array([0.85, 0.15, 0.1]), np.array([0.1, 0.3, 0.9])


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float32).numpy()
    return np.asarray(x)


def _save(fig: Figure, path: PathLike) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def spike_raster(spikes, path: PathLike = None, title: str = "spike raster", max_neurons: Optional[int] = None) -> Figure:
    """Dots at (step, neuron) for ``spikes`` ``[T, ...]`` of one sample (features flattened)."""
    s = _numpy(spikes)
    if s.ndim < 2:
        raise ValueError(f"spikes: expected [T, neurons...] of one sample, got shape {s.shape}")
    s = s.reshape(s.shape[0], -1)
    if max_neurons is not None:
        s = s[:, :max_neurons]
    fig = Figure(figsize=(6, 3.5))
    _raster(fig.add_subplot(), s, title)
    fig.tight_layout()
    return _save(fig, path)


def _raster(ax, s: np.ndarray, title: str) -> None:
    """Draw ``s`` ``[T, N]`` as dots at (step, neuron)."""
    t, n = np.nonzero(s)
    ax.scatter(t, n, s=4, marker="|", color="black")
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    ax.set_title(f"{title} ({len(t)} spikes)")


def membrane_trace(membrane, threshold: float, spikes=None, path: PathLike = None,
                   title: str = "membrane potential") -> Figure:
    """Membrane ``[T]`` or ``[T, k]`` (k neurons) with the threshold line, a marker at every
    spike and a dotted line at each reset (the step after a spike)."""
    v = _numpy(membrane)
    v = v[:, None] if v.ndim == 1 else v.reshape(v.shape[0], -1)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    steps = np.arange(v.shape[0])
    for k in range(v.shape[1]):
        ax.plot(steps, v[:, k], label=f"neuron {k}" if v.shape[1] > 1 else "membrane")
    ax.axhline(float(threshold), color="red", linestyle="--", label="threshold")
    if spikes is not None:
        s = _numpy(spikes).reshape(v.shape[0], -1)
        t, k = np.nonzero(s)
        ax.scatter(t, v[t, k], marker="^", color="red", zorder=3, label="spike")
        for step in np.unique(t):
            ax.axvline(step + 0.5, color="gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel("time step")
    ax.set_ylabel("membrane potential")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def rate_histogram(rates: Mapping[str, object], path: PathLike = None, bins: int = 20) -> Figure:
    """One histogram of per-neuron firing rates per layer (``{layer: rates}``)."""
    if not rates:
        raise ValueError("rates: expected at least one layer")
    fig = Figure(figsize=(3.2 * len(rates), 3))
    axes = fig.subplots(1, len(rates), squeeze=False)[0]
    for ax, (name, r) in zip(axes, rates.items()):
        values = _numpy(r).ravel()
        ax.hist(values, bins=bins, range=(0.0, max(1.0, float(values.max(initial=0)))), color="steelblue")
        ax.set_title(f"{name} (mean {values.mean():.3f})")
        ax.set_xlabel("firing rate (spikes / step)")
        ax.set_ylabel("neurons")
    fig.tight_layout()
    return _save(fig, path)


def _frames(events: np.ndarray, sensor_size, n_frames: int) -> np.ndarray:
    from spikelab.data.transforms import ToFrame

    if len(events) == 0:
        raise ValueError("events: the stream is empty; nothing to draw")

    return ToFrame(tuple(sensor_size), n_time_bins=n_frames)(events)


def _rgb(frame: np.ndarray) -> np.ndarray:
    """[P, H, W] counts -> an RGB image: ON events red, OFF events blue, white background."""
    on = frame[-1] / max(frame.max(), 1)
    off = frame[0] / max(frame.max(), 1) if frame.shape[0] > 1 else np.zeros_like(on)
    img = np.ones(on.shape + (3,))
    img -= on[..., None] * (1 - ON)
    img -= off[..., None] * (1 - OFF)
    return img.clip(0, 1)


def event_frames(events: np.ndarray, sensor_size: Sequence[int], n_frames: int = 6, path: PathLike = None) -> Figure:
    """The stream cut into ``n_frames`` equal time bins, one image each (ON red, OFF blue)."""
    frames = _frames(events, sensor_size, n_frames)
    t0, t1 = int(events["t"].min()), int(events["t"].max())
    fig = Figure(figsize=(2.2 * n_frames, 2.6))
    axes = fig.subplots(1, n_frames, squeeze=False)[0]
    edges = np.linspace(t0, t1, n_frames + 1)
    for i, ax in enumerate(axes):
        ax.imshow(_rgb(frames[i]), interpolation="nearest")
        ax.set_title(f"{edges[i] / 1e3:.0f}-{edges[i + 1] / 1e3:.0f} ms", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel("y (pixels)")
    fig.tight_layout()
    return _save(fig, path)


def event_animation(events: np.ndarray, sensor_size: Sequence[int], path: Union[str, Path], n_frames: int = 20,
                    fps: int = 10) -> Path:
    """Write the stream as a GIF of ``n_frames`` time bins; returns the path."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    frames = _frames(events, sensor_size, n_frames)
    fig = Figure(figsize=(3, 3))
    ax = fig.add_subplot()
    ax.set_xticks([])
    ax.set_yticks([])
    image = ax.imshow(_rgb(frames[0]), interpolation="nearest")
    title = ax.set_title("bin 1")

    def show(i):
        image.set_data(_rgb(frames[i]))
        title.set_text(f"bin {i + 1} / {n_frames}")
        return image, title

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FuncAnimation(fig, show, frames=n_frames, blit=False).save(path, writer=PillowWriter(fps=fps))
    return path


def events_and_spikes(events: np.ndarray, sensor_size: Sequence[int], spikes, path: PathLike = None,
                      title: str = "output spikes") -> Figure:
    """Side by side: all input events as one image, and the raster of output spikes ``[T, ...]``."""
    frame = _frames(events, sensor_size, 1)[0]
    s = _numpy(spikes).reshape(_numpy(spikes).shape[0], -1)
    fig = Figure(figsize=(8, 3.2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    left.imshow(_rgb(frame), interpolation="nearest")
    left.set_title(f"input: {len(events)} events")
    left.set_xlabel("x (pixels)")
    left.set_ylabel("y (pixels)")
    _raster(right, s, title)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_vs_timesteps(accuracy: Mapping[int, float], reference: Optional[float] = None, path: PathLike = None,
                          label: str = "SNN", reference_label: str = "ANN",
                          title: str = "accuracy vs simulation length") -> Figure:
    """Accuracy against log2 of the number of time steps, with an optional reference line."""
    ts = sorted(int(t) for t in accuracy)
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    ax.plot([np.log2(t) for t in ts], [accuracy[t] if t in accuracy else accuracy[str(t)] for t in ts],
            marker="o", label=label)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax.set_xlabel("log2(time steps)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _history(history) -> tuple[list[dict], str]:
    """The per-epoch records of ``history`` (records, a ``history.json`` or the run folder
    holding one) and where they came from, for messages."""
    import json

    where = "history"
    if isinstance(history, (str, Path)):
        path = Path(history)
        if path.is_dir():
            path = path / "history.json"
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; expected the history.json that training writes")
        try:
            history = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    if isinstance(history, Mapping):
        history = history.get("history")  # a demo's summary.json holds it under "history"
    if not isinstance(history, Sequence) or isinstance(history, str) or not history or not all(
            isinstance(r, Mapping) and isinstance(r.get("epoch"), (int, float)) for r in history):
        raise ValueError(f"{where}: expected a non-empty list of per-epoch records, each with an 'epoch' "
                         "(as Trainer.fit returns and history.json holds)")
    return [dict(r) for r in history], where


def training_curve(history, path: PathLike = None, title: Optional[str] = None) -> Figure:
    """Accuracy and loss per epoch, for every split the history holds (``train_``, ``val_``,
    ``test_``), with the epoch ``best.pt`` keeps (best validation accuracy, else test) marked.

    ``history``: the list :meth:`spikelab.train.Trainer.fit` returns, a ``history.json`` that
    training writes, or the run folder holding it (a demo's ``summary.json`` works too).
    """
    records, where = _history(history)
    fig = Figure(figsize=(9, 3.4))
    acc_ax, loss_ax = fig.subplots(1, 2)
    styles = {"train": "o", "val": "^", "test": "s"}
    names = {"train": "train", "val": "validation", "test": "test"}
    for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        for split, marker in styles.items():
            points = [(r["epoch"], r[f"{split}_{metric}"]) for r in records
                      if isinstance(r.get(f"{split}_{metric}"), (int, float))]
            if points:
                ax.plot(*zip(*points), marker=marker, label=names[split])
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
    select = "val_accuracy" if any("val_accuracy" in r for r in records) else "test_accuracy"
    scored = [r for r in records if isinstance(r.get(select), (int, float))]
    if scored:
        best = max(scored, key=lambda r: r[select])  # the first of equals, as the trainer keeps it
        acc_ax.axvline(best["epoch"], color="gray", linestyle=":", linewidth=1,
                       label=f"best.pt (epoch {best['epoch']:g})")
    epochs = sorted({r["epoch"] for r in records})
    if len(epochs) <= 20:
        for ax in (acc_ax, loss_ax):
            ax.set_xticks(epochs)
    acc_ax.set_ylim(0, 1)
    for ax in (acc_ax, loss_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title if title is not None else f"training curve ({len(records)} epochs)")
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["spike_raster", "membrane_trace", "rate_histogram", "event_frames", "event_animation",
           "events_and_spikes", "accuracy_vs_timesteps", "training_curve"]
