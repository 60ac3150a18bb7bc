"""spikelab model -> NIR graph (``to_nir``).

The model is walked as the chain it is (``spikelab.layers.Sequential`` / ``nn.Sequential``,
nested ones included; SEW residual blocks become a branch whose output and input both feed the
next node, which NIR sums): each layer becomes one NIR node, each neuron one neuron node with
per-neuron parameter arrays, a :class:`~spikelab.layers.Recurrent` layer a nested graph
(input -> neuron -> output, neuron -> feedback -> neuron). BatchNorm after a convolution or
linear layer is folded into it (inference statistics); Dropout is dropped (identity at
inference). Shapes come from ``sample_input`` or ``input_shape``.

What NIR cannot express exactly is refused with the reason, unless ``approximate=True``: then
the nearest expressible node is written, the change is recorded in the graph's metadata and a
warning says what it is. ``compat="norse"`` / ``"snntorch"`` writes the graph in the subset of
NIR that peer's importer reads (:mod:`spikelab.export.peers`).
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable, Optional, Sequence

import nir
import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from spikelab import layers as L
from spikelab.export.errors import NIRExportError
from spikelab.export.peers import PEERS, _pair, for_peer
from spikelab.export.semantics import nir_threshold, tau_from_decay
from spikelab.models import SEWBlock
from spikelab.neurons import IF, LIF, PLIF, AdaptiveLIF, BaseNeuron, CurrentLIF, LeakyIntegrator, ProbabilisticLIF

Sources = tuple[str, ...]  # the nodes whose outputs, summed, feed the next node
_LINEAR = (nn.Linear,)
_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, L.Dropout, nn.Identity)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _per_neuron(value: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar or per-channel (dimension 0 of the per-sample shape) parameter as one value per neuron."""
    v = value.detach().cpu().to(torch.float32)
    if v.ndim == 1:
        v = v.view(v.shape[0], *([1] * (len(shape) - 1)))
    return np.ascontiguousarray(np.broadcast_to(v.numpy(), shape)).astype(np.float32)


class _Builder:
    def __init__(self, dt: float, approximate: bool) -> None:
        self.dt = dt
        self.approximate = approximate
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.approximations: list[str] = []

    # ----- bookkeeping -----------------------------------------------------------------------
    def add(self, name: str, node: nir.NIRNode, sources: Sources) -> Sources:
        """Add ``node``, fed by the sum of ``sources``; it becomes the next layer's only source."""
        self.nodes[name] = node
        self.edges += [(src, name) for src in sources]
        return (name,)

    def inexact(self, where: str, what: str, change: str) -> None:
        message = f"{where}: {what}; {change}"
        if not self.approximate:
            raise NIRExportError(f"{message}. Pass approximate=True to export it with this change.")
        warnings.warn(f"to_nir approximation: {message}", stacklevel=4)
        self.approximations.append(message)

    # ----- the walk ----------------------------------------------------------------------------
    def chain(self, modules: Sequence[tuple[str, nn.Module]], source: Sources, shape: tuple[int, ...]):
        i = 0
        while i < len(modules):
            name, module = modules[i]
            nxt = modules[i + 1][1] if i + 1 < len(modules) else None
            if isinstance(module, _LINEAR + _CONV) and isinstance(nxt, _BN):
                module = _fold(module, nxt)
                i += 1
            source, shape = self.module(name, module, source, shape)
            i += 1
        return source, shape

    def module(self, name: str, m: nn.Module, source: Sources, shape: tuple[int, ...]):
        """Add the nodes of ``m``; returns the sources of its output (several where a residual
        addition ends it: NIR sums the edges arriving at a node) and its per-sample shape."""
        if isinstance(m, SEWBlock):  # out = body(x) + x
            body, out_shape = self.module(f"{name}.body", m.body, source, shape)
            if out_shape != shape:
                raise NIRExportError(f"{name}: the residual body maps {shape} to {out_shape}; the addition needs "
                                     "equal shapes")
            return body + source, shape
        if isinstance(m, nn.Sequential):  # spikelab Sequential, the models and plain nn.Sequential
            return self.chain([(f"{name}.{k}", c) for k, c in m.named_children()], source, shape)
        if isinstance(m, L.TimeDistributed):
            return self.module(name, m.module, source, shape)
        if isinstance(m, _SKIPPED):
            return source, shape
        if isinstance(m, _BN):
            raise NIRExportError(f"{name}: {type(m).__name__} not right after a convolution or linear layer "
                                 "cannot be folded, and NIR has no batch normalisation node")
        if isinstance(m, L.Recurrent):
            return self.recurrent(name, m, source, shape)
        if isinstance(m, BaseNeuron):
            return self.add(name, self.neuron(name, m, shape), source), shape
        if isinstance(m, LeakyIntegrator):
            return self.add(name, self.integrator(m, shape), source), shape
        if isinstance(m, L.Scale):
            return self.add(name, nir.Scale(scale=_per_neuron(m.scale, shape)), source), shape
        if isinstance(m, L.Delay):
            node = nir.Delay(delay=(_per_neuron(m.steps.to(torch.float64), shape).astype(np.float64) * self.dt))
            return self.add(name, node, source), shape
        if isinstance(m, L.Threshold):
            node = nir.Threshold(threshold=nir_threshold(_per_neuron(m.threshold, shape)))
            return self.add(name, node, source), shape
        node, out_shape = _layer_node(name, m, shape)
        return self.add(name, node, source), out_shape

    def recurrent(self, name: str, m: L.Recurrent, source: Sources, shape: tuple[int, ...]):
        inner = _Builder(self.dt, self.approximate)
        inner.nodes["input"] = nir.Input(input_type=np.array(shape))
        lif, _ = inner.module("neuron", m.neuron, ("input",), shape)
        fb, fb_shape = inner.module("feedback", m.feedback, lif, shape)
        if fb_shape != shape:
            raise NIRExportError(f"{name}.feedback maps {shape} to {fb_shape}; a recurrent feedback must keep the shape")
        inner.edges += [(f, n) for f in fb for n in lif]
        inner.nodes["output"] = nir.Output(output_type=np.array(shape))
        inner.edges += [(n, "output") for n in lif]
        self.approximations += inner.approximations
        return self.add(name, nir.NIRGraph(nodes=inner.nodes, edges=inner.edges, type_check=False), source), shape

    # ----- neurons -----------------------------------------------------------------------------
    def neuron(self, name: str, m: BaseNeuron, shape: tuple[int, ...]) -> nir.NIRNode:
        """The NIR node of neuron ``m``, from the exporter registered for its exact type."""
        exporter = NEURON_EXPORTERS.get(type(m))
        if exporter is None and callable(getattr(type(m), "to_nir", None)):
            exporter = _spec_exporter
        if exporter is None:
            raise NIRExportError(
                f"{name}: {type(m).__name__} has no NIR mapping. NIR expresses IF, LIF and CubaLIF neurons "
                f"(exported from {', '.join(sorted(t.__name__ for t in NEURON_EXPORTERS))}); a neuron spec can "
                "declare its own with a to_nir(self, shape, dt) method, any other type with "
                "spikelab.export.register_neuron(type, function)")
        if m.threshold_robust:
            self.inexact(name, "threshold_robust spikes have amplitude threshold and NIR spikes are 1",
                         "the output becomes unit spikes")
        if m.mp_init and float(m.running_v.abs()) > 0:
            self.inexact(name, "mp_init starts the membrane at a learned value and NIR starts at 0",
                         "the membrane starts at 0")
        return exporter(self, name, m, shape)

    def lif(self, name: str, m: BaseNeuron, shape: tuple[int, ...]) -> nir.NIRNode:
        """IF / LIF / PLIF (and the approximations that become one)."""
        reset = self.reset(name, m)
        threshold = nir_threshold(_per_neuron(m.threshold, shape))
        v_reset = np.full(shape, reset, dtype=np.float32)
        beta = _per_neuron(_decay_of(m), shape)
        decay_input = getattr(m, "decay_input", False)
        if isinstance(m, IF) or ((beta == 1).all() and not decay_input):
            return nir.IF(r=np.ones(shape, np.float32), v_threshold=threshold, v_reset=v_reset)
        if (beta >= 1).any():
            raise NIRExportError(f"{name}: a LIF with some beta = 1 (no leak) mixed with leaky neurons has no NIR node "
                                 "(its time constant would be infinite)")
        tau = tau_from_decay(beta, self.dt)
        r = np.ones(shape) if decay_input else tau / self.dt
        return nir.LIF(tau=tau, r=r, v_leak=np.zeros(shape), v_threshold=threshold, v_reset=v_reset)

    def cuba(self, name: str, m: CurrentLIF, shape: tuple[int, ...]) -> nir.NIRNode:
        reset = self.reset(name, m)
        threshold = nir_threshold(_per_neuron(m.threshold, shape))
        alpha, beta = _per_neuron(m.syn_decay, shape), _per_neuron(m.beta, shape)
        if (alpha >= 1).any() or (beta >= 1).any():
            raise NIRExportError(f"{name}: CurrentLIF with a decay of 1 has an infinite time constant, "
                                 "which NIR's CubaLIF cannot hold")
        tau_syn, tau_mem = tau_from_decay(alpha, self.dt), tau_from_decay(beta, self.dt)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / self.dt, v_leak=np.zeros(shape),
                           v_threshold=threshold, v_reset=np.full(shape, reset, dtype=np.float32),
                           w_in=tau_syn / self.dt)

    def probabilistic(self, name: str, m: ProbabilisticLIF, shape: tuple[int, ...]) -> nir.NIRNode:
        self.inexact(name, f"{type(m).__name__} fires at random (escape noise) and NIR has no stochastic neuron",
                     "it becomes a deterministic LIF with the same threshold and decay")
        return self.lif(name, m, shape)

    def adaptive(self, name: str, m: AdaptiveLIF, shape: tuple[int, ...]) -> nir.NIRNode:
        self.inexact(name, f"{type(m).__name__}'s threshold adapts with its spikes and NIR has no adaptive threshold",
                     "the adaptation is dropped (a LIF with the base threshold)")
        return self.lif(name, m, shape)

    def reset(self, name: str, m: BaseNeuron) -> float:
        if m.reset_mode == "hard":
            return float(m.reset_value)
        if m.reset_mode == "subtract":
            self.inexact(name, "reset by subtraction keeps the overshoot above threshold and NIR neurons reset to v_reset",
                         "the reset becomes a reset to 0, so membranes (and later spikes) differ after every spike "
                         "that overshoots")
        else:
            self.inexact(name, "reset 'none' never resets and NIR neurons reset to v_reset",
                         "the reset becomes a reset to 0")
        return 0.0

    def integrator(self, m: LeakyIntegrator, shape: tuple[int, ...]) -> nir.NIRNode:
        beta = np.broadcast_to(_np(m.beta), shape).astype(np.float64)
        scale = np.broadcast_to(_np(m.input_scale), shape).astype(np.float64)
        if (beta == 1).all():
            return nir.I(r=scale.copy())
        if (beta >= 1).any():
            raise NIRExportError("LeakyIntegrator: beta = 1 mixed with leaky values has no NIR node")
        tau = tau_from_decay(beta, self.dt)
        return nir.LI(tau=tau, r=scale * tau / self.dt, v_leak=np.zeros(shape))


NeuronExporter = Callable[[_Builder, str, BaseNeuron, tuple], nir.NIRNode]

#: exact neuron type -> exporter ``(builder, name, module, per-sample shape) -> NIR node``; a subclass
#: is not its parent (it may change the dynamics), so every type is registered by itself
NEURON_EXPORTERS: dict[type, NeuronExporter] = {
    IF: _Builder.lif, LIF: _Builder.lif, PLIF: _Builder.lif, CurrentLIF: _Builder.cuba,
    ProbabilisticLIF: _Builder.probabilistic, AdaptiveLIF: _Builder.adaptive,
}


def register_neuron(neuron_type: type, exporter: NeuronExporter) -> None:
    """Export ``neuron_type`` (exactly that type) with ``exporter(builder, name, module, shape)``."""
    if not isinstance(neuron_type, type) or not issubclass(neuron_type, BaseNeuron):
        raise TypeError(f"register_neuron: expected a BaseNeuron subclass, got {neuron_type!r}")
    NEURON_EXPORTERS[neuron_type] = exporter


def _spec_exporter(builder: _Builder, name: str, m: BaseNeuron, shape: tuple) -> nir.NIRNode:
    """A neuron spec's own mapping: ``m.to_nir(shape, dt)`` returns the node (or raises)."""
    node = m.to_nir(shape, builder.dt)
    if not isinstance(node, nir.NIRNode):
        raise NIRExportError(f"{name}: {type(m).__name__}.to_nir returned {type(node).__name__}, not a NIR node")
    return node


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm that directly follows a convolution
    or linear layer in a Sequential folded into it (and replaced by ``nn.Identity``).

    This is what :func:`to_nir` writes. Folding changes float rounding (about 1e-7 relative), which
    can move a membrane that sat exactly at a threshold across it; the folded model is the one whose
    outputs an exported graph reproduces exactly.
    """
    folded = copy.deepcopy(model).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = [k for k, _ in seq.named_children()]
        for a, b in zip(names, names[1:]):
            layer, bn = seq._modules[a], seq._modules[b]
            if isinstance(layer, _LINEAR + _CONV) and isinstance(bn, _BN):
                seq._modules[a] = _fold(layer, bn)
                seq._modules[b] = nn.Identity()
    return folded


def _decay_of(m: BaseNeuron) -> torch.Tensor:
    """The membrane decay per step of a LIF-like neuron (PLIF's learned one included)."""
    if isinstance(m, LIF):
        return m._decay()
    if isinstance(m, ProbabilisticLIF):
        return torch.sigmoid(-m.w)
    return torch.ones(())


def _fold(layer: nn.Module, bn: nn.Module) -> nn.Module:
    layer, bn = layer.eval(), bn.eval()
    if isinstance(layer, _CONV):
        fused = fuse_conv_bn_eval(layer, bn)
    else:
        fused = fuse_linear_bn_eval(layer, bn)
    return fused


def _layer_node(name: str, m: nn.Module, shape: tuple[int, ...]):
    """A stateless layer as a NIR node and its per-sample output shape."""
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        raise NIRExportError(f"{name}: {type(m).__name__}: NIR has no max pooling; use AvgPool2d or SumPool2d")
    if isinstance(m, nn.Linear):
        if not shape or shape[-1] != m.in_features:
            raise NIRExportError(f"{name}: Linear takes {m.in_features} input features, and its input has per-sample "
                                 f"shape {shape}: the input shape does not fit the model")
        w = _np(m.weight)
        node = nir.Linear(weight=w) if m.bias is None else nir.Affine(weight=w, bias=_np(m.bias))
        return node, shape[:-1] + (m.out_features,)
    if isinstance(m, _CONV):
        if m.padding_mode != "zeros":
            raise NIRExportError(f"{name}: padding_mode={m.padding_mode!r}; NIR convolutions pad with zeros")
        spatial = shape[1:]
        bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, np.float32)
        padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
        if isinstance(m, nn.Conv1d):
            node = nir.Conv1d(input_shape=int(spatial[0]), weight=_np(m.weight), stride=m.stride[0],
                              padding=padding if isinstance(padding, str) else padding[0],
                              dilation=m.dilation[0], groups=m.groups, bias=bias)
        else:
            node = nir.Conv2d(input_shape=tuple(int(s) for s in spatial), weight=_np(m.weight), stride=m.stride,
                              padding=padding, dilation=m.dilation, groups=m.groups, bias=bias)
        return node, _out_shape(m, shape, name)
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode:
            raise NIRExportError(f"{name}: AvgPool2d with ceil_mode=True has no NIR equivalent")
        kernel, stride = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
        padding = _pair(m.padding)
        if m.divisor_override == 1:
            node = nir.SumPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        elif m.divisor_override is None and (padding == (0, 0) or m.count_include_pad):
            node = nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        else:
            raise NIRExportError(f"{name}: AvgPool2d with divisor_override={m.divisor_override} / "
                                 f"count_include_pad={m.count_include_pad} has no NIR equivalent")
        return node, _out_shape(m, shape, name)
    if isinstance(m, L.Flatten):
        return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1), (int(np.prod(shape)),)
    if isinstance(m, nn.Flatten):
        start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
        end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
        if m.start_dim == 0:
            raise NIRExportError(f"{name}: nn.Flatten(start_dim=0) flattens the batch dimension")
        node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start, end_dim=end)
        return node, tuple(int(s) for s in node.output_type["output"])
    raise NIRExportError(f"{name}: {type(m).__name__} has no NIR node; supported: Linear, Conv1d, Conv2d, "
                         "AvgPool2d, SumPool2d, Flatten, BatchNorm after Conv/Linear (folded), Dropout (dropped), "
                         "Scale, Threshold, IF, LIF, PLIF, CurrentLIF, LeakyIntegrator, Recurrent, Sequential")


def _out_shape(m: nn.Module, shape: tuple[int, ...], name: str = "") -> tuple[int, ...]:
    try:
        with torch.no_grad():
            return tuple(nn.Module.__call__(_plain(m), torch.zeros(1, *shape)).shape[1:])
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NIRExportError(f"{name or type(m).__name__}: {type(m).__name__} does not take its input of per-sample "
                             f"shape {shape} ({reason}): the input shape does not fit the model") from None


def _plain(m: nn.Module) -> nn.Module:
    """The torch layer itself (spikelab's folded layers expect [T, B, ...] in forward)."""
    return _StepOf(m) if hasattr(m, "step") else m


class _StepOf(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.step(x)


def to_nir(model: nn.Module, dt: float, sample_input: Optional[torch.Tensor] = None,
           input_shape: Optional[Sequence[int]] = None, approximate: bool = False,
           compat: Optional[str] = None) -> nir.NIRGraph:
    """Export ``model`` as a NIR graph for time step ``dt`` (seconds).

    Args:
        model: a chain of spikelab layers and neurons (``spikelab.layers.Sequential``, the models
            in :mod:`spikelab.models`, SEW blocks included, ``nn.Sequential``).
        dt: the simulation time step the model's decays stand for (NIR stores time constants).
        sample_input: an input ``[T, B, ...]`` (only its per-sample shape is used), or
        input_shape: the per-sample shape, e.g. ``(2, 34, 34)``.
        approximate: write the nearest NIR node where the model cannot be expressed exactly
            (subtraction reset, stochastic or adaptive neurons), with a warning per change.
        compat: ``"norse"`` or ``"snntorch"``: write the graph in the subset of NIR that peer's
            importer reads (the same network, parameters moved to where it reads them; see
            :mod:`spikelab.export.peers`); refused naming the node where no rewrite helps.

    Returns:
        a ``nir.NIRGraph`` (``nir.write(path, graph)`` saves it); its metadata holds ``dt``.
    """
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not dt > 0:
        raise ValueError(f"dt: expected a positive time step in seconds, got {dt!r}")
    if compat is not None and compat not in PEERS:
        raise ValueError(f"compat: unknown peer {compat!r}; expected one of {list(PEERS)} or None")
    if (sample_input is None) == (input_shape is None):
        raise ValueError("give exactly one of sample_input ([T, B, ...]) and input_shape (per sample)")
    if sample_input is not None:
        if not isinstance(sample_input, torch.Tensor) or sample_input.ndim < 3:
            raise ValueError("sample_input: expected a tensor [T, B, ...] with at least one feature dimension, "
                             f"got {getattr(sample_input, 'shape', type(sample_input).__name__)}")
        shape = tuple(int(s) for s in sample_input.shape[2:])
    else:
        shape = tuple(int(s) for s in input_shape)
    builder = _Builder(float(dt), approximate)
    builder.nodes["input"] = nir.Input(input_type=np.array(shape))
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, nn.Sequential):  # node names are the layers' names in the model
            last, out_shape = builder.chain(list(model.named_children()), ("input",), shape)
        else:
            last, out_shape = builder.module(type(model).__name__.lower(), model, ("input",), shape)
    finally:
        model.train(was_training)
    builder.nodes["output"] = nir.Output(output_type=np.array(out_shape))
    builder.edges += [(src, "output") for src in last]
    meta = {"dt": float(dt), "exporter": "spikelab"}
    if builder.approximations:
        meta["approximations"] = "\n".join(builder.approximations)
    graph = nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=meta, type_check=False)
    return graph if compat is None else for_peer(graph, compat, float(dt))


__all__ = ["to_nir", "fold_batchnorm", "register_neuron", "NEURON_EXPORTERS"]
