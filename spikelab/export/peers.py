"""NIR graphs written in the subset of NIR that a peer library's importer reads (``to_nir(compat=...)``).

Each rewrite keeps the graph an exact NIR description of the same network; it only moves
parameters to where the peer reads them:

* ``Flatten`` dimensions are written negative (counted from the last dimension), which mean the
  same with or without a batch dimension: NIR counts them per sample, while Norse 1.1 and
  snnTorch 1.0 pass them to ``torch.nn.Flatten`` on batched tensors (``start_dim=0`` would
  flatten the batch).
* **norse** (``norse.torch.from_nir``, Norse 1.1): its importer has no ``AvgPool2d`` and no
  ``Scale`` node, so average pooling is written as ``SumPool2d`` and its ``1 / (kh * kw)`` is
  moved into the weights of the convolution or linear layer it feeds (through ``Flatten``). It
  reads ``LIF`` and ``IF`` nodes with ``r = 1`` whatever the file says, so ``r`` is moved into the
  weights and bias of the layer that feeds the neuron (``r`` equal within each output channel).
  It resets every neuron to 0 and reads no ``SumPool2d`` padding: other values are refused.
* **snntorch** (``snntorch.import_nir.import_from_nir``, snnTorch 1.0): its importer has no
  ``SumPool2d``, so sum pooling is written as ``AvgPool2d`` (padding counted, as NIR's and
  torch's average pooling do) with ``kh * kw`` moved into the next layer's weights. It reads
  ``LIF`` and ``CubaLIF`` time constants with a fixed ``dt = 1e-4`` s (export with ``dt=1e-4``),
  takes one threshold per layer and resets to 0. It divides that threshold by the ``LIF``
  input scale ``r * dt / tau`` of one neuron, which is exact only where the scale is the same
  for every neuron: where it differs (``decay_input=True`` with per-channel time constants) the
  scale is moved into the weights and bias of the layer that feeds the neuron (one value per
  output channel) and ``r`` becomes ``tau / dt`` (scale 1). It reads ``IF`` as ``Leaky(beta=0.9)`` with a
  subtracting reset, returning ``(spikes, membrane)`` (an upstream bug no rewrite avoids): such
  graphs are written with a warning, and :func:`fix_snntorch_if` repairs the imported network.

What a peer cannot read (other node types, parameters it ignores) is refused with
:class:`~spikelab.export.NIRExportError` naming the node, what the peer does, and the way out.
"""

from __future__ import annotations

import copy
import warnings

import nir
import numpy as np

from spikelab.export.errors import NIRExportError

PEERS = ("norse", "snntorch")

#: the node types each peer's importer maps (its source: norse/torch/utils/import_nir.py,
#: snntorch/import_nir.py), as written by these rewrites
READS: dict[str, tuple[type, ...]] = {
    "norse": (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.SumPool2d, nir.IF,
              nir.LIF, nir.CubaLIF),
    "snntorch": (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.IF,
                 nir.LIF, nir.CubaLIF),
}
_WHERE = {"norse": "Norse 1.1 (norse.torch.from_nir)", "snntorch": "snnTorch 1.0 (snntorch.import_nir.import_from_nir)"}
_WEIGHTED = (nir.Conv2d, nir.Affine, nir.Linear)
SNNTORCH_DT = 1e-4  # the time step snnTorch 1.0's importer assumes for LIF and CubaLIF nodes


class _Graph:
    """A flat graph's nodes and edges with the neighbour look-ups the rewrites need."""

    def __init__(self, graph: nir.NIRGraph) -> None:
        self.nodes = dict(graph.nodes)
        self.edges = [tuple(e) for e in graph.edges]

    def sources(self, name: str) -> list[str]:
        return [s for s, d in self.edges if d == name]

    def targets(self, name: str) -> list[str]:
        return [d for s, d in self.edges if s == name]

    def describe(self, name: str) -> str:
        return f"'{name}' ({type(self.nodes[name]).__name__})"


def for_peer(graph: nir.NIRGraph, peer: str, dt: float) -> nir.NIRGraph:
    """A copy of ``graph`` (written by :func:`~spikelab.export.to_nir` for time step ``dt``)
    rewritten into the NIR that ``peer`` (``"norse"`` or ``"snntorch"``) reads; see the module
    docstring. Raises :class:`NIRExportError` naming the node where no rewrite helps."""
    if peer not in PEERS:
        raise ValueError(f"compat: unknown peer {peer!r}; expected one of {list(PEERS)} or None")
    g = _Graph(copy.deepcopy(graph))
    who = _WHERE[peer]
    for name, node in g.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise NIRExportError(f"node '{name}': a nested graph (a Recurrent layer); {who} reads no nested graphs "
                                 "written this way. Export without compat= for spikelab or other NIR readers")
    if peer == "snntorch":
        timed = [n for n, node in g.nodes.items() if isinstance(node, (nir.LIF, nir.CubaLIF))]
        if timed and not np.isclose(dt, SNNTORCH_DT, rtol=1e-9, atol=0):
            raise NIRExportError(f"nodes {timed}: {who} reads LIF and CubaLIF time constants with a fixed "
                                 f"dt = {SNNTORCH_DT} s, and this graph is exported for dt = {dt} s: export with "
                                 f"dt={SNNTORCH_DT} (spikelab export --dt {SNNTORCH_DT}) so its decays stay the same")
    for name in list(g.nodes):
        node = g.nodes[name]
        if isinstance(node, nir.Flatten):
            g.nodes[name] = _batch_free_flatten(node)
        elif peer == "norse" and isinstance(node, nir.AvgPool2d):
            _avg_to_sum(g, name, who)
        elif peer == "norse" and isinstance(node, nir.SumPool2d):
            _refuse_padding(g, name, _pool_geometry(node)[2], who)
        elif peer == "snntorch" and isinstance(node, nir.SumPool2d):
            _sum_to_avg(g, name)
    for name, node in g.nodes.items():
        if isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
            _neuron_for(g, name, peer, who)
    unread = [g.describe(n) for n, node in g.nodes.items() if not isinstance(node, READS[peer])]
    if unread:
        raise NIRExportError(f"nodes {', '.join(unread)}: {who} reads only "
                             f"{', '.join(sorted(t.__name__ for t in READS[peer]))} nodes; export this network "
                             "without compat= (for spikelab or other NIR readers)")
    meta = dict(graph.metadata or {})
    meta["compat"] = peer
    return nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=meta, type_check=False)


def _batch_free_flatten(node: nir.Flatten) -> nir.Flatten:
    """The same Flatten with negative dimensions: equal with or without a leading batch dimension."""
    shape = np.asarray(node.input_type["input"])
    n = len(shape)
    start, end = int(node.start_dim), int(node.end_dim)
    start, end = start - n if start >= 0 else start, end - n if end >= 0 else end
    return nir.Flatten(input_type={"input": shape}, start_dim=start, end_dim=end)


def _pair(v) -> tuple[int, int]:
    """A pooling or convolution size (an int, or one or two values: a torch module's attribute or
    a NIR node's array) as two ints (height, width)."""
    return tuple(int(a) for a in np.broadcast_to(np.asarray(v), (2,)))


def _pool_geometry(node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.array(_pair(getattr(node, f))) for f in ("kernel_size", "stride", "padding"))


def _refuse_padding(g: _Graph, name: str, padding: np.ndarray, who: str) -> None:
    if padding.any():
        raise NIRExportError(f"node {g.describe(name)}: padding {tuple(int(p) for p in padding)}; {who} reads "
                             "pooling as SumPool2d and ignores its padding (its LPPool2d has none). Use pooling "
                             "without padding, or export without compat=")


def _weighted_after(g: _Graph, name: str, who: str, why: str) -> str:
    """The Conv2d/Affine/Linear node that ``name`` alone feeds (through Flatten nodes), so a factor
    on ``name``'s output can move into its weights."""
    current = name
    while True:
        targets = g.targets(current)
        if len(targets) != 1 or len(g.sources(targets[0])) != 1:
            raise NIRExportError(f"node {g.describe(name)}: {why}; its output feeds {[g.describe(t) for t in targets]}"
                                 f"{' (summed with other inputs)' if len(targets) == 1 else ''}, where the factor "
                                 f"cannot move into weights, so {who} cannot run it. Put a convolution or linear "
                                 "layer after the pooling, or export without compat=")
        nxt = targets[0]
        if isinstance(g.nodes[nxt], _WEIGHTED):
            return nxt
        if not isinstance(g.nodes[nxt], nir.Flatten):
            raise NIRExportError(f"node {g.describe(name)}: {why}; it feeds {g.describe(nxt)}, not a Conv2d, "
                                 f"Affine or Linear layer whose weights could take the factor, so {who} cannot "
                                 "run it. Put a convolution or linear layer after the pooling, or export without "
                                 "compat=")
        current = nxt


def _scale_weights(g: _Graph, name: str, factor: float) -> None:
    node = copy.copy(g.nodes[name])
    node.weight = (np.asarray(node.weight, dtype=np.float64) * factor).astype(np.asarray(node.weight).dtype)
    g.nodes[name] = node


def _avg_to_sum(g: _Graph, name: str, who: str) -> None:
    kernel, stride, padding = _pool_geometry(g.nodes[name])
    _refuse_padding(g, name, padding, who)
    target = _weighted_after(g, name, who, f"{who} reads no AvgPool2d, and its 1/{int(kernel.prod())} must "
                                           "move into the next layer's weights")
    g.nodes[name] = nir.SumPool2d(kernel_size=kernel, stride=stride, padding=padding)
    _scale_weights(g, target, 1.0 / float(kernel.prod()))


def _sum_to_avg(g: _Graph, name: str) -> None:
    kernel, stride, padding = _pool_geometry(g.nodes[name])
    target = _weighted_after(g, name, _WHERE["snntorch"], f"{_WHERE['snntorch']} reads no SumPool2d, and the "
                             f"factor {int(kernel.prod())} of AvgPool2d must move into the next layer's weights")
    g.nodes[name] = nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=padding)
    _scale_weights(g, target, float(kernel.prod()))


def _neuron_for(g: _Graph, name: str, peer: str, who: str) -> None:
    node = g.nodes[name]
    v_reset = np.asarray(getattr(node, "v_reset", 0.0))
    if not np.all(v_reset == 0):
        raise NIRExportError(f"node {g.describe(name)}: v_reset = {float(v_reset.flat[0]):g}; {who} resets every "
                             "neuron to 0. Train with reset: zero, or export without compat=")
    if peer == "snntorch":
        threshold = np.asarray(node.v_threshold)
        if np.unique(threshold).size > 1:
            raise NIRExportError(f"node {g.describe(name)}: thresholds differ between neurons; {who} takes one "
                                 "threshold per layer. Use one threshold per layer, or export without compat=")
        if isinstance(node, nir.IF):
            warnings.warn(f"to_nir(compat='snntorch'): node {g.describe(name)}: {who} reads NIR IF as "
                          "Leaky(beta=0.9) with a subtracting reset (an upstream bug); after import, call "
                          "spikelab.export.peers.fix_snntorch_if(net) to run it as the IF it is", stacklevel=4)
        if isinstance(node, nir.LIF):
            # snnTorch feeds the input unscaled and divides the one threshold by the input scale of
            # one neuron (np.unique(w_scale)[0]), as it computes it: exact only for a single scale
            tau = np.asarray(node.tau)
            scale = np.asarray(node.r) * SNNTORCH_DT / tau
            if not np.allclose(scale, 1.0) and np.unique(scale).size > 1:
                _move_into_source(g, name, np.asarray(node.r, dtype=np.float64) * SNNTORCH_DT /
                                  np.asarray(tau, dtype=np.float64), who,
                                  f"its input scale r * dt / tau differs between neurons ({who} divides its one "
                                  "threshold by a single neuron's scale)", "the scale",
                                  "use one time constant per layer or neurons with decay_input=False")
                neuron = copy.copy(node)
                neuron.r = np.broadcast_to(tau.astype(np.float64) / SNNTORCH_DT,
                                           np.shape(node.r)).astype(np.asarray(node.r).dtype)
                g.nodes[name] = neuron
        return
    if isinstance(node, nir.CubaLIF):
        return  # Norse reads w_in and r of CubaLIF nodes
    r = np.asarray(node.r, dtype=np.float64)
    if np.allclose(r, 1.0, rtol=0, atol=0):
        return
    _move_into_source(g, name, r, who, f"r = {float(r.flat[0]):g}; {who} reads {type(node).__name__} with r = 1",
                      "r", "use neurons with decay_input=True (r = 1)")
    neuron = copy.copy(node)
    neuron.r = np.ones_like(np.asarray(node.r))
    g.nodes[name] = neuron


def _move_into_source(g: _Graph, name: str, factor: np.ndarray, who: str, why: str, what: str,
                      instead: str) -> None:
    """Multiply the weights and bias of the Conv2d/Affine/Linear node that alone feeds neuron
    ``name`` by ``factor`` (per neuron; one value per output channel), or refuse naming both."""
    sources = g.sources(name)
    src = sources[0] if len(sources) == 1 else None
    if src is None or not isinstance(g.nodes[src], _WEIGHTED) or len(g.targets(src)) != 1:
        shared = src is not None and len(g.targets(src)) > 1
        raise NIRExportError(f"node {g.describe(name)}: {why}, so {what} must move into the weights of the layer "
                             f"feeding it, but it is fed by {[g.describe(s) for s in sources]}"
                             f"{' (which feeds other nodes too)' if shared else ''}"
                             f", whose weights cannot take it. Feed the neuron from one convolution or linear layer, "
                             f"{instead}, or export without compat=")
    per_output = factor.reshape(factor.shape[0], -1) if factor.ndim > 1 else factor.reshape(-1, 1)
    if not np.all(per_output == per_output[:, :1]):
        raise NIRExportError(f"node {g.describe(name)}: {why}, and {what} varies within a channel; only a value "
                             f"per output channel of {g.describe(src)} can move into its weights. Use one time "
                             "constant per channel, or export without compat=")
    per_channel = per_output[:, 0]
    layer = copy.copy(g.nodes[src])
    w = np.asarray(layer.weight)
    layer.weight = (w.astype(np.float64) * per_channel.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
    if getattr(layer, "bias", None) is not None:
        b = np.asarray(layer.bias)
        layer.bias = (b.astype(np.float64) * np.broadcast_to(per_channel, b.shape)).astype(b.dtype)
    g.nodes[src] = layer


def fix_snntorch_if(net) -> int:
    """Repair the IF neurons of a network imported by snnTorch 1.0 (``import_from_nir``), which
    reads NIR ``IF`` nodes as ``Leaky(beta=0.9)`` with a subtracting reset and, unlike its other
    neurons, ``init_hidden=False`` (it then returns ``(spikes, membrane)``, which the next layer
    cannot take): sets ``beta = 1``, the reset to zero (NIR's IF) and ``init_hidden = True``.
    Only ``Leaky`` modules as that importer builds IF nodes (``beta = 0.9``, subtracting reset)
    change; returns how many."""
    import snntorch
    import torch

    fixed = 0
    for m in net.modules():
        if type(m) is snntorch.Leaky and m.reset_mechanism == "subtract" and torch.allclose(
                torch.as_tensor(m.beta, dtype=torch.float32), torch.tensor(0.9)):
            m.beta = torch.tensor(1.0)
            m.reset_mechanism = "zero"
            m.init_hidden = True
            fixed += 1
    return fixed


__all__ = ["PEERS", "READS", "SNNTORCH_DT", "for_peer", "fix_snntorch_if"]
