"""Risk control for Dynamic Confidence: Learn-then-Test over the candidate thresholds.

The loss of a sample under a threshold is a *flip*: right after all ``t_max`` steps, wrong at
its early exit. The accuracy drop on any data is at most the flip rate, so bounding the flip
rate bounds the drop. For each candidate threshold (from the strictest, no early exit, to
the loosest) the null hypothesis "flip rate > budget" is rejected when the exact binomial
p-value ``P(Binomial(n, budget) <= flips)`` is at most ``delta``; testing in that fixed order
and stopping at the first failure controls the family-wise error at ``delta`` (Angelopoulos
et al., Learn then Test, 2021). The loosest rejected threshold is then safe: with
probability at least ``1 - delta`` over the held-out draw, its expected drop on new data
from the same distribution is within the budget.
"""

from __future__ import annotations

import copy
import math
import warnings
import numpy as np
import torch

from spikelab.dynamic.controller import DynamicConfidence, Trace


def certified_prefix(flips: np.ndarray, samples: int, budget: float, delta: float) -> int:
    """How many candidates, in order (the first, no early exit, always), pass the fixed-sequence test."""
    if budget <= 0:
        return 1
    from scipy.stats import binom  # imported here: scipy.stats alone takes most of a second to import

    p_values = binom.cdf(np.asarray(flips[1:]), samples, budget)
    failed = np.nonzero(p_values > delta)[0]
    return 1 + int(failed[0] if len(failed) else len(p_values))


def samples_needed(budget: float, delta: float) -> float:
    """The fewest held-out samples that can certify an early exit at all (one with no flip)."""
    if budget <= 0:
        return math.inf
    return math.ceil(math.log(delta) / math.log1p(-budget))


def simulate(controller: DynamicConfidence, trace: Trace, labels: torch.Tensor, budget: float,
             delta: float, calibration_size: int, repeats: int = 200, seed: int = 0,
             certified: bool = True) -> dict:
    """How often a calibration breaks its budget, by simulation on a large trace set.

    The trace set stands for the distribution: each repeat draws ``calibration_size``
    held-out samples from it (with replacement, so they are i.i.d. from that distribution),
    calibrates a copy of ``controller`` on them, and measures the drop of the chosen setting
    on the whole set, which is its expected drop on new data. Returns the violation rate
    (drop above ``budget``), to compare with ``delta``, with the mean steps it cost;
    ``certified=False`` runs the uncertified calibration (fewest steps within the budget on
    the held-out draw) for comparison.
    """
    from spikelab.dynamic.calibrate import calibrate_trace

    if trace.accumulated is None:
        raise ValueError("trace: the simulation rescores traces; make it with controller.trace(...)")
    gen = torch.Generator().manual_seed(seed)
    batch = trace.prediction.shape[1]
    labels = torch.as_tensor(labels).cpu()  # a Trace is on the CPU
    static = (trace.prediction[-1] == labels).float().mean().item()
    drops, steps, fallbacks = [], [], 0
    for _ in range(repeats):
        pick = torch.randint(batch, (calibration_size,), generator=gen)
        ctl = copy.deepcopy(controller)
        part = Trace(trace.confidence[:, pick], trace.prediction[:, pick], trace.accumulated[:, pick])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = calibrate_trace(ctl, part, labels[pick], max_accuracy_drop=budget,
                                  delta=delta if certified else None)
        fallbacks += certified and cal.delta is None
        result = ctl.decide(trace)
        drops.append(static - (result.predictions == labels).float().mean().item())
        steps.append(result.mean_steps)
    drops_np = np.array(drops)
    violations = drops_np > budget + 1e-12
    return {"budget": budget, "delta": delta if certified else None, "calibration_size": calibration_size,
            "repeats": repeats, "violation_rate": float(violations.mean()),
            "violation_stderr": float(math.sqrt(max(violations.mean() * (1 - violations.mean()), 1e-12) / repeats)),
            "mean_drop": float(drops_np.mean()), "mean_steps": float(np.mean(steps)),
            "population": batch, "population_static_accuracy": static,
            "uncertified_fallbacks": int(fallbacks)}  # calibrations too small to certify (none, normally)


__all__ = ["certified_prefix", "samples_needed", "simulate"]
