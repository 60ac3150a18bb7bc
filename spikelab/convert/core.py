"""ANN -> SNN conversion: trace, fold BatchNorm, calibrate thresholds, swap activations for IF neurons.

Every ReLU-like call site (an ``nn.ReLU`` reused at three places becomes three neurons)
becomes an IF neuron with reset by subtraction, a membrane starting at half its threshold, and
spikes of amplitude ``threshold`` so the next layer sees the same scale as in the ANN. The
threshold of each site is a statistic of its ANN activations on calibration data: ``"max"``,
or ``"robust"`` (the ``percentile``-th percentile, Rueckauer et al. 2017), per layer or per
channel; a QCFS site uses its learned clip. The SNN runs the traced graph once per time step,
so the readout (the last layer, never a neuron) gives ``[T, B, classes]``.

Sites are named after what they replace: the module path for a module (``layer1.0.relu``, with
``#1``, ``#2`` when one module is called at several places), the fx node name for a function or
method call (``relu_3``); ``report["replaces"]`` says what and where, e.g. ``relu_3: F.relu in
ResCNN.forward, mynet.py:14``. Reports and errors use these names.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from torch import fx, nn
from torch.nn import functional as F

from spikelab.convert.graph import (ConversionError, activation_sites, check_supported, fold_batchnorm, nodes_of,
                                    replace_with_module, site_names, submodule_key, tidy, trace)
from spikelab.convert.qcfs import QCFS
from spikelab.layers.pooling import FastAvgPool2d, avg_pool2d
from spikelab.neurons import IF

MAX_SAMPLES = 200_000  # activation values kept per site (or per channel) for percentiles


class _Recorder(nn.Module):
    """Applies the activation and keeps, per site (or per channel), the exact maximum and a
    uniform random sample of the positive outputs over all calibration batches.

    The sample is a running merge: when a batch would overflow ``MAX_SAMPLES``, the kept sample
    and the batch each contribute in proportion to how many values they stand for, so the
    percentile is estimated from every batch, not only the first ones. Zeros are left out of the
    percentile (Rueckauer et al. 2017 take it over the non-zero activity): a layer where most
    units are silent would otherwise get a threshold far below its active units.
    """

    def __init__(self, activation: nn.Module, per_channel: bool, label: str = "") -> None:
        super().__init__()
        self.activation = activation
        self.per_channel = per_channel
        self.label = label
        self.maximum: torch.Tensor | None = None
        self.samples: list[torch.Tensor] | None = None  # one 1-D tensor per row (channel or layer)
        self.counts: list[int] = []

    def forward(self, x):
        y = self.activation(x)
        with torch.no_grad():
            v = y.detach().float()
            v = v.transpose(0, 1).flatten(1) if (self.per_channel and v.ndim > 1) else v.reshape(1, -1)
            batch_max = v.max(dim=1).values.cpu() if v.shape[1] else torch.zeros(v.shape[0])
            self.maximum = batch_max if self.maximum is None else torch.maximum(self.maximum, batch_max)
            if self.samples is None:
                self.samples = [torch.empty(0) for _ in range(v.shape[0])]
                self.counts = [0] * v.shape[0]
            for row in range(v.shape[0]):
                positive = v[row][v[row] > 0].cpu()
                self.samples[row], self.counts[row] = _merge_sample(self.samples[row], self.counts[row], positive)
        return y

    def threshold(self, method: str, percentile: float) -> torch.Tensor:
        if self.maximum is None:
            raise ConversionError(f"calibration data never reached the activation {self.label}")
        if method == "max":
            t = self.maximum.clone()
        else:
            t = torch.stack([torch.quantile(s, percentile / 100.0) if s.numel() else torch.tensor(0.0)
                             for s in self.samples])
        t = torch.where(t > 0, t, torch.ones_like(t) * 1e-3)  # a silent site: any small threshold
        return t if self.per_channel else t[0]


def _merge_sample(kept: torch.Tensor, kept_count: int, new: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A uniform sample of at most ``MAX_SAMPLES`` values standing for ``kept_count + len(new)``."""
    total = kept_count + new.numel()
    if total <= MAX_SAMPLES:
        return torch.cat([kept, new]), total
    from_new = round(MAX_SAMPLES * new.numel() / total)
    from_kept = min(kept.numel(), MAX_SAMPLES - from_new)
    parts = [kept[torch.randperm(kept.numel())[:from_kept]], new[torch.randperm(new.numel())[:from_new]]]
    return torch.cat(parts), total


class _ActivationOf(nn.Module):
    """The activation of a function/method call site, as a module."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class SpikingSite(nn.Module):
    """An IF neuron standing for one ANN activation call site: threshold ``theta``, reset by
    subtraction, membrane starting at ``theta / 2``, output ``theta * spike``. ``name`` and
    ``replaces`` say which call of the ANN it stands for (``relu_3``, ``F.relu in Net.forward, net.py:14``)."""

    def __init__(self, threshold: torch.Tensor, start: float = 0.5, name: str = "", replaces: str = "") -> None:
        super().__init__()
        self.name = name
        self.replaces = replaces
        threshold = threshold.detach().float().clamp_min(1e-6)
        channels = threshold.numel() if threshold.ndim == 1 else None
        self.neuron = IF(threshold=threshold.clone(), reset="subtract", num_channels=channels)
        self.start = start

    @property
    def threshold(self) -> torch.Tensor:
        return self.neuron.threshold

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron._view(self.neuron.threshold, x.ndim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.neuron.state["v"] is None:
            self.neuron.set_state(v=(self.start * self._scale(x)).expand_as(x).contiguous().to(x.dtype))
        return self.neuron.step(x) * self._scale(x)

    def reset(self) -> None:
        self.neuron.reset()

    def extra_repr(self) -> str:
        t = self.neuron.threshold
        text = f"threshold={t.item():.4g}" if t.numel() == 1 else f"threshold=[{t.numel()} channels]"
        name, replaces = getattr(self, "name", ""), getattr(self, "replaces", "")  # absent in older pickles
        return text + (f", name={name!r}" if name else "") + (f", replaces={replaces!r}" if replaces else "")


class ConvertedSNN(nn.Module):
    """The converted network: ``forward(x_seq [T, B, ...]) -> [T, B, ...]`` (readout per step)."""

    _spikelab_stateful = True

    def __init__(self, graph_module: fx.GraphModule, report: dict) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.report = report

    def sites(self) -> list[tuple[str, SpikingSite]]:
        """``(name, site)`` in graph order; the name is the call the site replaces (``layer1.0.relu``,
        ``relu_3``; see ``report["replaces"]``)."""
        return [(getattr(m, "name", "") or n, m) for n, m in self.graph_module.named_modules()
                if isinstance(m, SpikingSite)]

    def site(self, name: str) -> SpikingSite:
        """The site named ``name`` (as in :meth:`sites` and the report)."""
        sites = dict(self.sites())
        if name not in sites:
            raise KeyError(f"no site {name!r}; the sites: {', '.join(sites)}")
        return sites[name]

    def reset(self) -> None:
        for _, site in self.sites():
            site.reset()

    def select_batch(self, index) -> None:
        for _, site in self.sites():
            site.neuron.select_batch(index)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step on ``x`` ``[B, ...]``; neuron state persists until :meth:`reset`."""
        return self.graph_module(x)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.ndim < 2:
            raise ValueError(f"x_seq: expected [T, B, ...], got shape {tuple(x_seq.shape)}")
        self.reset()
        out = torch.stack([self.graph_module(x_seq[t]) for t in range(x_seq.shape[0])])
        self.reset()
        return out

    def run(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Present the static input ``x`` ``[B, ...]`` for ``steps`` steps: ``[steps, B, ...]``.

        Differentiable like any module call; to evaluate, call it under ``torch.no_grad()``, or
        autograd keeps every step's graph (measured: three times slower on the tutorial's CNN)."""
        return self.forward(x.unsqueeze(0).expand(steps, *x.shape))


def _batches(data) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        yield data
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def convert(model: nn.Module, calibration_data: Union[torch.Tensor, Iterable], method: str = "robust",
            percentile: float = 99.9, per_channel: bool = False, maxpool: str = "spike",
            start: float = 0.5, spike_fed_start: Optional[float] = None) -> ConvertedSNN:
    """Convert a trained ReLU (or QCFS) network into an SNN of IF neurons.

    Args:
        model: the ANN (``eval()`` mode is used; the original is not modified).
        calibration_data: ANN inputs, a tensor ``[N, ...]`` or an iterable of batches
            (tensors or ``(x, y)`` tuples), used to set the thresholds.
        method: ``"robust"`` (percentile of the activations) or ``"max"``; QCFS sites use their clip.
        percentile: the percentile of ``"robust"``.
        per_channel: one threshold per channel (dimension 1) instead of one per layer.
        maxpool: ``"spike"`` keeps max pooling on spikes (a spike-gated max: a window fires when
            any of its inputs fires) or ``"avg"`` replaces it by average pooling of the same window.
        start: initial membrane as a fraction of the threshold.
        spike_fed_start: the initial membrane of the sites fed by other sites' spikes (every
            neuron after the first layer), when it should differ from ``start``; ``None`` uses
            ``start`` everywhere. See docs/conversion.md for the trade-off.
    """
    if method not in ("robust", "max"):
        raise ValueError(f"method: expected 'robust' or 'max', got {method!r}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a value in (0, 100], got {percentile}")
    for name, value in (("start", start), ("spike_fed_start", spike_fed_start)):
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: expected a fraction of the threshold in [0, 1), got {value}")
    if maxpool not in ("spike", "avg"):
        raise ValueError(f"maxpool: expected 'spike' or 'avg', got {maxpool!r}")
    if not isinstance(model, nn.Module):
        hint = " (a file: load it first with spikelab.convert.load_ann)" if isinstance(model, (str, Path)) else ""
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__} {model!r:.80}{hint}")
    root = type(model)
    model = copy.deepcopy(model).eval()
    gm = trace(model)
    check_supported(gm)
    gm = fold_batchnorm(gm)
    for node in nodes_of(gm, (nn.Dropout, nn.Dropout2d)):
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    if maxpool == "avg":
        for node in nodes_of(gm, (nn.MaxPool2d,)):
            mp = gm.get_submodule(node.target)
            gm.add_submodule(node.target, nn.AvgPool2d(mp.kernel_size, mp.stride, mp.padding))
    sites = activation_sites(gm)
    if not sites:
        raise ConversionError("the model has no ReLU-like activation to turn into neurons")
    recorders: list[tuple[fx.Node, _Recorder, str, str]] = []
    keys: set[str] = set()
    for node, (name, replaces) in zip(sites, site_names(gm, sites, root)):
        if node.op == "call_module":
            act = gm.get_submodule(node.target)
        else:
            act = _ActivationOf(_callable(node))
        rec = _Recorder(act, per_channel, f"{name} ({replaces})")
        key = submodule_key(gm, name, keys)
        recorders.append((replace_with_module(gm, node, key, rec), rec, name, replaces))
    tidy(gm)
    with torch.no_grad():
        seen = 0
        for x in _batches(calibration_data):
            try:
                gm(x)
            except Exception as err:  # noqa: BLE001 - the model's own error, reported with the batch's shape
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ConversionError(f"calibration: the model fails on a calibration batch of shape {shape}: "
                                      f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
                                      ". Calibration inputs must be what the ANN takes, [N, ...]") from None
            seen += len(x)
    if seen == 0:
        raise ValueError("calibration_data: no batches")
    spike_fed = _fed_by_sites(gm, [node for node, *_ in recorders])
    thresholds, origins = {}, {}
    for node, rec, name, replaces in recorders:
        if isinstance(rec.activation, QCFS):
            t = rec.activation.clip.detach().clone()
        else:
            t = rec.threshold(method, percentile)
        site_start = spike_fed_start if (spike_fed_start is not None and node in spike_fed) else start
        gm.add_submodule(node.target, SpikingSite(t, site_start, name=name, replaces=replaces))
        thresholds[name] = t.tolist()
        origins[name] = replaces
    _fast_pooling(gm)
    gm.recompile()
    report = {"method": method, "percentile": percentile, "per_channel": per_channel, "maxpool": maxpool,
              "start": start, "spike_fed_start": start if spike_fed_start is None else spike_fed_start,
              "calibration_samples": seen, "sites": len(recorders), "thresholds": thresholds, "replaces": origins}
    return ConvertedSNN(gm, report)


def _fast_pooling(gm: fx.GraphModule) -> None:
    """Average pooling in the simulated network takes spikelab's fast CPU path
    (:mod:`spikelab.layers.pooling`): same windows, same divisor, several times faster on the
    spike maps a converted network pools at every step."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.AvgPool2d:
            gm.add_submodule(node.target, FastAvgPool2d.like(gm.get_submodule(node.target)))
        elif node.op == "call_function" and node.target is F.avg_pool2d:
            node.target = avg_pool2d


def _fed_by_sites(gm: fx.GraphModule, sites: list[fx.Node]) -> set[fx.Node]:
    """The sites with another site upstream: their input arrives as spikes, not as the
    network's analog input."""
    site_set, downstream = set(sites), set()
    for node in gm.graph.nodes:  # topological order
        if any(arg in site_set or arg in downstream for arg in node.all_input_nodes):
            downstream.add(node)
    return downstream & site_set


def _callable(node: fx.Node):
    if node.op == "call_function":
        fn, extra, kw = node.target, node.args[1:], {k: v for k, v in node.kwargs.items() if k != "inplace"}
        return lambda x: fn(x, *extra, **kw)
    method = node.target.rstrip("_")
    extra = node.args[1:]
    kw = dict(node.kwargs)
    return lambda x: getattr(x, method)(*extra, **kw)


__all__ = ["SpikingSite", "ConvertedSNN", "convert", "MAX_SAMPLES"]
