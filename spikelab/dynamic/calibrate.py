"""Choosing the threshold on held-out data, the oracle, and the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from spikelab.dynamic.controller import DynamicConfidence, Trace


@dataclass
class Calibration:
    threshold: float
    accuracy: float
    mean_steps: float
    static_accuracy: float  # at t_max
    front: list  # Pareto front: dicts of threshold, accuracy, mean_steps


def sweep(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor, grid: int = 201) -> list[dict]:
    """Accuracy and mean exit step for thresholds 0..1 (``grid`` values), on one trace."""
    rows = []
    for thr in torch.linspace(0, 1, grid).tolist():
        result = controller.decide(trace, torch.tensor(thr))
        rows.append({"threshold": thr, "accuracy": (result.predictions == labels).float().mean().item(),
                     "mean_steps": result.mean_steps})
    return rows


def pareto(rows: list[dict]) -> list[dict]:
    """The settings no other beats on both accuracy and mean steps, by increasing steps."""
    front, best = [], -1.0
    for row in sorted(rows, key=lambda r: (r["mean_steps"], -r["accuracy"])):
        if row["accuracy"] > best:
            front.append(row)
            best = row["accuracy"]
    return front


def calibrate(controller: DynamicConfidence, model, inputs: torch.Tensor, labels: torch.Tensor,
              max_accuracy_drop: Optional[float] = 0.003, target_steps: Optional[float] = None,
              static: bool = False, grid: int = 201) -> Calibration:
    """Set ``controller.threshold`` from held-out ``inputs``/``labels`` (never the test split).

    ``max_accuracy_drop`` (a fraction: 0.003 = 0.3 points below the static accuracy at
    ``t_max``) picks the fewest steps within that drop; ``target_steps`` instead picks the most
    accurate setting at or below that mean number of steps; with both ``None``, the knee of
    the Pareto front (farthest from the line between its ends).
    """
    trace = controller.trace(model, inputs, static=static)
    static_acc = (trace.prediction[-1] == labels).float().mean().item()
    rows = sweep(controller, trace, labels, grid)
    front = pareto(rows)
    if target_steps is not None:
        fitting = [r for r in front if r["mean_steps"] <= target_steps] or front[:1]
        chosen = max(fitting, key=lambda r: r["accuracy"])
    elif max_accuracy_drop is not None:
        fitting = [r for r in front if r["accuracy"] >= static_acc - max_accuracy_drop] or front[-1:]
        chosen = min(fitting, key=lambda r: r["mean_steps"])
    else:
        chosen = _knee(front)
    controller.threshold = chosen["threshold"]
    return Calibration(chosen["threshold"], chosen["accuracy"], chosen["mean_steps"], static_acc, front)


def _knee(front: list[dict]) -> dict:
    if len(front) < 3:
        return front[-1]
    (x0, y0), (x1, y1) = (front[0]["mean_steps"], front[0]["accuracy"]), (front[-1]["mean_steps"],
                                                                          front[-1]["accuracy"])
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0

    def distance(r):
        return abs((r["mean_steps"] - x0) / span_x - (r["accuracy"] - y0) / span_y)

    return max(front, key=distance)


def oracle(trace: Trace, labels: torch.Tensor) -> dict:
    """The SNN's potential: per sample, the first step after which its prediction stays correct
    (``t_max`` if never) and the first step at which it is correct at all."""
    correct = trace.prediction == labels.unsqueeze(0)  # [t_max, B]
    t_max = correct.shape[0]
    steps = torch.arange(1, t_max + 1).unsqueeze(1)
    # stays correct from t on: correct at t and at every later step
    stays = torch.flip(torch.cumprod(torch.flip(correct.int(), [0]), 0), [0]).bool()
    stable = torch.where(stays.any(0), torch.where(stays, steps, t_max + 1).min(0).values, torch.tensor(t_max))
    first = torch.where(correct.any(0), torch.where(correct, steps, t_max + 1).min(0).values, torch.tensor(t_max))
    return {"stable_accuracy": stays.any(0).float().mean().item(), "stable_mean_steps": stable.float().mean().item(),
            "first_correct_accuracy": correct.any(0).float().mean().item(),
            "first_correct_mean_steps": first.float().mean().item()}


def report(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor, out_dir=None) -> dict:
    """Static accuracy by T, the dynamic result, the oracle, the exit-step histogram and the
    threshold sensitivity; with ``out_dir``, ``dynamic_report.json`` and ``dynamic.png``."""
    static = [(t + 1, (trace.prediction[t] == labels).float().mean().item()) for t in range(trace.prediction.shape[0])]
    result = controller.decide(trace)
    rows = sweep(controller, trace, labels, grid=51)
    data = {"controller": controller.state(), "static_accuracy_by_t": static,
            "dynamic": {"accuracy": (result.predictions == labels).float().mean().item(),
                        "mean_steps": result.mean_steps,
                        "step_reduction": 1 - result.mean_steps / controller.t_max},
            "oracle": oracle(trace, labels),
            "exit_histogram": torch.bincount(result.exit_steps, minlength=controller.t_max + 1)[1:].tolist(),
            "sensitivity": rows}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "dynamic_report.json").write_text(json.dumps(data, indent=2))
        _plot(data, out / "dynamic.png")
    return data


def _plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.6))
    ts, accs = zip(*data["static_accuracy_by_t"])
    a1.plot(ts, accs, label="static (all samples run T steps)")
    a1.plot([r["mean_steps"] for r in data["sensitivity"]], [r["accuracy"] for r in data["sensitivity"]], ".",
            label="dynamic, threshold sweep")
    a1.plot(data["dynamic"]["mean_steps"], data["dynamic"]["accuracy"], "r*", markersize=12, label="chosen")
    a1.plot(data["oracle"]["stable_mean_steps"], data["oracle"]["stable_accuracy"], "ks", label="oracle")
    a1.set_xlabel("(mean) time steps")
    a1.set_ylabel("accuracy")
    a1.legend(fontsize=7)
    hist = data["exit_histogram"]
    a2.bar(range(1, len(hist) + 1), hist)
    a2.set_xlabel("exit step")
    a2.set_ylabel("samples")
    a2.set_title("exit steps")
    a3.plot([r["threshold"] for r in data["sensitivity"]], [r["mean_steps"] for r in data["sensitivity"]])
    a3.set_xlabel("threshold")
    a3.set_ylabel("mean steps")
    a3.set_title("threshold sensitivity")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
