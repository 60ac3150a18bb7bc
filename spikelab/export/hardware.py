"""Hardware profiles: what a neuromorphic target can take, a checker and a weight quantiser.

A profile is a set of limits; :func:`check` walks a chain model (as :func:`to_nir` does) and
reports *every* violation: weight bit width, neuron count, fan-in and fan-out, kernel size,
stride, layer type, neuron type and reset mode, input size. :func:`quantize` rounds weights to
the target's width (symmetric, one scale per layer) and reports the accuracy change on data.
Both see the network as it is deployed: BatchNorm folded into the layer before it (what
:func:`~spikelab.export.to_nir` writes), so the weights checked and rounded are the ones exported.
:func:`export_conflicts` names the layers where a target and exact NIR export want different
things (Xylo resets by subtraction; NIR neurons reset to a value), with the fix.

The built-in limits summarise the vendors' public descriptions of each chip's standard mode
(Loihi 2 with its CUBA-LIF neuron; SynSense Speck's DYNAP-CNN cores; SynSense Xylo Audio's SNN
core); chips have configurations and firmware these cannot follow, so build your own
``HardwareProfile`` (or ``dataclasses.replace`` one) where yours differ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from spikelab import layers as L
from spikelab.export.errors import NIRExportError
from spikelab.export.nir_export import _Builder, _out_shape, fold_batchnorm
from spikelab.export.peers import _pair
from spikelab.models import SEWBlock
from spikelab.state import reset
from spikelab.neurons import IF, AdaptiveLIF, BaseNeuron, CurrentLIF, LeakyIntegrator, LIF, PLIF, ProbabilisticLIF


@dataclass(frozen=True)
class HardwareProfile:
    """Limits of one target. ``None`` means no limit."""

    name: str
    weight_bits: int
    neuron_types: tuple[str, ...]  # of "IF", "LIF", "CubaLIF"
    reset_modes: tuple[str, ...]  # of "zero", "subtract"
    layer_types: tuple[str, ...]  # of "Linear", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Recurrent"
    max_neurons: Optional[int] = None  # in the whole network
    max_neurons_per_layer: Optional[int] = None
    max_fan_in: Optional[int] = None  # synapses into one neuron
    max_fan_out: Optional[int] = None  # synapses out of one neuron
    max_kernel: Optional[int] = None
    strides: Optional[tuple[int, ...]] = None
    max_layers: Optional[int] = None  # weighted layers
    max_input_channels: Optional[int] = None
    max_input_size: Optional[int] = None  # spatial side
    max_outputs: Optional[int] = None
    notes: str = ""


PROFILES: dict[str, HardwareProfile] = {
    "loihi2": HardwareProfile(
        name="loihi2", weight_bits=8, neuron_types=("IF", "LIF", "CubaLIF"), reset_modes=("zero",),
        layer_types=("Linear", "Conv2d", "SumPool2d", "Flatten", "Recurrent"),
        max_neurons=128 * 8192, max_neurons_per_layer=None, max_fan_in=4096, max_fan_out=4096,
        notes="128 neuro-cores of up to 8192 neurons; 8-bit weights; the standard CUBA-LIF neuron resets to 0"),
    "speck": HardwareProfile(
        name="speck", weight_bits=8, neuron_types=("IF",), reset_modes=("zero", "subtract"),
        layer_types=("Conv2d", "Linear", "SumPool2d", "Flatten"), max_neurons_per_layer=65536,
        max_fan_in=16 * 16 * 128, max_fan_out=2 * 16 * 16 * 128, max_kernel=16, strides=(1, 2, 4, 8), max_layers=9,
        max_input_channels=2, max_input_size=128,
        notes="9 DYNAP-CNN layers of integrate-and-fire neurons (no leak), kernels up to 16x16, strides 1/2/4/8, "
              "sum pooling, a 128x128 two-polarity input"),
    "xylo": HardwareProfile(
        name="xylo", weight_bits=8, neuron_types=("CubaLIF", "LIF"), reset_modes=("subtract",),
        layer_types=("Linear", "Recurrent", "Flatten"), max_neurons=1000 + 8, max_fan_in=None, max_fan_out=None,
        max_input_channels=16, max_outputs=8,
        notes="Xylo Audio: 16 input channels, 1000 hidden and 8 output current-based LIF neurons with "
              "subtractive reset, dense 8-bit weights, no convolution"),
}


def _profile(target: Union[str, HardwareProfile]) -> HardwareProfile:
    if isinstance(target, HardwareProfile):
        return target
    if target not in PROFILES:
        raise ValueError(f"target: unknown target {target!r}; expected one of {sorted(PROFILES)} or a HardwareProfile")
    return PROFILES[target]


@dataclass
class Violation:
    layer: str
    rule: str
    found: object
    limit: object

    def __str__(self) -> str:
        return f"{self.layer}: {self.rule}: {self.found} (allowed: {self.limit})"


@dataclass
class CheckReport:
    target: str
    violations: list[Violation]
    neurons: int
    layers: list[dict]

    @property
    def ok(self) -> bool:
        return not self.violations

    def rules(self) -> set[str]:
        return {v.rule for v in self.violations}

    def __str__(self) -> str:
        head = f"{self.target}: {'fits' if self.ok else f'{len(self.violations)} violation(s)'} ({self.neurons} neurons)"
        return "\n".join([head] + [f"  - {v}" for v in self.violations])


# ----- walking a chain model ---------------------------------------------------------------------

def _walk(model: nn.Module, shape: tuple[int, ...], name: str = ""):
    """(name, module, input shape, output shape) for every leaf of a chain model."""
    if isinstance(model, nn.Sequential):
        for k, child in model.named_children():
            for item in _walk(child, shape, f"{name}.{k}" if name else k):
                yield item
                shape = item[3]
        return
    if isinstance(model, L.TimeDistributed):
        yield from _walk(model.module, shape, name)
        return
    if isinstance(model, SEWBlock):  # the residual addition itself is no layer
        yield from _walk(model.body, shape, f"{name}.body")
        return
    if isinstance(model, (BaseNeuron, LeakyIntegrator, L.Recurrent, L.Scale, L.Threshold, L.Delay, L.Dropout, nn.Dropout,
                          nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d)):
        yield name or type(model).__name__, model, shape, shape
        return
    name = name or type(model).__name__
    yield name, model, shape, _out_shape(model, shape, name)


def _neuron_type(m: nn.Module) -> str:
    if isinstance(m, L.Recurrent):
        return _neuron_type(m.neuron)
    if isinstance(m, CurrentLIF):
        return "CubaLIF"
    if isinstance(m, IF):
        return "IF"
    if isinstance(m, (AdaptiveLIF, ProbabilisticLIF)):
        return type(m).__name__
    if isinstance(m, (LIF, PLIF)):
        return "IF" if bool((m._decay() == 1).all()) and not m.decay_input else "LIF"
    return type(m).__name__


def _reset(m: BaseNeuron) -> str:
    if m.reset_mode == "hard":
        return "zero" if m.reset_value == 0 else f"to {m.reset_value}"
    return m.reset_mode


def _layer_type(m: nn.Module) -> str:
    if isinstance(m, nn.AvgPool2d):
        return "SumPool2d" if m.divisor_override == 1 else "AvgPool2d"
    if isinstance(m, (L.Flatten, nn.Flatten)):
        return "Flatten"
    for base in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.MaxPool2d, nn.MaxPool1d, nn.BatchNorm2d, nn.BatchNorm1d):
        if isinstance(m, base):
            return base.__name__
    return type(m).__name__


def _weights(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
    if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        return [("weight", m.weight)]
    if isinstance(m, L.Recurrent) and hasattr(m.feedback, "weight"):
        return [("feedback.weight", m.feedback.weight)]
    return []


def _on_grid(w: torch.Tensor, bits: int) -> bool:
    """Is ``w`` a ``bits``-bit signed integer tensor times one scale?"""
    top = w.detach().abs().max()
    if top == 0:
        return True
    q = w.detach() / (top / (2 ** (bits - 1) - 1))
    return bool(torch.allclose(q, q.round(), atol=1e-3))


def _kernel_volume(m: nn.Module) -> int:
    k = 1
    for s in m.kernel_size:
        k *= s
    return k


def _fan_in(m: nn.Module) -> Optional[int]:
    """Synapses into one output unit of a Linear/Conv layer."""
    if isinstance(m, nn.Linear):
        return m.in_features
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return m.in_channels // m.groups * _kernel_volume(m)
    return None


def _fan_out(m: nn.Module) -> Optional[int]:
    """Synapses out of one input unit of a Linear/Conv layer (at most, away from borders)."""
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return m.out_channels // m.groups * _kernel_volume(m)
    return None


def _count(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def check(model: nn.Module, target: Union[str, HardwareProfile], input_shape: Sequence[int]) -> CheckReport:
    """Report every way ``model`` (per-sample input ``input_shape``) breaks ``target``'s limits
    (BatchNorm after a convolution or linear layer is folded into it first, as on export)."""
    p = _profile(target)
    model = fold_batchnorm(model)
    shape = tuple(int(s) for s in input_shape)
    out: list[Violation] = []
    if p.max_input_channels is not None and shape[0] > p.max_input_channels:
        out.append(Violation("input", "input channels", shape[0], p.max_input_channels))
    if p.max_input_size is not None and len(shape) > 1 and max(shape[1:]) > p.max_input_size:
        out.append(Violation("input", "input size", "x".join(map(str, shape[1:])), f"{p.max_input_size} per side"))
    items = list(_walk(model, shape))
    neurons, weighted, layers = 0, 0, []
    last_synaptic: Optional[nn.Module] = None
    for i, (name, m, in_shape, out_shape) in enumerate(items):
        is_neuron = isinstance(m, (BaseNeuron, L.Recurrent))
        if is_neuron:
            n = _count(out_shape)
            neurons += n
            kind = _neuron_type(m)
            if kind not in p.neuron_types:
                out.append(Violation(name, "neuron type", kind, ", ".join(p.neuron_types)))
            neuron = m.neuron if isinstance(m, L.Recurrent) else m
            reset = _reset(neuron)
            if reset not in p.reset_modes:
                out.append(Violation(name, "reset mode", reset, ", ".join(p.reset_modes)))
            if p.max_neurons_per_layer is not None and n > p.max_neurons_per_layer:
                out.append(Violation(name, "neurons in a layer", n, p.max_neurons_per_layer))
            nxt = next((it[1] for it in items[i + 1:] if _fan_out(it[1]) is not None), None)
            fan_out = _fan_out(nxt) if nxt is not None else 0
            if isinstance(m, L.Recurrent):
                fan_out += _fan_out(m.feedback) or 0
            if p.max_fan_out is not None and fan_out > p.max_fan_out:
                out.append(Violation(name, "fan-out", fan_out, p.max_fan_out))
            layers.append({"layer": name, "type": kind, "neurons": n, "fan_out": fan_out})
            if isinstance(m, L.Recurrent):
                if "Recurrent" not in p.layer_types:
                    out.append(Violation(name, "layer type", "Recurrent", ", ".join(p.layer_types)))
                if not _on_grid(m.feedback.weight, p.weight_bits):
                    out.append(Violation(name, "weight bit width", "float", f"{p.weight_bits}-bit integers x scale"))
            continue
        if isinstance(m, (L.Dropout, nn.Dropout, nn.Identity, LeakyIntegrator, L.Scale)):
            continue
        kind = _layer_type(m)
        if kind in ("BatchNorm2d", "BatchNorm1d") and last_synaptic is not None:
            continue  # folded into the layer before it on export
        if kind not in p.layer_types:
            out.append(Violation(name, "layer type", kind, ", ".join(p.layer_types)))
        if _weights(m):
            weighted += 1
            last_synaptic = m
            fan_in = _fan_in(m)
            if p.max_fan_in is not None and fan_in is not None and fan_in > p.max_fan_in:
                out.append(Violation(name, "fan-in", fan_in, p.max_fan_in))
            for wname, w in _weights(m):
                if not _on_grid(w, p.weight_bits):
                    out.append(Violation(name, "weight bit width", "float", f"{p.weight_bits}-bit integers x scale"))
        if isinstance(m, (nn.Conv2d, nn.AvgPool2d)):
            kernel = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            stride = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
            if p.max_kernel is not None and max(kernel) > p.max_kernel:
                out.append(Violation(name, "kernel size", "x".join(map(str, kernel)), f"up to {p.max_kernel}"))
            if p.strides is not None and any(s not in p.strides for s in stride):
                out.append(Violation(name, "stride", "x".join(map(str, stride)), ", ".join(map(str, p.strides))))
        layers.append({"layer": name, "type": kind, "output": list(out_shape)})
    if p.max_neurons is not None and neurons > p.max_neurons:
        out.append(Violation("network", "neuron count", neurons, p.max_neurons))
    if p.max_layers is not None and weighted > p.max_layers:
        out.append(Violation("network", "weighted layers", weighted, p.max_layers))
    final = items[-1][3] if items else shape
    if p.max_outputs is not None and _count(final) > p.max_outputs:
        out.append(Violation("output", "outputs", _count(final), p.max_outputs))
    return CheckReport(p.name, out, neurons, layers)


# ----- quantisation ------------------------------------------------------------------------------

def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many samples of the batch ``x [T, B, ...]`` the model, reset first, classifies as
    ``y [B]``: the prediction is the argmax of its outputs summed over time."""
    reset(model)
    with torch.no_grad():
        return int((model(x).sum(0).argmax(-1) == y).sum())


def _accuracy(model: nn.Module, data) -> float:
    batches = [data] if isinstance(data, tuple) else data
    correct = total = 0
    for x, y in batches:
        correct += _correct(model, x, y)
        total += len(y)
    if total == 0:
        raise ValueError("data: no samples")
    return correct / total


def quantize(model: nn.Module, target: Union[str, HardwareProfile, int],
             data: Optional[Union[tuple, Iterable]] = None) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with every weight rounded to the target's bit width, and a report.

    The copy is the network as the chip runs it: BatchNorm after a convolution or linear layer
    is folded into it (``nn.Identity`` in its place), and where the target pools by summing
    (a profile with ``SumPool2d`` and without ``AvgPool2d``), average pooling becomes sum pooling
    with its ``1 / (kh * kw)`` moved into the next layer's weights (:func:`fold_avgpool`; listed
    in the report's ``"rewrites"``). Then weights (and biases, with the same scale) become
    ``scale * q`` with ``q`` a signed integer of ``bits`` bits and one
    ``scale = max|w| / (2**(bits-1) - 1)`` per layer. With ``data`` (``(x [T, B, ...], y [B])``
    or an iterable of such batches; predictions are the summed outputs' argmax), the report
    holds the accuracy before and after.
    """
    bits = target if isinstance(target, int) else _profile(target).weight_bits
    if isinstance(bits, bool) or not 2 <= bits <= 32:
        raise ValueError(f"target: expected a bit width in [2, 32], got {bits!r}")
    q_model, rewrites = fold_batchnorm(model), []
    if not isinstance(target, int):
        p = _profile(target)
        if "SumPool2d" in p.layer_types and "AvgPool2d" not in p.layer_types:
            q_model, rewrites = fold_avgpool(q_model)
    levels = 2 ** (bits - 1) - 1
    per_layer = {}
    with torch.no_grad():
        for name, m in q_model.named_modules():
            w = getattr(m, "weight", None)
            if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or w is None:
                continue
            top = w.abs().max()
            scale = top / levels if top > 0 else torch.ones(())
            err = (w - (w / scale).round() * scale).abs().max().item()
            w.copy_((w / scale).round().clamp(-levels, levels) * scale)
            if m.bias is not None:
                m.bias.copy_((m.bias / scale).round() * scale)
            per_layer[name] = {"scale": scale.item(), "max_abs_error": err}
    report: dict = {"bits": bits, "layers": per_layer, "rewrites": rewrites}
    if data is not None:
        data = list(data) if not isinstance(data, tuple) else data
        report["accuracy_before"] = _accuracy(model.eval(), data)
        report["accuracy_after"] = _accuracy(q_model, data)
        report["accuracy_change"] = report["accuracy_after"] - report["accuracy_before"]
    return q_model, report


_PASS = (L.Flatten, nn.Flatten, L.Dropout, nn.Dropout, nn.Identity)


def fold_avgpool(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` (eval mode) in which every ``AvgPool2d`` that feeds a ``Conv2d`` or
    ``Linear`` of the same Sequential (through Flatten, Dropout or Identity only) is a sum pooling,
    its ``1 / (kh * kw)`` multiplied into that layer's weights (the bias is unchanged), and the
    list of these changes. The outputs are the same: exactly (in float32) for kernels whose size
    is a power of two, such as 2x2, since scaling by a power of two rounds nowhere. Pooling that
    feeds anything else (a neuron, a residual sum) is left as it is."""
    folded = copy.deepcopy(model).eval()
    changes: list[str] = []
    for prefix, seq in folded.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for i, key in enumerate(names):
            m = seq._modules[key]
            if type(m) not in (L.AvgPool2d, nn.AvgPool2d) or m.divisor_override is not None or m.ceil_mode:
                continue
            padding = _pair(m.padding)
            if any(padding) and not m.count_include_pad:
                continue
            j = i + 1
            while j < len(names) and isinstance(seq._modules[names[j]], _PASS):
                j += 1
            target = seq._modules[names[j]] if j < len(names) else None
            if not isinstance(target, (nn.Conv2d, nn.Linear)):
                continue
            kernel = _pair(m.kernel_size)
            stride = _pair(m.stride if m.stride is not None else m.kernel_size)
            area = kernel[0] * kernel[1]
            seq._modules[key] = (L.SumPool2d(kernel, stride, padding) if isinstance(m, L.AvgPool2d) else
                                 nn.AvgPool2d(kernel, stride, padding, divisor_override=1))
            with torch.no_grad():
                target.weight.mul_(1.0 / area)
            where = f"{prefix}." if prefix else ""
            changes.append(f"{where}{key}: AvgPool2d as SumPool2d, its 1/{area} moved into the weights of "
                           f"{where}{names[j]} ({type(target).__name__})")
    return folded, changes


# ----- where a target and exact NIR export disagree ----------------------------------------------

_EXACT_TYPES = ("IF", "LIF", "CubaLIF")  # the profile neuron types NIR holds exactly


def _exact_reset(mode: str) -> bool:
    """NIR neurons reset to ``v_reset``: zero, or a value."""
    return mode == "zero" or mode.startswith("to ")


@dataclass
class Conflict:
    """A layer that a target and exact NIR export cannot both take as it is, and the way out."""

    layer: str
    conflict: str
    fix: str

    def __str__(self) -> str:
        return f"{self.layer}: {self.conflict}. Fix: {self.fix}"


def export_conflicts(model: nn.Module, target: Union[str, HardwareProfile],
                     input_shape: Sequence[int]) -> list[Conflict]:
    """The neuron layers of ``model`` where ``target``'s profile and exact NIR export (what
    :func:`~spikelab.export.to_nir` writes without ``approximate=True``) disagree, each naming the
    layer, the conflict and the fix (a training option, or ``approximate=True`` /
    ``--approximate``). Layers both refuse (e.g. a subtract reset on Loihi 2) are not conflicts:
    :func:`check` and :func:`to_nir` report them. An empty list: no conflict."""
    p = _profile(target)
    exact_resets = [r for r in p.reset_modes if _exact_reset(r)]
    exact_types = [t for t in p.neuron_types if t in _EXACT_TYPES]
    builder = _Builder(1e-3, approximate=False)
    out: list[Conflict] = []
    for name, m, _, shape in _walk(fold_batchnorm(model), tuple(int(s) for s in input_shape)):
        if not isinstance(m, (BaseNeuron, L.Recurrent)):
            continue
        neuron = m.neuron if isinstance(m, L.Recurrent) else m
        kind, reset = _neuron_type(m), _reset(neuron)
        try:
            builder.neuron(name, neuron, tuple(shape))
            exact_error = None
        except NIRExportError as err:
            exact_error = str(err).split(". Pass approximate=True")[0]
        fits_type, fits_reset = kind in p.neuron_types, reset in p.reset_modes
        approximate = ("export with --approximate (approximate=True): the NIR file then holds the nearest node, "
                       "listed in its metadata")
        if fits_type and fits_reset and exact_error:
            if not _exact_reset(reset) and exact_resets:
                fix = (f"train with model.neuron.reset: zero ({p.name} takes it too and NIR holds it exactly), "
                       f"or {approximate}")
            else:
                fix = approximate
            out.append(Conflict(name, f"{p.name} takes it ({kind}, reset {reset}) but exact NIR export does not "
                                      f"({exact_error.split(': ', 1)[-1]})", fix))
        elif fits_type and not fits_reset and exact_error is None and not exact_resets:
            out.append(Conflict(
                name, f"{p.name} resets only by {' or '.join(p.reset_modes)}, which exact NIR export cannot write "
                      f"(NIR neurons reset to v_reset); this layer resets {reset}",
                f"train with model.neuron.reset: {p.reset_modes[0]} (what {p.name} runs) and export with "
                "--approximate (approximate=True): the NIR file then resets to 0 and lists that change in its "
                "metadata"))
        elif not fits_type and exact_error is None and not exact_types:
            out.append(Conflict(name, f"{p.name} takes only {', '.join(p.neuron_types)} neurons, none of which NIR "
                                      f"holds exactly; this layer is {kind}",
                                f"train with one of {', '.join(p.neuron_types)} and export with --approximate"))
    return out


__all__ = ["HardwareProfile", "PROFILES", "Violation", "CheckReport", "Conflict", "check", "export_conflicts",
           "fold_avgpool", "quantize"]
