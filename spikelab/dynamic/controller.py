"""Dynamic Confidence (Li, Jones, Furber, ICCV 2023): stop each sample once its SNN output is confident.

At step ``t`` the accumulated readout is averaged over the steps so far, softened with a
``temperature`` and scored: ``maxprob`` (the largest softmax probability), ``margin``
(largest minus second largest) or ``entropy`` (1 - entropy / log(classes)); all lie in
[0, 1]. A sample exits at the first step ``t >= t_min`` whose score reaches the threshold of
step ``t`` (or at ``t_max``), predicting the argmax of its accumulated readout.

Two ways to run: ``trace`` simulates all ``t_max`` steps once and scores any threshold
afterwards (calibration, reports); ``live`` steps the model and removes finished samples from
the batch, inputs and every neuron state together (``select_batch``), so the work really falls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn

SCORES = ("maxprob", "margin", "entropy")


@dataclass
class DynamicResult:
    predictions: torch.Tensor  # [B]
    exit_steps: torch.Tensor  # [B], 1-based
    confidences: list  # per sample, the scores up to its exit step

    @property
    def mean_steps(self) -> float:
        return self.exit_steps.float().mean().item()


@dataclass
class Trace:
    """Scores and predictions of every sample at every step ``1..t_max``."""

    confidence: torch.Tensor  # [t_max, B]
    prediction: torch.Tensor  # [t_max, B]


def confidence(mean_readout: torch.Tensor, score: str, temperature: float) -> torch.Tensor:
    p = torch.softmax(mean_readout / temperature, dim=-1)
    if score == "maxprob":
        return p.max(-1).values
    if score == "margin":
        top = p.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    return 1.0 - entropy / math.log(p.shape[-1])


class DynamicConfidence:
    """The controller: the score, its temperature, the threshold(s) and the step bounds."""

    def __init__(self, score: str = "maxprob", temperature: float = 1.0,
                 threshold: Union[float, Sequence[float]] = 0.9, t_min: int = 1, t_max: int = 64) -> None:
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
        for name, value in (("t_min", t_min), ("t_max", t_max)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min}) must not exceed t_max ({t_max})")
        self.score, self.temperature, self.t_min, self.t_max = score, float(temperature), t_min, t_max
        self.threshold = threshold

    @property
    def threshold(self) -> torch.Tensor:
        return self._threshold

    @threshold.setter
    def threshold(self, value) -> None:
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
        if t.numel() not in (1, self.t_max):
            raise ValueError(f"threshold: expected one value or one per step ({self.t_max}), got {t.numel()}")
        if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
            raise ValueError(f"threshold: {self.score} scores lie in [0, 1]; got values outside it: {t.tolist()}")
        self._threshold = t.expand(self.t_max).clone()

    # ----- trace mode ------------------------------------------------------------------------------
    @torch.no_grad()
    def trace(self, model: nn.Module, inputs: torch.Tensor, static: bool = False) -> Trace:
        """One simulation of ``t_max`` steps on ``inputs`` ``[T, B, ...]`` (or a static ``[B, ...]``
        presented at every step with ``static=True``)."""
        seq = self._sequence(inputs, static)
        out = model(seq)  # [t_max, B, C]
        steps = torch.arange(1, out.shape[0] + 1, dtype=out.dtype).view(-1, 1, 1)
        mean = out.cumsum(0) / steps
        return Trace(confidence(mean, self.score, self.temperature), mean.argmax(-1))

    def decide(self, trace: Trace, threshold: Optional[torch.Tensor] = None) -> DynamicResult:
        """Exit steps and predictions that ``threshold`` (default: the controller's) gives on a trace."""
        thr = self.threshold if threshold is None else torch.as_tensor(threshold, dtype=torch.float32).expand(
            self.t_max)
        conf = trace.confidence
        steps = torch.arange(1, conf.shape[0] + 1).unsqueeze(1)
        ready = (conf >= thr[: conf.shape[0]].unsqueeze(1)) & (steps >= self.t_min)
        ready[-1] = True
        exit_index = ready.float().argmax(0)  # the first step that is ready
        preds = trace.prediction.gather(0, exit_index.unsqueeze(0))[0]
        confs = [conf[: i + 1, b].tolist() for b, i in enumerate(exit_index.tolist())]
        return DynamicResult(preds, exit_index + 1, confs)

    # ----- live mode --------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, model: nn.Module, inputs: torch.Tensor, mode: str = "live", static: bool = False,
            keep_traces: bool = False) -> DynamicResult:
        """Predictions and exit steps; ``live`` really drops finished samples, ``trace`` simulates
        all. ``inputs`` as in :meth:`trace`; ``keep_traces`` records every sample's scores in live mode."""
        if mode == "trace":
            return self.decide(self.trace(model, inputs, static))
        if mode != "live":
            raise ValueError(f"mode: expected 'live' or 'trace', got {mode!r}")
        for need in ("step", "reset", "select_batch"):
            if not callable(getattr(model, need, None)):
                raise TypeError(f"model: live mode steps the model and shrinks its state, so it needs .{need}() "
                                f"({type(model).__name__} has none); use a spikelab Sequential, a converted SNN, "
                                "or mode='trace'")
        seq = self._sequence(inputs, static)
        batch = seq.shape[1]
        active = torch.arange(batch)
        preds = torch.full((batch,), -1, dtype=torch.long)
        exits = torch.zeros(batch, dtype=torch.long)
        confs: list[list[float]] = [[] for _ in range(batch)]
        model.reset()
        total = None
        x_active = seq
        for t in range(1, self.t_max + 1):
            out = model.step(x_active[t - 1])
            total = out.clone() if total is None else total + out
            conf = confidence(total / t, self.score, self.temperature)
            if keep_traces:
                for i, c in zip(active.tolist(), conf.tolist()):
                    confs[i].append(c)
            done = (conf >= self.threshold[t - 1]) if t >= self.t_min else torch.zeros_like(conf, dtype=torch.bool)
            if t == self.t_max:
                done = torch.ones_like(done)
            if done.any():
                finished = active[done]
                preds[finished] = total[done].argmax(-1)
                exits[finished] = t
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                model.select_batch(keep)
                active, total = active[keep], total[keep]
                x_active = x_active.index_select(1, keep)
        model.reset()
        return DynamicResult(preds, exits, confs)

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
        return {"score": self.score, "temperature": self.temperature, "threshold": self.threshold.tolist(),
                "t_min": self.t_min, "t_max": self.t_max}

    @classmethod
    def from_state(cls, state: dict) -> "DynamicConfidence":
        return cls(state["score"], state["temperature"], state["threshold"], state["t_min"], state["t_max"])

    def attach(self, model: nn.Module) -> nn.Module:
        """Store this setting on ``model`` (saved with it by ``torch.save(model)``)."""
        model.dynamic_confidence = self.state()
        return model

    def __repr__(self) -> str:
        thr = self.threshold
        shown = f"{thr[0].item():.4g}" if bool((thr == thr[0]).all()) else f"[{self.t_max} per-step values]"
        return (f"DynamicConfidence(score={self.score!r}, temperature={self.temperature:g}, threshold={shown}, "
                f"t_min={self.t_min}, t_max={self.t_max})")
