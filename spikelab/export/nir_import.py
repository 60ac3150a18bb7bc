"""NIR graph -> runnable spikelab network (``from_nir``).

Every NIR node becomes a spikelab module (layers, neurons with their exact discrete-time
parameters, see :mod:`spikelab.export.semantics`); :class:`~spikelab.export.network.NIRNetwork`
runs the graph. Nested graphs become nested networks.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import nir
import numpy as np
import torch
from torch import nn

from spikelab import layers as L
from spikelab.export.errors import NIRImportError
from spikelab.export.nir_checks import (ELEMENTWISE, align_param, check_graph, numeric_fields, param_fits,
                                        unsupported_message)
from spikelab.export.semantics import decay_from_tau, our_threshold
from spikelab.export.network import NIRNetwork
from spikelab.neurons import IF, CurrentLIF, LeakyIntegrator, LIF



class _Flatten(nn.Module, L.SequenceModule):
    """NIR's Flatten over per-sample dimensions ``start..end`` (of ``[T, B, ...]`` / ``[B, ...]``)."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__()
        self.start, self.end = start, end

    def _dims(self, lead: int, ndim: int) -> tuple[int, int]:
        per_sample = ndim - lead
        s = self.start % per_sample
        e = self.end % per_sample
        return s + lead, e + lead

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return x_seq.flatten(*self._dims(2, x_seq.ndim))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(*self._dims(1, x.ndim))


# ----- nodes -> modules ----------------------------------------------------------------------------

def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float32))


def _uniform(name: str, field: str, a: np.ndarray) -> Optional[float]:
    a = np.asarray(a, dtype=np.float64)
    return float(a.flat[0]) if a.size and np.all(a == a.flat[0]) else None


def _neuron_param(name: str, field: str, a: np.ndarray) -> Union[float, torch.Tensor]:
    """A per-neuron NIR array as a spikelab parameter: one value, or one per channel (dimension 0).

    ``a`` has as many dimensions as the node's input (``from_nir`` aligns it first, see
    :func:`~spikelab.export.nir_checks.aligned_shape`), so its dimension 0 is the channel.
    """
    a = np.asarray(a, dtype=np.float64)
    u = _uniform(name, field, a)
    if u is not None:
        return u
    if a.ndim == 1:
        return _t(a)
    per_channel = a.reshape(a.shape[0], -1)
    if np.all(per_channel == per_channel[:, :1]):
        return _t(per_channel[:, 0])
    raise NIRImportError(f"node {name!r}: {field} varies within a channel (shape {a.shape}, dimension 0 the "
                         "channel); spikelab neurons take one value per layer or per channel")


def _channels(p) -> Optional[int]:
    return int(p.numel()) if isinstance(p, torch.Tensor) else None


def _reset_value(name: str, node) -> float:
    v_reset = getattr(node, "v_reset", None)
    if v_reset is None:
        return 0.0
    u = _uniform(name, "v_reset", v_reset)
    if u is None:
        raise NIRImportError(f"node {name!r}: v_reset differs between neurons; spikelab resets a layer to one value")
    return u


def _no_leak_potential(name: str, node) -> None:
    if not np.allclose(np.asarray(node.v_leak, dtype=np.float64), 0.0):
        raise NIRImportError(f"node {name!r}: v_leak != 0 is not supported (spikelab membranes leak towards 0)")


def _threshold(name: str, node) -> Union[float, torch.Tensor]:
    v = np.asarray(node.v_threshold, dtype=np.float64)
    if (v < 0).any():
        raise NIRImportError(f"node {name!r}: v_threshold has {int((v < 0).sum())} negative value(s) "
                             f"(min {v.min():.3g}); spikelab neurons take thresholds >= 0 (NIR's v > 0 fires as "
                             "spikelab's smallest positive threshold)")
    t = _neuron_param(name, "v_threshold", node.v_threshold)
    return float(our_threshold(np.float32(t))) if isinstance(t, float) else _t(our_threshold(t.numpy()))


def _scaled(name: str, neuron: nn.Module, scale: np.ndarray) -> nn.Module:
    """``neuron`` fed through a per-neuron input scale when the node's scale is not 1."""
    if np.allclose(scale, 1.0, rtol=1e-6, atol=0):
        return neuron
    return L.Sequential(L.Scale(_t(scale)), neuron)


def _lif(name: str, node: nir.LIF, dt: float) -> nn.Module:
    _no_leak_potential(name, node)
    tau = np.asarray(node.tau, dtype=np.float64)
    if not (tau > 0).all() or not (tau >= dt).all():
        raise NIRImportError(f"node {name!r}: tau must be >= dt = {dt} s for a decay in [0, 1]; got min tau "
                             f"{tau.min():.3g} s (is dt right?)")
    beta = decay_from_tau(tau, dt)
    scale = dt * np.asarray(node.r, dtype=np.float64) / tau  # input scale c
    threshold = _threshold(name, node)
    beta_p = _neuron_param(name, "tau", beta)
    common = dict(threshold=threshold, reset=_reset_value(name, node), num_channels=_channels(beta_p) or _channels(threshold))
    if np.allclose(scale, 1.0 - beta, rtol=1e-6, atol=1e-12) and not np.allclose(scale, 1.0, rtol=1e-6, atol=0):
        return LIF(beta=beta_p, decay_input=True, **common)
    return _scaled(name, LIF(beta=beta_p, **common), scale)


def _cuba(name: str, node: nir.CubaLIF, dt: float) -> nn.Module:
    _no_leak_potential(name, node)
    tau_syn, tau_mem = (np.asarray(a, dtype=np.float64) for a in (node.tau_syn, node.tau_mem))
    if not ((tau_syn >= dt).all() and (tau_mem >= dt).all()):
        raise NIRImportError(f"node {name!r}: tau_syn and tau_mem must be >= dt = {dt} s (is dt right?)")
    alpha, beta = decay_from_tau(tau_syn, dt), decay_from_tau(tau_mem, dt)
    # i' = alpha i + (dt/tau_syn) w_in x ; v' = beta v + (dt/tau_mem) r i'
    in_scale = dt / tau_syn * np.asarray(node.w_in, dtype=np.float64)
    mem_scale = dt / tau_mem * np.asarray(node.r, dtype=np.float64)
    if not np.allclose(mem_scale, mem_scale.flat[0], rtol=1e-6):
        raise NIRImportError(f"node {name!r}: r * dt / tau_mem differs between neurons; spikelab's CurrentLIF feeds "
                             "the current to the membrane with one factor")
    # the membrane factor moves to the input (the current is linear in it)
    total = in_scale * mem_scale.flat[0]
    threshold = _threshold(name, node)
    alpha_p, beta_p = _neuron_param(name, "tau_syn", alpha), _neuron_param(name, "tau_mem", beta)
    channels = _channels(alpha_p) or _channels(beta_p) or _channels(threshold)
    neuron = CurrentLIF(alpha=alpha_p, beta=beta_p, threshold=threshold, reset=_reset_value(name, node),
                        num_channels=channels)
    return _scaled(name, neuron, total)


def _if(name: str, node: nir.IF) -> nn.Module:
    threshold = _threshold(name, node)
    neuron = IF(threshold=threshold, reset=_reset_value(name, node), num_channels=_channels(threshold))
    return _scaled(name, neuron, np.asarray(node.r, dtype=np.float64))


def _li(name: str, node: nir.LI, dt: float) -> nn.Module:
    _no_leak_potential(name, node)
    tau = np.asarray(node.tau, dtype=np.float64)
    if not (tau >= dt).all():
        raise NIRImportError(f"node {name!r}: tau must be >= dt = {dt} s (is dt right?)")
    return LeakyIntegrator(beta=_t(decay_from_tau(tau, dt)), input_scale=_t(dt * np.asarray(node.r) / tau))


def _conv(name: str, node) -> nn.Module:
    w = np.asarray(node.weight)
    two_d = isinstance(node, nir.Conv2d)
    cls = L.Conv2d if two_d else L.Conv1d
    padding = node.padding if isinstance(node.padding, str) else tuple(int(p) for p in np.atleast_1d(node.padding))
    stride = tuple(int(s) for s in np.atleast_1d(node.stride))
    if isinstance(padding, str) and padding == "same" and any(s != 1 for s in stride):
        raise NIRImportError(f"node {name!r}: padding='same' with stride {stride} is not supported by torch")
    conv = cls(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), stride=stride,
               padding=padding if isinstance(padding, str) else (padding if two_d else padding[0]),
               dilation=tuple(int(d) for d in np.atleast_1d(node.dilation)), groups=int(node.groups), bias=True)
    with torch.no_grad():
        conv.weight.copy_(_t(w))
        bias = np.zeros(w.shape[0]) if node.bias is None else np.broadcast_to(np.asarray(node.bias), (w.shape[0],))
        conv.bias.copy_(_t(bias))
    return conv


def _pool(name: str, node, summed: bool) -> nn.Module:
    kernel = tuple(int(k) for k in np.broadcast_to(np.asarray(node.kernel_size), (2,)))
    stride = tuple(int(k) for k in np.broadcast_to(np.asarray(node.stride), (2,)))
    padding = tuple(int(k) for k in np.broadcast_to(np.asarray(node.padding), (2,)))
    return L.SumPool2d(kernel, stride, padding) if summed else L.AvgPool2d(kernel, stride, padding)


def _affine(name: str, node) -> nn.Module:
    w = np.asarray(node.weight)
    if w.ndim != 2:
        raise NIRImportError(f"node {name!r}: {type(node).__name__} weight of shape {w.shape}; expected [out, in]")
    has_bias = isinstance(node, nir.Affine) and node.bias is not None
    lin = L.Linear(w.shape[1], w.shape[0], bias=has_bias)
    with torch.no_grad():
        lin.weight.copy_(_t(w))
        if has_bias:
            lin.bias.copy_(_t(np.broadcast_to(np.asarray(node.bias), (w.shape[0],))))
    return lin


def _delay(name: str, node: nir.Delay, dt: float) -> nn.Module:
    steps = np.asarray(node.delay, dtype=np.float64) / dt
    whole = np.round(steps)
    if not np.allclose(steps, whole, atol=1e-6) or (whole < 0).any():
        raise NIRImportError(f"node {name!r}: delays {node.delay} s are not whole multiples of dt = {dt} s")
    return L.Delay(torch.as_tensor(whole, dtype=torch.long))


def _graph(name: str, node: nir.NIRGraph, dt: float) -> NIRNetwork:
    return _network(node, dt)


_PASS_THROUGH = tuple(getattr(nir, n) for n in ("Input", "Output", "Identity") if hasattr(nir, n))


NodeImporter = Callable[[str, nir.NIRNode, float], Optional[nn.Module]]

#: exact NIR node type -> ``(name, node, dt) -> module`` (``None``: the node passes its input on);
#: users extend it with :func:`register_node`
NODE_IMPORTERS: dict[type, NodeImporter] = {
    **{t: (lambda name, node, dt: None) for t in _PASS_THROUGH},
    nir.NIRGraph: _graph,
    nir.Affine: lambda name, node, dt: _affine(name, node),
    nir.Linear: lambda name, node, dt: _affine(name, node),
    nir.Conv1d: lambda name, node, dt: _conv(name, node),
    nir.Conv2d: lambda name, node, dt: _conv(name, node),
    nir.SumPool2d: lambda name, node, dt: _pool(name, node, True),
    nir.AvgPool2d: lambda name, node, dt: _pool(name, node, False),
    nir.Flatten: lambda name, node, dt: _Flatten(int(node.start_dim), int(node.end_dim)),
    nir.Scale: lambda name, node, dt: L.Scale(_t(node.scale)),
    nir.Threshold: lambda name, node, dt: L.Threshold(_t(our_threshold(node.threshold))),
    nir.CubaLIF: _cuba,
    nir.LIF: _lif,
    nir.IF: lambda name, node, dt: _if(name, node),
    nir.LI: _li,
    nir.I: lambda name, node, dt: LeakyIntegrator(beta=1.0, input_scale=_t(node.r)),
    nir.Delay: _delay,
}


SUPPORTED = tuple(sorted(t.__name__ for t in NODE_IMPORTERS))  # the built-in importers' node types
_BUILT_IN = dict(NODE_IMPORTERS)


def register_node(node_type: type, importer: NodeImporter) -> None:
    """Import NIR nodes of exactly ``node_type`` with ``importer(name, node, dt) -> module``."""
    if not isinstance(node_type, type):
        raise TypeError(f"register_node: expected a NIR node class, got {node_type!r}")
    NODE_IMPORTERS[node_type] = importer


def node_module(name: str, node: nir.NIRNode, dt: float) -> Optional[nn.Module]:
    """The spikelab module of one NIR node (``None`` for Input/Output/Identity)."""
    importer = NODE_IMPORTERS.get(type(node))
    if importer is None:
        raise NIRImportError(unsupported_message(name, node, NODE_IMPORTERS))
    return importer(name, node, dt)


def _aligned(node: nir.NIRNode, x) -> nir.NIRNode:
    """``node`` with its per-neuron parameters reshaped to its input shape ``x`` as
    :func:`~spikelab.export.nir_checks.aligned_shape` reads them (a copy; the values are unchanged):
    a 1-D array of C values becomes ``(C, 1, ..., 1)``, ``(H, W)`` before ``(C, H, W)`` becomes
    ``(1, H, W)``. Only for the built-in importers of per-neuron node types and a known ``x``."""
    built_in = NODE_IMPORTERS.get(type(node)) is _BUILT_IN.get(type(node))
    if x is None or not isinstance(node, ELEMENTWISE) or not built_in:
        return node
    node = copy.copy(node)
    for field, a in numeric_fields(node):
        if a.size > 1 and param_fits(a.shape, x):
            setattr(node, field, align_param(a, x))
    return node


def _network(graph: nir.NIRGraph, dt: float, shapes: Optional[dict] = None, path: tuple[str, ...] = ()) -> NIRNetwork:
    """The network of ``graph``; ``shapes`` (from :func:`check_graph`) gives each node's input shape by path."""
    shapes = shapes or {}
    modules = {}
    for name, node in graph.nodes.items():
        if type(node) is nir.NIRGraph and NODE_IMPORTERS.get(nir.NIRGraph) is _graph:
            modules[name] = _network(node, dt, shapes, path + (name,))
        else:
            modules[name] = node_module(name, _aligned(node, shapes.get(path + (name,))), dt)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if not inputs or not outputs:
        raise NIRImportError(f"the graph needs Input and Output nodes; it has inputs {inputs}, outputs {outputs}")
    return NIRNetwork(modules, [tuple(e) for e in graph.edges], inputs, outputs)


def from_nir(graph: Union[nir.NIRGraph, str, Path], dt: float) -> NIRNetwork:
    """Build a spikelab network from a NIR graph (or a ``.nir`` file) for time step ``dt`` (seconds).

    The network's ``forward`` takes ``[T, B, ...]`` and returns ``[T, B, ...]``; ``step`` runs one
    step. The whole graph is checked first (finite parameters, positive time constants, shapes
    along every edge, a runnable structure; :mod:`spikelab.export.nir_checks`); unsupported nodes
    or parameters raise :class:`NIRImportError` naming the node.

    Per-neuron parameters are read for the shape each node receives: a single value, a 1-D array
    of C values as one value per channel (dimension 0 of the input), any other shape by NumPy's
    broadcasting against the input (``(H, W)`` after a ``(C, H, W)`` convolution is the same in
    every channel). Neuron decays and thresholds must not vary within a channel.
    """
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not dt > 0:
        raise ValueError(f"dt: expected a positive time step in seconds, got {dt!r}")
    if isinstance(graph, (str, Path)):
        path = Path(graph)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such NIR file")
        try:
            graph = nir.read(path)
        except Exception as err:  # h5py/nir raise many kinds
            try:  # some exporters write graphs that fail NIR's shape check but are usable
                graph = nir.read(path, type_check=False)
            except Exception:
                raise NIRImportError(f"{path}: not a readable NIR file ({type(err).__name__}: {err})") from err
            warnings.warn(f"from_nir: {path} fails NIR's type check ({err}); read without it", stacklevel=2)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph: expected a nir.NIRGraph or a path, got {type(graph).__name__}")
    recorded = graph.metadata.get("dt") if isinstance(graph.metadata, dict) else None
    if recorded is not None and not np.isclose(float(recorded), dt):
        warnings.warn(f"from_nir: the graph was exported for dt = {float(recorded)} s and is read with dt = {dt} s; "
                      "time constants are kept, so decays per step change", stacklevel=2)
    shapes: dict = {}
    check_graph(graph, NODE_IMPORTERS, shapes)  # every node and edge, before any module is built
    return _network(graph, float(dt), shapes)


__all__ = ["from_nir", "node_module", "register_node", "NODE_IMPORTERS", "SUPPORTED"]
