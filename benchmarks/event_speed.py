"""Event pipeline speed: spikelab against Tonic, measured in one run.

* ToFrame (n_time_bins=10) and Denoise (filter_time=10 ms) on 2M random events of a
  128x128 sensor: medians and ratios (Tonic time / spikelab time).
* Loading an N-MNIST-like split (``--samples`` recordings of ~4,000 events in the
  dataset's layout, generated from the real samples when available): spikelab's cached
  dataset + ToFrame, spikelab without the cache, and Tonic's reader + ToFrame, in samples/s;
  beside them, the samples/s of a training step of a small spiking network on such frames,
  to show whether loading keeps up with training.

    python benchmarks/event_speed.py [--events 2000000] [--samples 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import spikelab as sl
from spikelab.data import functional as F
from spikelab.data.events import make_events
from spikelab.data.formats.atis import write_atis_bin

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "nmnist_train60"


def timed(fn, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out) * 1e3


def random_events(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    events = make_events(rng.integers(0, 128, n), rng.integers(0, 128, n), np.sort(rng.integers(0, 4_000_000, n)),
                         rng.integers(0, 2, n))
    events["t"] += 20_000
    return events


def make_split(root: Path, count: int) -> None:
    """An N-MNIST-layout split: the real digits (jittered) if present, else random events."""
    sources = sorted(SAMPLES.glob("Train/*/*.bin")) if SAMPLES.exists() else []
    rng = np.random.default_rng(1)
    for i in range(count):
        label = i % 10
        if sources:
            from spikelab.data import read_events

            ev = read_events(sources[i % len(sources)])
            label = int(sources[i % len(sources)].parent.name)
            ev["t"] = np.sort(ev["t"] + rng.integers(0, 50, len(ev)))
        else:
            n = 4000
            ev = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), np.sort(rng.integers(0, 300_000, n)),
                             rng.integers(0, 2, n))
        folder = root / "Train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        write_atis_bin(folder / f"{i:05d}.bin", ev)


def epoch_rate(dataset, limit: int) -> float:
    start = time.perf_counter()
    for i in range(limit):
        dataset[i]
    return limit / (time.perf_counter() - start)


def train_rate(batch: int = 128, steps: int = 5) -> float:
    net = sl.layers.Sequential(sl.layers.Flatten(), nn.Linear(2 * 34 * 34, 256), sl.LIF(tau=2.0), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters())
    x = torch.rand(10, batch, 2, 34, 34)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = nn.functional.cross_entropy(net(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    ms = timed(step, steps)
    return batch / (ms / 1e3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import tonic
    import tonic.functional as TF

    events = random_events(args.events)
    size = (128, 128, 2)
    ours = timed(lambda: F.to_frame(events, size, n_time_bins=10), args.repeats)
    theirs = timed(lambda: TF.to_frame_numpy(events.copy(), size, n_time_bins=10), min(args.repeats, 3))
    print(f"tonic {tonic.__version__}, torch threads {torch.get_num_threads()}")
    print(f"ToFrame, {args.events:,} events:  spikelab {ours:8.1f} ms   tonic {theirs:8.1f} ms   "
          f"ratio {theirs / ours:6.1f}x")
    ours = timed(lambda: F.denoise(events, 10_000), args.repeats)
    theirs = timed(lambda: TF.denoise_numpy(events, 10_000), 1)
    print(f"Denoise, {args.events:,} events:  spikelab {ours:8.1f} ms   tonic {theirs:8.1f} ms   "
          f"ratio {theirs / ours:6.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "nmnist"
        make_split(root, args.samples)
        to_frames = sl.data.transforms.ToFrame((34, 34, 2), n_time_bins=10)
        start = time.perf_counter()
        cached = sl.data.NMNIST(root, "train", transform=to_frames, cache=True, cache_dir=Path(tmp) / "cache")
        build = time.perf_counter() - start
        plain = sl.data.NMNIST(root, "train", transform=to_frames)
        tonic_frames = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_time_bins=10)
        files = [p for p, _ in plain.samples]

        class TonicLike:
            def __getitem__(self, i):
                return tonic_frames(tonic.io.read_mnist_file(str(files[i]), dtype=tonic.io.events_struct)), 0

        limit = min(args.samples, 5000)
        rates = {"spikelab cached": epoch_rate(cached, limit), "spikelab uncached": epoch_rate(plain, limit),
                 "tonic reader + ToFrame": epoch_rate(TonicLike(), min(limit, 1000))}
        training = train_rate()
        print(f"N-MNIST-like split, {args.samples} recordings (cache built in {build:.1f} s):")
        for name, rate in rates.items():
            print(f"  {name:24s} {rate:10.0f} samples/s   ({rate / rates['tonic reader + ToFrame']:.1f}x tonic)")
        print(f"  training step (MLP 2312-256-10, LIF, T=10, batch 128): {training:.0f} samples/s "
              f"-> cached loading is {rates['spikelab cached'] / training:.1f}x the training rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
