"""Activity statistics of a spiking network: firing rates, synaptic operations, energy.

Synaptic operations are counted exactly per Conv/Linear layer and step: every input element
reaches as many synapses as an all-ones copy of the layer says (borders, strides, padding and
groups are right for convolutions). An input of spikes or event counts (non-negative integers)
costs one accumulate (AC) per event and synapse; any other value (an analog first layer)
costs one multiply-accumulate (MAC) per non-zero input and synapse. The same network as an
ANN costs one MAC per synapse for every input element, once per sample.

Energy constants default to Horowitz (ISSCC 2014, 45 nm, 32-bit float): 4.6 pJ per MAC and
0.9 pJ per AC; pass your own :class:`EnergyModel` for other hardware.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from spikelab.monitor import Monitor, spike_rates
from spikelab.state import reset

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class EnergyModel:
    """Energy per operation in picojoules."""

    mac_pj: float = 4.6
    ac_pj: float = 0.9


def synapses(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sum over the elements of ``x`` of (value x the number of synapses the element reaches).

    ``x`` may carry leading time/batch dimensions (``[T, B, ...]`` for spikelab's folded layers).
    The count is linear in ``x``, and every output channel of a convolution group sees the same
    windows of that group's inputs: the samples and each group's channels are summed first, then
    one single-channel convolution of ones per group counts the windows (in float64: exact for
    integer counts), instead of a convolution as large as the layer's own.
    """
    if isinstance(layer, nn.Linear):
        return x.sum(dtype=torch.float64) * layer.out_features
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        spatial = 2 if isinstance(layer, nn.Conv2d) else 1
        x = x.reshape(-1, *x.shape[-(spatial + 1):])
        groups = layer.groups
        per_group = x.reshape(x.shape[0], groups, -1, *x.shape[2:]).sum((0, 2), dtype=torch.float64)
        conv = F.conv2d if spatial == 2 else F.conv1d
        ones = torch.ones((groups, 1) + tuple(layer.kernel_size), dtype=torch.float64, device=x.device)
        padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
        windows = conv(per_group.unsqueeze(0), ones, None, layer.stride, padding, layer.dilation, groups)
        return windows.sum() * (layer.out_channels // groups)
    return torch.zeros((), dtype=torch.float64)


def _is_events(x: torch.Tensor) -> bool:
    return bool(((x >= 0) & (x == x.round())).all())


class OperationCounter:
    """Count AC and MAC operations per weighted layer over the forward passes of ``model``.

    By default each input decides: event counts (non-negative integers) cost one AC per event
    and synapse, anything else one MAC per non-zero value and synapse. With ``analog`` (layer
    names), those layers cost MACs and every other layer one AC per non-zero input (spikes of any
    amplitude, e.g. a converted network's threshold-scaled spikes).
    """

    def __init__(self, model: nn.Module, analog: Optional[Iterable[str]] = None) -> None:
        self.ac: dict[str, float] = {}
        self.mac: dict[str, float] = {}
        self.analog = None if analog is None else set(analog)
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in model.named_modules()
                         if isinstance(m, WEIGHTED)]

    def _hook(self, name: str):
        def hook(module, args):
            x = args[0].detach()
            if self.analog is not None:
                ops = self.mac if name in self.analog else self.ac
                ops[name] = ops.get(name, 0.0) + synapses(module, (x != 0)).item()
            elif _is_events(x):
                self.ac[name] = self.ac.get(name, 0.0) + synapses(module, x).item()
            else:
                self.mac[name] = self.mac.get(name, 0.0) + synapses(module, (x != 0)).item()
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def dense_operations(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """MACs of each weighted layer of ``model`` run as an ANN: every synapse, for every input
    element, for the whole input ``x`` (pass one step ``[1, B, ...]`` for a per-step count)."""
    ops: dict[str, float] = {}

    def hook(name):
        def fn(module, args):
            ops[name] = ops.get(name, 0.0) + synapses(module, torch.ones_like(args[0])).item()
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, WEIGHTED)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ops


def _recorded_spikes(model: nn.Module, x_seq: torch.Tensor) -> dict[str, torch.Tensor]:
    """The spikes ``[T, B, ...]`` of every spikelab neuron layer in one run from a fresh state."""
    with torch.no_grad(), Monitor(model) as mon:
        reset(model)
        model(x_seq)
        reset(model)
    return mon.spikes


@torch.no_grad()
def activity(model: nn.Module, x_seq: torch.Tensor, energy: EnergyModel = EnergyModel(),
             per_neuron: bool = False) -> dict:
    """Run ``model`` (in eval mode) on ``x_seq`` ``[T, B, ...]`` and report, per sample: firing
    rates per layer (and per neuron with ``per_neuron``), AC/MAC operations per layer, and the
    energy of the SNN against the same network as an ANN (one pass on one step's input)."""
    if not isinstance(x_seq, torch.Tensor) or x_seq.ndim < 3:
        raise ValueError(f"x_seq: expected a tensor [T, B, ...], got {getattr(x_seq, 'shape', type(x_seq).__name__)}")
    steps, batch = x_seq.shape[0], x_seq.shape[1]
    was_training = model.training
    model.eval()
    counter = OperationCounter(model)
    try:
        spikes = _recorded_spikes(model, x_seq)
    finally:
        counter.remove()
    try:
        ann = dense_operations(model, x_seq[:1])
    finally:
        model.train(was_training)
    ac = {n: v / batch for n, v in counter.ac.items()}
    mac = {n: v / batch for n, v in counter.mac.items()}
    ann_mac = {n: v / batch for n, v in ann.items()}
    snn_pj = sum(ac.values()) * energy.ac_pj + sum(mac.values()) * energy.mac_pj
    ann_pj = sum(ann_mac.values()) * energy.mac_pj
    report = {
        "timesteps": steps, "samples": batch,
        "firing_rate": spike_rates(spikes, per_neuron=False),
        "ops_per_sample": {"ac": ac, "mac": mac, "ann_mac": ann_mac},
        "energy_constants_pj": asdict(energy),
        "energy_per_sample_pj": {"snn": snn_pj, "ann": ann_pj, "ratio_ann_over_snn": ann_pj / snn_pj if snn_pj else None},
    }
    if per_neuron:
        report["firing_rate_per_neuron"] = spike_rates(spikes, per_neuron=True)
    return report


def firing_rates(model: nn.Module, x_seq: torch.Tensor, per_neuron: bool = False) -> dict:
    """Mean spikes per neuron and step of every spikelab neuron layer (or per neuron: a tensor of
    each layer's per-sample shape)."""
    return spike_rates(_recorded_spikes(model, x_seq), per_neuron)


__all__ = ["EnergyModel", "OperationCounter", "activity", "dense_operations", "firing_rates", "synapses"]
