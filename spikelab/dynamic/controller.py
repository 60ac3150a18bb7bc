"""Dynamic Confidence (Li, Jones, Furber, ICCV 2023): stop each sample once its SNN output is confident.

At step ``t`` the readout is accumulated over the steps so far (``evidence="sum"``, the
default: the evidence grows with every spike; or ``"mean"``, the seed paper's average),
divided by a ``temperature`` and scored: ``maxprob`` (the largest softmax probability),
``margin`` (largest minus second largest probability), ``entropy`` (1 - entropy /
log(classes)), all in [0, 1], or ``logit_margin`` (largest minus second largest accumulated
readout, in readout units, >= 0: the AOI-SNN Top-K gap). A sample exits at the first step
``t >= t_min`` whose score reaches the threshold of step ``t`` (or at ``t_max``),
predicting the argmax of its accumulated readout.

Two ways to run: ``trace`` simulates all ``t_max`` steps once and scores any threshold
afterwards (calibration, reports); ``live`` steps the model and removes finished samples from
the batch, inputs and every neuron state together (``select_batch``), so the work really falls.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

SCORES = ("maxprob", "margin", "entropy", "logit_margin")
BOUNDED = ("maxprob", "margin", "entropy")  # scores in [0, 1]
EVIDENCE = ("sum", "mean")


@dataclass
class DynamicResult:
    predictions: torch.Tensor  # [B]
    exit_steps: torch.Tensor  # [B], 1-based
    _confidences: Union[list, Callable[[], list]] = field(repr=False)

    @property
    def confidences(self) -> list:
        """Per sample, its scores up to its exit step (built on first use: calibration never needs them)."""
        if callable(self._confidences):
            self._confidences = self._confidences()
        return self._confidences

    @property
    def mean_steps(self) -> float:
        return self.exit_steps.float().mean().item()


@dataclass
class Trace:
    """Scores and predictions of every sample at every step ``1..t_max``; ``accumulated``
    (the readout summed over steps ``1..t``, ``[t_max, B, classes]``) lets a controller with
    another score or temperature rescore the same simulation. Held on the CPU (a GPU model's
    trace too), where live mode and calibration decide."""

    confidence: torch.Tensor  # [t_max, B]
    prediction: torch.Tensor  # [t_max, B]
    accumulated: Optional[torch.Tensor] = None  # [t_max, B, classes]

    def __post_init__(self) -> None:
        for name in ("confidence", "prediction", "accumulated"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                setattr(self, name, value.cpu())


def confidence(evidence: torch.Tensor, score: str, temperature: float) -> torch.Tensor:
    """The score of accumulated (or averaged) readouts ``[..., classes]`` at one temperature."""
    z = evidence / temperature
    if score == "logit_margin":
        top = z.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    p = torch.softmax(z, dim=-1)
    if score == "maxprob":
        return p.max(-1).values
    if score == "margin":
        top = p.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    return 1.0 - entropy / math.log(p.shape[-1])


class DynamicConfidence:
    """The controller: the score, its evidence and temperature, the threshold(s) and the step bounds.

    The defaults are the measured best (docs/dynamic.md): ``logit_margin`` of the summed
    readout, thresholds set by :func:`spikelab.dynamic.calibrate`. ``temperature=None`` is
    fitted there on the held-out data (1 until then); a number is kept as given.
    ``threshold`` is one value or one per step (``inf``: no exit at that step; ``None``, the
    default: ``inf`` everywhere until calibrated); bounded scores take values in [0, 1].
    """

    def __init__(self, score: str = "logit_margin", temperature: Optional[float] = None,
                 threshold: Union[None, float, Sequence[float]] = None, t_min: int = 1, t_max: int = 64,
                 evidence: str = "sum") -> None:
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        if evidence not in EVIDENCE:
            raise ValueError(f"evidence: expected one of {EVIDENCE}, got {evidence!r}")
        if temperature is not None and not (isinstance(temperature, (int, float)) and not isinstance(
                temperature, bool) and temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature: expected a positive number (or None: fitted by calibrate), "
                             f"got {temperature!r}")
        for name, value in (("t_min", t_min), ("t_max", t_max)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min}) must not exceed t_max ({t_max})")
        self.score, self.evidence, self.t_min, self.t_max = score, evidence, t_min, t_max
        self.fit_temperature = temperature is None
        self.temperature = 1.0 if temperature is None else float(temperature)
        self.threshold = math.inf if threshold is None else threshold
        self._unset = threshold is None  # no threshold given or calibrated yet

    @property
    def threshold(self) -> torch.Tensor:
        return self._threshold

    @threshold.setter
    def threshold(self, value) -> None:
        self._threshold = self._thresholds(value, "threshold")
        self._unset = False

    def _thresholds(self, value, name: str) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
        if t.numel() not in (1, self.t_max):
            raise ValueError(f"{name}: expected one value or one per step ({self.t_max}), got {t.numel()}")
        finite = t[torch.isfinite(t)]
        if torch.isnan(t).any() or (t < 0).any():
            raise ValueError(f"{name}: expected values >= 0 (inf: no exit at that step), got {t.tolist()}")
        if self.score in BOUNDED and (finite > 1).any():
            raise ValueError(f"{name}: {self.score} scores lie in [0, 1] (inf: no exit at that step); got values "
                             f"above 1: {finite[finite > 1].tolist()}")
        return t.expand(self.t_max).clone()

    def scores(self, accumulated: torch.Tensor) -> torch.Tensor:
        """This controller's scores of accumulated readouts ``[t, B, classes]`` (steps 1..t)."""
        if self.evidence == "mean":
            steps = torch.arange(1, accumulated.shape[0] + 1, dtype=accumulated.dtype, device=accumulated.device)
            accumulated = accumulated / steps.view(-1, *([1] * (accumulated.ndim - 1)))
        return confidence(accumulated, self.score, self.temperature)

    # ----- trace mode ------------------------------------------------------------------------------
    @torch.no_grad()
    def trace(self, model: nn.Module, inputs: torch.Tensor, static: bool = False) -> Trace:
        """One simulation of ``t_max`` steps on ``inputs`` ``[T, B, ...]`` (or a static ``[B, ...]``
        presented at every step with ``static=True``)."""
        return self.trace_outputs(model(self._sequence(inputs, static)))

    def trace_outputs(self, outputs: torch.Tensor) -> Trace:
        """The trace of per-step outputs ``[t_max, B, classes]`` computed elsewhere (any model,
        any framework: only its outputs are needed)."""
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 3 or outputs.shape[0] != self.t_max:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise ValueError(f"outputs: expected per-step outputs [t_max={self.t_max}, B, classes], got {shape}")
        # summed in float64 step after step, exactly as live mode sums, then scored in float32
        accumulated = outputs.detach().double().cumsum(0).float()
        return Trace(self.scores(accumulated), accumulated.argmax(-1), accumulated)

    def decide(self, trace: Trace, threshold: Optional[torch.Tensor] = None) -> DynamicResult:
        """Exit steps and predictions that ``threshold`` (default: the controller's) gives on a trace."""
        thr = self.threshold if threshold is None else self._thresholds(threshold, "threshold")
        conf = trace.confidence if trace.accumulated is None else self.scores(trace.accumulated)
        steps = torch.arange(1, conf.shape[0] + 1).unsqueeze(1)
        ready = (conf >= thr[: conf.shape[0]].unsqueeze(1)) & (steps >= self.t_min)
        ready[-1] = True
        exit_index = ready.float().argmax(0)  # the first step that is ready
        preds = trace.prediction.gather(0, exit_index.unsqueeze(0))[0]
        return DynamicResult(preds, exit_index + 1,
                             lambda: [conf[: i + 1, b].tolist() for b, i in enumerate(exit_index.tolist())])

    # ----- live mode --------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, model: nn.Module, inputs: torch.Tensor, mode: str = "live", static: bool = False,
            keep_traces: bool = False) -> DynamicResult:
        """Predictions and exit steps; ``live`` really drops finished samples, ``trace`` simulates
        all. ``inputs`` as in :meth:`trace`; ``keep_traces`` records every sample's scores in live mode."""
        if mode == "trace":
            self._warn_unset()
            return self.decide(self.trace(model, inputs, static))
        if mode != "live":
            raise ValueError(f"mode: expected 'live' or 'trace', got {mode!r}")
        for need in ("step", "reset", "select_batch"):
            if not callable(getattr(model, need, None)):
                raise TypeError(f"model: live mode steps the model and shrinks its state, so it needs .{need}() "
                                f"({type(model).__name__} has none); use a spikelab Sequential, a converted SNN, "
                                "or mode='trace'")
        seq = self._sequence(inputs, static)
        self._warn_unset()
        batch = seq.shape[1]
        active = torch.arange(batch)
        preds = torch.full((batch,), -1, dtype=torch.long)
        exits = torch.zeros(batch, dtype=torch.long)
        confs: list[list[float]] = [[] for _ in range(batch)]
        # Several steps per call where the model can continue a sequence (``steps``): per-step
        # calls cost a fixed overhead that a long run would pay t_max times. The chunk grows
        # with the time already spent (a quarter of it), so a sample that exits inside a chunk
        # costs at most 25% extra work; decisions are still taken at every step. Measured on
        # the T = 300 event benchmark: a quarter keeps ~0.8 of the step saving in wall time,
        # an eighth ~0.7, one step per call ~0.2.
        multi = callable(getattr(model, "steps", None))
        model.reset()
        total = None
        rows = None  # the input rows still running; None while every sample runs
        t = 0
        while t < self.t_max:
            size = min(max(1, t // 4), self.t_max - t) if multi else 1
            x = seq[t: t + size]
            x = x if rows is None else x.index_select(1, rows)
            outs = model.steps(x) if multi else model.step(x[0]).unsqueeze(0)
            # the chunk's decisions at once: summed evidence at each of its steps, first ready step
            steps = torch.arange(t + 1, t + outs.shape[0] + 1)
            sums = outs.double().cumsum(0) + (0 if total is None else total)
            total = sums[-1]
            evidence = sums.float().cpu()  # scored on the CPU, as trace mode and calibration score
            scale = steps.to(evidence).view(-1, 1, 1) if self.evidence == "mean" else 1
            conf = confidence(evidence / scale, self.score, self.temperature)  # [chunk, B]
            ready = (conf >= self.threshold[t: t + len(steps)].unsqueeze(1)) & (steps >= self.t_min).unsqueeze(1)
            if steps[-1] == self.t_max:
                ready[-1] = True
            done = ready.any(0)
            first = ready.float().argmax(0)  # the first ready step of each sample in the chunk
            if done.any():
                exits[active[done]] = steps[first[done]]
                labels = evidence.argmax(-1)
                preds[active[done]] = labels[first[done], done.nonzero().flatten()]
            if keep_traces:
                last = torch.where(done, first, len(steps) - 1).tolist()
                for j, (i, n) in enumerate(zip(active.tolist(), last)):
                    confs[i].extend(conf[: n + 1, j].tolist())
            t += len(steps)
            if done.all():
                break
            if done.any():
                keep = (~done).nonzero().flatten()
                model.select_batch(keep.to(seq.device))
                active, total = active[keep], total[keep.to(total.device)]
                rows = active.to(seq.device)
        model.reset()
        return DynamicResult(preds, exits, confs)

    def _warn_unset(self) -> None:
        if self._unset:
            warnings.warn("threshold: never set (inf at every step), so every sample runs all t_max steps; calibrate "
                          "the controller first (spikelab.dynamic.calibrate) or pass threshold=", stacklevel=4)

    def _sequence(self, inputs: torch.Tensor, static: bool) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs: expected a tensor, got {type(inputs).__name__}")
        if static:
            return inputs.unsqueeze(0).expand(self.t_max, *inputs.shape)
        if inputs.ndim < 2 or inputs.shape[0] < self.t_max:
            raise ValueError(f"inputs: expected [T, B, ...] with T >= t_max ({self.t_max}), got shape "
                             f"{tuple(inputs.shape)} (pass static=True for one input shown at every step)")
        return inputs[: self.t_max]

    # ----- persistence ------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"score": self.score, "evidence": self.evidence, "temperature": self.temperature,
                "threshold": [v if math.isfinite(v) else None for v in self.threshold.tolist()],  # JSON-safe
                "t_min": self.t_min, "t_max": self.t_max}

    @classmethod
    def from_state(cls, state: dict) -> "DynamicConfidence":
        """A controller from :meth:`state` (checked like the constructor's arguments); states saved
        before ``evidence`` existed averaged the readout, so they load with ``evidence="mean"``."""
        if not isinstance(state, dict):
            raise ValueError(f"dynamic_confidence: expected a dict of settings, got {type(state).__name__}")
        missing = {"score", "temperature", "threshold", "t_min", "t_max"} - set(state)
        if missing:
            raise ValueError(f"dynamic_confidence: missing settings {sorted(missing)}")
        threshold = state["threshold"]
        if isinstance(threshold, (list, tuple)):
            threshold = [math.inf if v is None else v for v in threshold]
        return cls(state["score"], state["temperature"], threshold, state["t_min"], state["t_max"],
                   state.get("evidence", "mean"))

    def attach(self, model: nn.Module) -> nn.Module:
        """Store this setting on ``model`` (saved with it by ``torch.save(model)``)."""
        model.dynamic_confidence = self.state()
        return model

    def __repr__(self) -> str:
        thr = self.threshold
        shown = f"{thr[0].item():.4g}" if bool((thr == thr[0]).all()) else f"[{self.t_max} per-step values]"
        return (f"DynamicConfidence(score={self.score!r}, evidence={self.evidence!r}, "
                f"temperature={self.temperature:.4g}, threshold={shown}, t_min={self.t_min}, t_max={self.t_max})")


__all__ = ["SCORES", "BOUNDED", "DynamicResult", "Trace", "confidence", "DynamicConfidence"]
