"""Record the spikes (and optionally the membrane) of chosen layers during a run.

Only monitored layers are touched: each gets a forward hook that keeps its output, and with
``membrane=True`` it runs its sequence on the plain-PyTorch reference (which keeps the
membrane of every step) instead of the fused kernel. Every other layer runs exactly as
without a monitor. Records are detached and appended per forward call (several batches give
several entries; :meth:`Monitor.cat` joins them along the batch).
"""

from __future__ import annotations

import warnings
from typing import Iterable, Sequence, Union

import torch
from torch import nn

from spikelab.neurons.base import BaseNeuron

LayerSpec = Union[None, str, type, Sequence[Union[str, type]]]


def _selected(model: nn.Module, layers: LayerSpec) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module holding spikelab neurons, got {type(model).__name__}")
    named = [(n, m) for n, m in model.named_modules() if n]
    if isinstance(model, BaseNeuron):  # a bare neuron is watched under its class name
        named.insert(0, (type(model).__name__, model))
    if layers is None:
        neurons = [(n, m) for n, m in named if isinstance(m, BaseNeuron)]
        if not neurons:
            raise ValueError(f"Monitor: {type(model).__name__} holds no spikelab neuron to watch; name the layers "
                             f"to record (layers=[...], from model.named_modules()) for other modules' outputs")
        return neurons
    wanted = [layers] if isinstance(layers, (str, type)) else list(layers)
    picked, names = [], dict(named)
    for spec in wanted:
        if isinstance(spec, str):
            if spec not in names:
                raise KeyError(f"layers: the model has no layer {spec!r}; its neurons are "
                               f"{[n for n, m in named if isinstance(m, BaseNeuron)]}")
            picked.append((spec, names[spec]))
        elif isinstance(spec, type):
            picked += [(n, m) for n, m in named if isinstance(m, spec)]
        else:
            raise TypeError(f"layers: expected layer names or module types, got {type(spec).__name__}")
    if not picked:
        raise ValueError(f"layers: {layers!r} selects no layer of the model")
    return picked


def spike_rates(spikes: dict[str, torch.Tensor], per_neuron: bool = False) -> dict:
    """Fraction of steps with a spike, per layer (a float) or per neuron (a tensor of the layer's
    per-sample shape), from recorded outputs ``[T, B, ...]``."""
    if per_neuron:
        return {n: (s != 0).float().mean(dim=(0, 1)) for n, s in spikes.items()}
    return {n: float((s != 0).float().mean()) for n, s in spikes.items()}


class Monitor:
    """``with Monitor(model, layers=None, membrane=False) as mon: model(x)`` then ``mon.spikes[name]``.

    Args:
        model: any module holding spikelab neurons.
        layers: layer names (as in ``model.named_modules()``), module types, or ``None`` for every
            spikelab neuron.
        membrane: also record the membrane (the charged potential ``h`` of every step, before the
            reset) of monitored neurons; requires them to be spikelab neurons.
        to_cpu: move records to the CPU as they arrive.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec = None, membrane: bool = False,
                 to_cpu: bool = True) -> None:
        self.layers = _selected(model, layers)
        if membrane:
            bad = [n for n, m in self.layers if not isinstance(m, BaseNeuron)]
            if bad:
                raise TypeError(f"membrane=True: layers {bad} are not spikelab neurons (no membrane to record)")
        self.membrane_enabled = bool(membrane)
        self.to_cpu = bool(to_cpu)
        self._spikes: dict[str, list[torch.Tensor]] = {n: [] for n, _ in self.layers}
        self._membrane: dict[str, list[torch.Tensor]] = {n: [] for n, _ in self.layers}
        self._handles: list = []

    # ----- attaching --------------------------------------------------------------------------
    def attach(self) -> "Monitor":
        if self._handles:
            return self
        for name, module in self.layers:
            self._handles.append(module.register_forward_hook(self._hook(name)))
            if self.membrane_enabled:
                module._membrane_trace = self._membrane[name]
        return self

    def detach(self, _failed: bool = False) -> None:
        if self._handles and not _failed and not any(self._spikes.values()):
            warnings.warn("Monitor recorded nothing: it records forward() calls (a whole sequence); "
                          "step() and steps() do not pass through it", stacklevel=3)
        for h in self._handles:
            h.remove()
        self._handles = []
        for _, module in self.layers:
            if isinstance(module, BaseNeuron):
                module._membrane_trace = None

    def __enter__(self) -> "Monitor":
        return self.attach()

    def __exit__(self, exc_type, *exc) -> None:
        self.detach(_failed=exc_type is not None)  # no "recorded nothing" on top of the real error

    def _hook(self, name: str):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            out = out.detach()
            self._spikes[name].append(out.cpu() if self.to_cpu else out)
        return hook

    # ----- reading ----------------------------------------------------------------------------
    @staticmethod
    def _joined(records: dict[str, list[torch.Tensor]], dim: int) -> dict[str, torch.Tensor]:
        return {n: torch.cat(v, dim=dim) for n, v in records.items() if v}

    @property
    def spikes(self) -> dict[str, torch.Tensor]:
        """Per layer, the outputs of all recorded calls joined along the batch: ``[T, B, ...]``."""
        return self._joined(self._spikes, 1)

    @property
    def membrane(self) -> dict[str, torch.Tensor]:
        """Per layer, the charged membrane of every step joined along the batch: ``[T, B, ...]``."""
        if not self.membrane_enabled:
            raise RuntimeError("membrane: this Monitor was created with membrane=False")
        joined = self._joined(self._membrane, 1)
        return {n: v.cpu() if self.to_cpu else v for n, v in joined.items()}

    def firing_rates(self) -> dict[str, float]:
        """Mean spikes per neuron and step of each monitored layer."""
        return spike_rates(self.spikes)

    def clear(self) -> None:
        for v in list(self._spikes.values()) + list(self._membrane.values()):
            v.clear()

    def names(self) -> Iterable[str]:
        return [n for n, _ in self.layers]


__all__ = ["Monitor", "spike_rates"]
