"""Choosing the threshold on held-out data (exactly, optionally with a guarantee), the oracle, the report.

Calibration scores every distinct threshold that changes a decision on the held-out traces
(a sample's exit step only moves when the threshold crosses one of its running-maximum
scores), for a constant threshold and for schedules that relax (or tighten) with time, and
picks the fewest mean steps within the accuracy budget. With ``delta`` the pick is
certified instead (Learn-then-Test, :mod:`spikelab.dynamic.risk`): the accuracy drop on new
data from the same distribution exceeds the budget with probability at most ``delta``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from spikelab.dynamic.controller import BOUNDED, DynamicConfidence, Trace
from spikelab.dynamic.risk import certified_prefix, samples_needed

# Threshold schedules tried by calibrate: threshold(t) = base * (t_max / t) ** gamma; gamma > 0
# relaxes with time (the seed paper's shape), 0 is constant, gamma = -0.5 (the default) grows
# like sqrt(t): the summed readout's margin grows like t for a decided input and like sqrt(t)
# for noise, so this asks every step for the same evidence in units of the noise. Measured
# best across the benchmarks (docs/dynamic.md).
SCHEDULES = (-0.5,)


@dataclass
class Calibration:
    threshold: float  # the base threshold (the threshold itself when the schedule is constant)
    accuracy: float  # held-out, with the chosen setting
    mean_steps: float
    static_accuracy: float  # held-out, at t_max
    front: list  # Pareto front: dicts of threshold, schedule, accuracy, mean_steps
    schedule: float = 0.0  # gamma of the chosen schedule
    temperature: float = 1.0
    delta: Optional[float] = None  # set: the pick is certified at this error rate
    candidates: int = 0  # distinct thresholds scored (over every schedule)
    samples: int = 0
    thresholds: list = field(default_factory=list)  # the per-step thresholds set on the controller


def fit_temperature(controller: DynamicConfidence, accumulated: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling of the per-step evidence: the temperature minimising the mean
    cross-entropy of ``softmax(evidence_t / temperature)`` over every held-out sample and
    step ``t >= t_min`` (convex in 1 / temperature; golden-section search on its log)."""
    ev = accumulated[controller.t_min - 1:].double().cpu()
    labels = torch.as_tensor(labels).cpu()
    if controller.evidence == "mean":
        steps = torch.arange(controller.t_min, accumulated.shape[0] + 1, dtype=ev.dtype)
        ev = ev / steps.view(-1, 1, 1)
    stride = max(1, ev.shape[0] // 100)  # 100 steps describe the curve; keeps the fit fast at long T
    ev = ev[::stride].reshape(-1, ev.shape[-1])
    target = labels.repeat((ev.shape[0] // len(labels)))
    scale = ev.abs().max().item()
    if scale == 0:
        return 1.0

    def nll(log_inv_t: float) -> float:
        return torch.nn.functional.cross_entropy(ev * math.exp(log_inv_t), target).item()

    lo, hi = -math.log(scale) - 8.0, -math.log(scale) + 12.0
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(math.exp(-(lo + hi) / 2))


def candidates(scores: torch.Tensor, prediction: torch.Tensor, labels: torch.Tensor, t_min: int = 1) -> dict:
    """Every threshold that changes a decision, with its exact outcome on these traces.

    ``scores`` ``[t_max, B]`` (already scaled by a schedule), ``prediction`` ``[t_max, B]``.
    Returns NumPy arrays in decreasing threshold order, the first being ``inf`` (no early
    exit): ``threshold``, ``correct`` (samples right), ``steps`` (sum of exit steps),
    ``flips`` (samples right at ``t_max`` but wrong at their exit).
    """
    conf = scores.double().cpu().numpy().copy()
    t_max, batch = conf.shape
    right = (prediction.cpu() == torch.as_tensor(labels).cpu().unsqueeze(0)).numpy()
    static_right = right[-1]
    conf[: t_min - 1] = -np.inf
    conf[-1] = -np.inf  # the last step exits anyway
    before = np.vstack([np.full((1, batch), -np.inf), np.maximum.accumulate(conf, 0)[:-1]])
    b_idx, t_idx = np.nonzero((conf > before).T)  # each sample's new running maxima, by sample then step
    same_next = np.append(b_idx[1:] == b_idx[:-1], False)
    t_next = np.where(same_next, np.append(t_idx[1:], 0), t_max - 1)  # the exit this record replaces
    d_steps = (t_idx - t_next).astype(np.int64)
    d_right = right[t_idx, b_idx].astype(np.int64) - right[t_next, b_idx]
    d_flips = -static_right[b_idx].astype(np.int64) * d_right
    values = conf[t_idx, b_idx]
    order = np.argsort(-values, kind="stable")
    values = values[order]
    ends = np.append(np.nonzero(values[1:] != values[:-1])[0], len(values) - 1) if len(values) else np.array(
        [], np.int64)
    base_right = int(static_right.sum())
    return {"threshold": np.concatenate([[np.inf], values[ends]]),
            "correct": np.concatenate([[base_right], base_right + np.cumsum(d_right[order])[ends]]),
            "steps": np.concatenate([[batch * t_max], batch * t_max + np.cumsum(d_steps[order])[ends]]),
            "flips": np.concatenate([[0], np.cumsum(d_flips[order])[ends]])}


def schedule_weights(gamma: float, t_max: int) -> torch.Tensor:
    """``(t / t_max) ** gamma`` for steps 1..t_max: a score times these against one threshold
    equals the score against the per-step thresholds ``threshold * (t_max / t) ** gamma``."""
    steps = torch.arange(1, t_max + 1, dtype=torch.float64)
    return (steps / t_max) ** gamma


def _per_step(base: float, gamma: float, controller: DynamicConfidence) -> torch.Tensor:
    """Float32 per-step thresholds ``c_t`` deciding exactly as calibrated: a float32 score ``s``
    passes ``s >= c_t`` if and only if ``s * w_t >= base`` in float64 (``c_t`` is the smallest
    float32 with ``c_t * w_t >= base``), so the deployed rule is the tested one."""
    weights = schedule_weights(gamma, controller.t_max)
    thr = (base / weights).float()
    zero = torch.zeros_like(thr)
    for _ in range(4):  # float32 rounding is off by at most an ulp or two
        low = thr.double() * weights < base
        thr = torch.where(low, torch.nextafter(thr, torch.full_like(thr, math.inf)), thr)
        lower = torch.nextafter(thr, zero)
        thr = torch.where(~low & (lower.double() * weights >= base), lower, thr)
    if controller.score in BOUNDED:
        thr[thr > 1] = math.inf
    return thr


def _check_labels(trace: Trace, labels: torch.Tensor, name: str = "labels") -> torch.Tensor:
    labels = torch.as_tensor(labels)
    batch = trace.prediction.shape[1]
    if labels.ndim != 1 or len(labels) != batch or labels.dtype.is_floating_point:
        raise ValueError(f"{name}: expected {batch} integer class labels (one per held-out sample), got "
                         f"{tuple(labels.shape)} {labels.dtype}")
    if labels.unique().numel() < 2:
        raise ValueError(f"{name}: the held-out set holds one class ({labels[0].item()}); calibrate on held-out "
                         "data that covers the classes the model will see")
    return labels.to(trace.prediction.device)


def calibrate_trace(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor,
                    max_accuracy_drop: Optional[float] = 0.003, target_steps: Optional[float] = None,
                    delta: Optional[float] = 0.1, schedules: Sequence[float] = SCHEDULES) -> Calibration:
    """:func:`calibrate` on a trace already simulated (``controller.trace(model, held_out_inputs)``)."""
    labels = _check_labels(trace, labels)
    if max_accuracy_drop is not None and not (isinstance(max_accuracy_drop, (int, float))
                                              and 0 <= max_accuracy_drop < 1):
        raise ValueError(f"max_accuracy_drop: expected a fraction in [0, 1) (0.005 = half a point), got "
                         f"{max_accuracy_drop!r}")
    if delta is not None and not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta: expected a probability in (0, 1), got {delta!r}")
    if max_accuracy_drop is None or target_steps is not None:
        delta = None  # only a budget can be certified
    try:
        schedules = [float(g) for g in schedules]
    except (TypeError, ValueError):
        raise ValueError(f"schedules: expected a list of exponents (numbers), got {schedules!r}") from None
    if not schedules or not all(math.isfinite(g) for g in schedules):
        raise ValueError(f"schedules: expected finite exponents, got {schedules!r}")
    if target_steps is not None and not (isinstance(target_steps, (int, float)) and target_steps >= 1):
        raise ValueError(f"target_steps: expected a mean number of steps >= 1, got {target_steps!r}")
    if trace.prediction.shape[0] != controller.t_max:
        raise ValueError(f"trace: {trace.prediction.shape[0]} steps, the controller's t_max is {controller.t_max}")
    if trace.accumulated is not None:
        if not torch.isfinite(trace.accumulated).all():
            raise ValueError("trace: the model's outputs hold NaN or inf; calibration needs finite outputs")
        if controller.fit_temperature and controller.score in BOUNDED:
            controller.temperature = fit_temperature(controller, trace.accumulated, labels)
        scores = controller.scores(trace.accumulated)
    else:
        scores = trace.confidence
    batch, t_max = len(labels), controller.t_max
    need = samples_needed(max_accuracy_drop, delta / len(schedules)) if delta is not None else 0
    if batch < need:
        why = ("a zero budget cannot be certified (pass delta=None for the fewest steps with no drop on the "
               "held-out data)" if max_accuracy_drop == 0 else
               f"{batch} held-out samples cannot certify any early exit (at least {need} are needed even when no "
               "sample is lost); use more held-out samples or a larger budget for a certified setting")
        warnings.warn(f"max_accuracy_drop={max_accuracy_drop}, delta={delta}: {why}. The setting is chosen WITHOUT "
                      "the guarantee, as with delta=None", stacklevel=3)
        delta = None
    static_right = int((trace.prediction[-1] == labels).sum())
    rows, scored = [], 0
    for gamma in schedules:
        found = candidates(scores.double() * schedule_weights(float(gamma), t_max).unsqueeze(1), trace.prediction,
                           labels, controller.t_min)
        scored += len(found["threshold"])
        keep = np.ones(len(found["threshold"]), bool)
        if delta is not None:
            keep[:] = False
            keep[: certified_prefix(found["flips"], batch, max_accuracy_drop, delta / len(schedules))] = True
        for i in np.nonzero(keep)[0]:
            rows.append({"threshold": float(found["threshold"][i]), "schedule": float(gamma),
                         "correct": int(found["correct"][i]), "steps": int(found["steps"][i])})
    if target_steps is not None:
        fitting = [r for r in rows if r["steps"] <= target_steps * batch] or [min(rows, key=lambda r: r["steps"])]
        chosen = max(fitting, key=lambda r: (r["correct"], -r["steps"]))
    elif max_accuracy_drop is not None:
        allowed = math.floor(max_accuracy_drop * batch + 1e-9) if delta is None else batch
        fitting = [r for r in rows if r["correct"] >= static_right - allowed]
        chosen = min(fitting, key=lambda r: (r["steps"], -r["correct"]))
    else:
        chosen = _knee(pareto(rows, "steps", "correct"))
    if max_accuracy_drop is not None and delta is None:
        _warn_small(batch, max_accuracy_drop)
    controller.threshold = _per_step(chosen["threshold"], chosen["schedule"], controller)
    result = controller.decide(Trace(scores, trace.prediction))
    accuracy, mean_steps = (result.predictions == labels).float().mean().item(), result.mean_steps
    if mean_steps >= t_max > 1 and max_accuracy_drop is not None and target_steps is None:
        warnings.warn(f"max_accuracy_drop={max_accuracy_drop}: the chosen setting never stops early on the "
                      f"held-out data ({batch} samples); allow a larger drop, more held-out samples or a larger "
                      "t_max", stacklevel=3)
    front = [{"threshold": r["threshold"], "schedule": r["schedule"], "accuracy": r["correct"] / batch,
              "mean_steps": r["steps"] / batch} for r in pareto(rows, "steps", "correct")]
    return Calibration(chosen["threshold"], accuracy, mean_steps, static_right / batch, front, chosen["schedule"],
                       controller.temperature, delta, scored, batch, controller.threshold.tolist())


def _warn_small(batch: int, budget: float) -> None:
    if 0 < budget * batch < 1:
        warnings.warn(f"max_accuracy_drop={budget}: {batch} held-out samples cannot resolve it (one sample is "
                      f"{1 / batch:.4f}); the calibration allows no drop at all. Use at least "
                      f"{math.ceil(1 / budget)} held-out samples", stacklevel=4)


def calibrate(controller: DynamicConfidence, model, inputs: torch.Tensor, labels: torch.Tensor,
              max_accuracy_drop: Optional[float] = 0.003, target_steps: Optional[float] = None,
              static: bool = False, delta: Optional[float] = 0.1,
              schedules: Sequence[float] = SCHEDULES) -> Calibration:
    """Set ``controller.threshold`` (and its temperature, unless given) from held-out
    ``inputs``/``labels`` (never the test split).

    ``max_accuracy_drop`` (a fraction: 0.003 = 0.3 points below the static accuracy at
    ``t_max``) with ``delta`` (default 0.1) picks the fewest mean steps whose drop is
    *certified*: on new data from the same distribution it exceeds the budget with
    probability at most ``delta`` (:mod:`spikelab.dynamic.risk`). ``delta=None`` picks the
    fewest steps within the budget on the held-out data itself (more saving, no guarantee:
    on new data it lands above the budget about half the time). A held-out set too small to
    certify anything falls back to that, with a warning. ``target_steps`` instead picks the
    most accurate setting at or below that mean number of steps; with both ``None``, the knee
    of the Pareto front. ``schedules``: exponents ``gamma`` of per-step thresholds
    ``base * (t_max / t) ** gamma`` to choose among (each extra one costs the certificate a
    factor in ``delta``, Bonferroni).
    """
    trace = controller.trace(model, inputs, static=static)
    return calibrate_trace(controller, trace, labels, max_accuracy_drop, target_steps, delta, schedules)


def sweep(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor, grid: int = 201) -> list[dict]:
    """Accuracy and mean exit step for ``grid`` constant thresholds spread over the quantiles
    of the controller's scores on ``trace`` (plus ``inf``: no early exit)."""
    labels = torch.as_tensor(labels).cpu()
    scores = trace.confidence if trace.accumulated is None else controller.scores(trace.accumulated)
    flat = scores.flatten().double()
    flat = flat[:: max(1, flat.numel() // 2 ** 24)]  # quantile's size limit: a strided sample of every step
    levels = torch.quantile(flat, torch.linspace(0, 1, grid, dtype=torch.float64))
    rows = []
    for thr in sorted(set(levels.float().tolist())) + [math.inf]:
        result = controller.decide(Trace(scores, trace.prediction), torch.tensor(thr))
        rows.append({"threshold": thr if math.isfinite(thr) else None,  # JSON-safe: None = no early exit
                     "accuracy": (result.predictions == labels).float().mean().item(),
                     "mean_steps": result.mean_steps})
    return rows


def pareto(rows: list[dict], steps: str = "mean_steps", accuracy: str = "accuracy") -> list[dict]:
    """The settings no other beats on both accuracy and mean steps, by increasing steps
    (``steps``/``accuracy``: the keys that hold them)."""
    front, best = [], -math.inf
    for row in sorted(rows, key=lambda r: (r[steps], -r[accuracy])):
        if row[accuracy] > best:
            front.append(row)
            best = row[accuracy]
    return front


def _knee(front: list[dict]) -> dict:
    if len(front) < 3:
        return front[-1]
    (x0, y0), (x1, y1) = (front[0]["steps"], front[0]["correct"]), (front[-1]["steps"], front[-1]["correct"])
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0

    def distance(r):
        return abs((r["steps"] - x0) / span_x - (r["correct"] - y0) / span_y)

    return max(front, key=distance)


def optimal_cutoff_steps(trace: Trace, labels: torch.Tensor) -> torch.Tensor:
    """Per sample, the first step (1-based) after which its prediction stays correct; ``inf`` if never."""
    correct = trace.prediction == torch.as_tensor(labels).cpu().unsqueeze(0)  # [t_max, B] (a Trace is on the CPU)
    # stays correct from t on: correct at t and at every later step
    stays = torch.flip(torch.cumprod(torch.flip(correct.int(), [0]), 0), [0]).bool()
    steps = torch.arange(1, correct.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
    return torch.where(stays, steps, torch.tensor(math.inf, dtype=torch.float64)).min(0).values


def oracle(trace: Trace, labels: torch.Tensor) -> dict:
    """The SNN's potential: per sample, the first step after which its prediction stays correct
    (``t_max`` if never) and the first step at which it is correct at all."""
    correct = trace.prediction == torch.as_tensor(labels).cpu().unsqueeze(0)  # [t_max, B]
    t_max = correct.shape[0]
    steps = torch.arange(1, t_max + 1).unsqueeze(1)
    settle = optimal_cutoff_steps(trace, labels)
    settled = torch.isfinite(settle)
    stable = torch.where(settled, settle, float(t_max))
    first = torch.where(correct.any(0), torch.where(correct, steps, t_max + 1).min(0).values, torch.tensor(t_max))
    return {"stable_accuracy": settled.float().mean().item(), "stable_mean_steps": stable.float().mean().item(),
            "first_correct_accuracy": correct.any(0).float().mean().item(),
            "first_correct_mean_steps": first.float().mean().item()}


def report(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor, out_dir=None) -> dict:
    """Static accuracy by T, the dynamic result, the oracle, the exit-step histogram and the
    threshold sensitivity; with ``out_dir``, ``dynamic_report.json`` and ``dynamic.png``.

    ``trace`` is ``controller.trace(model, test_inputs)`` (``static=True`` for images)."""
    if not isinstance(trace, Trace):
        raise TypeError(f"trace: expected a Trace (controller.trace(model, inputs)), got {type(trace).__name__}")
    labels = _check_labels(trace, labels) if trace.prediction.shape[1] > 1 else torch.as_tensor(labels).cpu()
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
    finite = [r for r in data["sensitivity"] if r["threshold"] is not None]
    a3.plot([r["threshold"] for r in finite], [r["mean_steps"] for r in finite])
    a3.set_xlabel("threshold")
    a3.set_ylabel("mean steps")
    a3.set_title("threshold sensitivity")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["SCHEDULES", "Calibration", "fit_temperature", "candidates", "schedule_weights",
           "calibrate_trace", "calibrate", "sweep", "pareto", "optimal_cutoff_steps", "oracle", "report"]
