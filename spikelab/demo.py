"""The built-in demo: train a small spiking network on generated spike patterns, write a report.

Data: a synthetic task generated on the fly (no download): each of ``classes`` input groups
fires at a high rate for its class and a low rate otherwise, with per-sample jitter.
The network is ``Linear -> LIF -> Linear``; the readout averaged over time gives the logits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

import spikelab as sl


def make_patterns(n: int, num_steps: int = 20, classes: int = 4, per_class: int = 8, seed: int = 0):
    """Spike trains ``[T, n, classes * per_class]`` and labels ``[n]``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    rates = torch.full((n, classes, per_class), 0.08)
    rates[torch.arange(n), labels] = 0.35
    rates = (rates + 0.05 * torch.randn(rates.shape, generator=g)).clamp(0, 1).flatten(1)
    spikes = torch.bernoulli(rates.unsqueeze(0).expand(num_steps, -1, -1).contiguous(), generator=g)
    return spikes, labels


def build_model(inputs: int, hidden: int, classes: int) -> sl.layers.Sequential:
    return sl.layers.Sequential(nn.Linear(inputs, hidden), sl.LIF(tau=4.0), nn.Linear(hidden, classes))


def run_demo(out_dir: str | Path = "demo_out", epochs: int = 8, seed: int = 0, quiet: bool = False) -> dict:
    """Train, evaluate and write ``summary.json``, ``training_curve.png`` and ``raster.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    x_train, y_train = make_patterns(1024, seed=seed + 1)
    x_test, y_test = make_patterns(512, seed=seed + 2)
    model = build_model(x_train.shape[-1], 64, 4)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    start = time.perf_counter()
    for epoch in tqdm(range(epochs), desc="demo: training", disable=quiet):
        model.train()
        total = 0.0
        for i in range(0, x_train.shape[1], 64):
            logits = model(x_train[:, i:i + 64]).mean(0)
            loss = nn.functional.cross_entropy(logits, y_train[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        acc = evaluate(model, x_test, y_test)
        history.append({"epoch": epoch + 1, "loss": total / (x_train.shape[1] // 64), "test_accuracy": acc})
    seconds = time.perf_counter() - start

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["test_accuracy"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("spikelab demo: training curve")
    fig.tight_layout()
    fig.savefig(out / "training_curve.png", dpi=100)
    plt.close(fig)

    with torch.no_grad():
        hidden = model[1](model[0](x_test[:, :1]))[:, 0]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    t_idx, n_idx = hidden.nonzero(as_tuple=True)
    ax.scatter(t_idx.numpy(), n_idx.numpy(), s=4, marker="|")
    ax.set_xlabel("time step")
    ax.set_ylabel("hidden neuron")
    ax.set_title(f"hidden-layer spikes, one test sample (class {y_test[0].item()})")
    fig.tight_layout()
    fig.savefig(out / "raster.png", dpi=100)
    plt.close(fig)

    summary = {
        "task": "generated spike patterns, 4 classes, 32 inputs, T=20",
        "model": repr(model),
        "epochs": epochs,
        "test_accuracy": history[-1]["test_accuracy"],
        "history": history,
        "train_seconds": round(seconds, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of the time-averaged readout."""
    model.eval()
    return (model(x).mean(0).argmax(1) == y).float().mean().item()
