"""The event-driven workload of the Dynamic Confidence benchmark: DigitsDVS at 1 ms bins.

Every DigitsDVS recording (300 ms, 34x34, two polarities) becomes ``T = 300`` frames of
1 ms. Three networks produce per-step outputs ``[T, B, 10]`` on a held-out part of the
train split (for calibration) and on the test split:

- ``trained``: an SNN trained directly on the 1 ms frames (2x2 sum pooling, 578-256-10,
  LIF hidden and LIF output spikes, rate cross-entropy);
- ``trained_tet``: the same trained with the TET loss (per-step cross-entropy), which
  rewards being right early: the training-side counterpart of early stopping;
- ``trained_prefix``: the same trained with ``prefix_ce`` (cross-entropy of the running mean
  at every step): the readout an early exit reads must be right after any number of steps;
- ``converted``: a ReLU CNN trained on mean frames of the recordings' first 30, 60, 100,
  150, 200 and 300 ms (what a rate-coding SNN has integrated by then), converted to IF
  neurons and fed the 1 ms frames.

The outputs are cached (plain tensors, ``weights_only`` loads) so that the policy
analysis can be rerun without training again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import spikelab as sl
from spikelab.convert import convert
from spikelab.data.datasets.digits import DigitsDVS
from spikelab.demo import count_image_cnn, fit_classifier

T_STEPS = 300
BIN_US = 1000
HELD_OUT = 600
SPLIT_SEED = 1234


def frames_1ms(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All recordings of a split as uint8 event counts ``[N, T, 2, 34, 34]`` and labels ``[N]``."""
    dataset = DigitsDVS(split=split, quiet=True)
    out = np.zeros((len(dataset), T_STEPS, 2, 34, 34), dtype=np.uint8)
    for i in range(len(dataset)):
        ev = dataset.events(i)[0]
        t = (ev["t"] - ev["t"].min()) // BIN_US if len(ev) else ev["t"]
        keep = t < T_STEPS
        np.add.at(out[i], (t[keep].astype(np.int64), ev["p"][keep].astype(np.int64), ev["y"][keep].astype(np.int64),
                           ev["x"][keep].astype(np.int64)), 1)
    labels = np.array([label for _, label in dataset.samples])
    return torch.from_numpy(out), torch.from_numpy(labels)


def split_train(x: torch.Tensor, y: torch.Tensor):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))  # files sorted by class
    fit, held = order[HELD_OUT:], order[:HELD_OUT]
    return (x[fit], y[fit]), (x[held], y[held])


def as_sequence(batch: torch.Tensor) -> torch.Tensor:
    """``[B, T, 2, 34, 34]`` uint8 -> ``[T, B, 2, 34, 34]`` float."""
    return batch.float().transpose(0, 1).contiguous()


def trained_snn() -> nn.Module:
    return sl.layers.Sequential(nn.AvgPool2d(2, divisor_override=1), nn.Flatten(), nn.Linear(578, 256),
                                sl.LIF(tau=20.0), nn.Linear(256, 10), sl.LIF(tau=20.0))


def train_snn(x: torch.Tensor, y: torch.Tensor, loss: str, epochs: int, seed: int, batch: int = 64,
              lr: float = 1e-3) -> nn.Module:
    torch.manual_seed(seed)
    net = trained_snn()
    opt = torch.optim.Adam(net.parameters(), lr)
    losses = {"rate_ce": lambda out, t: F.cross_entropy(out.mean(0) * 10, t),
              "tet": lambda out, t: sl.train.tet(out * 10, t),
              "prefix_ce": lambda out, t: sl.train.prefix_ce(out * 10, t)}
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            out = net(as_sequence(x[idx]))
            value = losses[loss](out, y[idx])
            opt.zero_grad()
            value.backward()
            opt.step()
    return net.eval()


def converted_snn(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    # At step t a converted SNN has integrated the mean of frames 1..t, so the ANN learns those
    # prefix means; trained on the whole recording's mean only, it misreads the first saccade
    # and its spikes cannot be taken back (0.54 static accuracy at T = 300 instead of 0.94).
    prefix_sums = x.float().cumsum(1)
    ends = (30, 60, 100, 150, 200, T_STEPS)
    images = torch.cat([prefix_sums[:, end - 1] / end for end in ends])
    ann = fit_classifier(count_image_cnn(), images * 10, y.repeat(len(ends)), epochs=epochs)
    # the first layer is linear: scaling its weights by 10 makes the ANN take the unscaled means
    with torch.no_grad():
        ann[0].weight.mul_(10)
    return convert(ann, x[:512].float().mean(1))


@torch.no_grad()
def outputs(net: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Per-step outputs ``[T, N, 10]``."""
    parts = []
    for i in range(0, len(x), batch):
        sl.reset(net)
        parts.append(net(as_sequence(x[i:i + batch])))
    sl.reset(net)
    return torch.cat(parts, 1)


NETS = ("trained", "trained_tet", "trained_prefix", "converted")
LOSS_OF = {"trained": "rate_ce", "trained_tet": "tet", "trained_prefix": "prefix_ce"}


def test_frames() -> tuple[torch.Tensor, torch.Tensor]:
    """The test split's frames and labels (for live-mode timing)."""
    return frames_1ms("test")


def workload(cache: Path, seed: int = 0, epochs: int = 10, log=print) -> dict:
    """``{"labels": {"held_out", "test"}, "nets": {net: {"held_out": [T, N, 10], "test": [T, M, 10]}}}``;
    each network's outputs are cached in ``cache`` (plain tensors)."""
    result: dict = {"nets": {}}
    data = None
    for name in NETS:
        path = cache / f"dynamic_events_{name}_seed{seed}_ep{epochs}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
        else:
            if data is None:
                start = time.perf_counter()
                xtr, ytr = frames_1ms("train")
                xte, yte = frames_1ms("test")
                (xfit, yfit), (xheld, yheld) = split_train(xtr, ytr)
                data = xfit, yfit, xheld, yheld, xte, yte
                log(f"frames ready ({time.perf_counter() - start:.0f} s): fit {len(xfit)}, held-out {len(xheld)}, "
                    f"test {len(xte)}, T = {T_STEPS} x 1 ms")
            xfit, yfit, xheld, yheld, xte, yte = data
            begin = time.perf_counter()
            if name == "converted":
                net = converted_snn(xfit, yfit, seed)
            else:
                net = train_snn(xfit, yfit, LOSS_OF[name], epochs, seed)
            saved = {"held_out": outputs(net, xheld), "test": outputs(net, xte),
                     "labels": {"held_out": yheld, "test": yte}}
            if name != "converted":
                saved["state"] = net.state_dict()
            log(f"{name}: built and run in {time.perf_counter() - begin:.0f} s")
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            torch.save(saved, tmp)
            tmp.replace(path)
        result["labels"] = saved["labels"]
        result["nets"][name] = {"held_out": saved["held_out"], "test": saved["test"], "state": saved.get("state")}
    return result
