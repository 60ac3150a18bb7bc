"""The AOI-SNN Top-K cutoff (Wu, Jin, Yu, Yi, Huang: *Optimising Event-Driven Spiking Neural
Network with Regularisation and Cutoff*), on the same traces and controller as Dynamic Confidence.

The score is the gap between the largest and second largest accumulated output
(``score="logit_margin"``). For every step ``t`` a threshold ``beta_t`` is calibrated: the
smallest value such that, among held-out samples whose gap at ``t`` exceeds it, a fraction
of at least ``1 - epsilon`` have already reached their optimal cutoff step (the oracle's
step after which the prediction stays correct). A sample stops at the first step whose
gap exceeds ``beta_t``. ``epsilon`` trades steps for accuracy.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from spikelab.dynamic.calibrate import _check_labels, optimal_cutoff_steps
from spikelab.dynamic.controller import DynamicConfidence, Trace


def top_k_thresholds(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor,
                     epsilon: float) -> torch.Tensor:
    """The per-step thresholds of the Top-K cutoff at ``epsilon`` (``inf`` where no gap qualifies),
    for a ``logit_margin`` controller (``>=`` against them equals the paper's ``>`` against ``beta``)."""
    return _thresholds(_table(controller, trace, labels), epsilon)


def _table(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor) -> tuple:
    """Per step, the gaps sorted down, where a set "gap > beta" can end, and the share of each
    top-k set that has reached its optimal cutoff step."""
    if controller.score != "logit_margin":
        raise ValueError(f"controller: the Top-K cutoff thresholds the top-1 minus top-2 gap, so it needs "
                         f"score='logit_margin' (got {controller.score!r})")
    if trace.accumulated is None:
        raise ValueError("trace: the Top-K cutoff needs the accumulated outputs (controller.trace(...))")
    gaps = controller.scores(trace.accumulated).double().cpu().numpy()  # [t_max, B]
    oct_steps = optimal_cutoff_steps(trace, labels).cpu().numpy()
    t_max, batch = gaps.shape
    order = np.argsort(-gaps, axis=1, kind="stable")
    g = np.take_along_axis(gaps, order, 1)
    steps = np.arange(1, t_max + 1)[:, None]
    ready = np.cumsum(oct_steps[order] <= steps, axis=1) / np.arange(1, batch + 1)
    # a set "gap > beta" holds the top k samples only where the k-th gap is above the (k+1)-th
    ends = np.concatenate([g[:, :-1] > g[:, 1:], np.ones((t_max, 1), bool)], axis=1)
    return g, ready, ends


def _thresholds(table: tuple, epsilon: float) -> torch.Tensor:
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon: expected a fraction in [0, 1), got {epsilon!r}")
    g, ready, ends = table
    t_max, batch = g.shape
    valid = ends & (ready >= 1 - epsilon - 1e-12)
    last = batch - 1 - np.argmax(valid[:, ::-1], axis=1)  # the largest qualifying set: the smallest beta
    nxt = np.minimum(last + 1, batch - 1)
    betas = np.where(last + 1 < batch, g[np.arange(t_max), nxt], -1.0)
    betas = np.where(valid.any(1), betas, np.inf)
    thr = torch.from_numpy(betas).float()
    finite = torch.isfinite(thr)
    thr[finite] = torch.nextafter(thr[finite], torch.full_like(thr[finite], math.inf)).clamp_min(0.0)
    return thr


def calibrate_top_k(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor,
                    max_accuracy_drop: float = 0.003,
                    epsilons: Optional[Sequence[float]] = None) -> dict:
    """Choose ``epsilon`` on held-out traces: the fewest mean steps within ``max_accuracy_drop``
    of the static accuracy; sets the controller's thresholds and returns the choice and the
    front of every ``epsilon`` tried."""
    labels = _check_labels(trace, labels)
    if not (isinstance(max_accuracy_drop, (int, float)) and 0 <= max_accuracy_drop < 1):
        raise ValueError(f"max_accuracy_drop: expected a fraction in [0, 1), got {max_accuracy_drop!r}")
    epsilons = list(epsilons) if epsilons is not None else [0.0] + np.geomspace(1e-3, 0.5, 40).tolist()
    static_right = int((trace.prediction[-1] == labels).sum())
    allowed = math.floor(max_accuracy_drop * len(labels) + 1e-9)
    table = _table(controller, trace, labels)
    rows = []
    for eps in epsilons:
        thr = _thresholds(table, eps)
        result = controller.decide(trace, thr)
        rows.append({"epsilon": eps, "thresholds": thr, "correct": int((result.predictions == labels).sum()),
                     "mean_steps": result.mean_steps})
    fitting = [r for r in rows if r["correct"] >= static_right - allowed] or [max(rows, key=lambda r: r["correct"])]
    chosen = min(fitting, key=lambda r: (r["mean_steps"], -r["correct"]))
    controller.threshold = chosen["thresholds"]
    front = [{"epsilon": r["epsilon"], "accuracy": r["correct"] / len(labels), "mean_steps": r["mean_steps"]}
             for r in rows]
    return {"epsilon": chosen["epsilon"], "accuracy": chosen["correct"] / len(labels),
            "mean_steps": chosen["mean_steps"], "front": front}


__all__ = ["top_k_thresholds", "calibrate_top_k"]
