"""Checks of a NIR graph before :func:`~spikelab.export.from_nir` builds anything.

One pass over the nodes and edges of a graph and of its subgraphs: every numeric array is
finite and time constants are positive; the structure runs (edges name known nodes, the graph
has an Input and an Output, every node is reachable, no cycle lacks a neuron or delay to carry
it over a step); shapes agree along every edge. Shapes come from a node's declared type where
the weights do not fix them, from its weights and parameters otherwise. An Input's or Output's
type may carry extra leading (batch) dimensions, as some exporters write them. Each error names
the node or edge (and subgraph) and what was expected.

Per-neuron parameters (of neurons, Scale, Threshold, Delay) are read exactly as the importers
build them (:func:`aligned_shape`): one value for the whole layer; a 1-D array of C values as one
value per channel (dimension 0 of the node's input; for a 1-D input, one per neuron); any other
shape by NumPy's broadcasting against the input (so ``(H, W)`` is the same for every channel). The
neuron modules take their decay and threshold per layer or per channel only, so those must not
vary within a channel.
"""

from __future__ import annotations

import dataclasses
from typing import Collection, Iterator, Optional

import nir
import numpy as np

from spikelab.export.errors import NIRImportError
from spikelab.export.network import graph_order

Shape = Optional[tuple[int, ...]]  # a per-sample shape; None where it is not known

_TIME_CONSTANTS = ("tau", "tau_mem", "tau_syn")
_NEURONS = tuple(getattr(nir, n) for n in ("LIF", "IF", "CubaLIF", "LI", "I", "CubaLI") if hasattr(nir, n))
ELEMENTWISE = _NEURONS + (nir.Scale, nir.Threshold, nir.Delay)  # one parameter value per neuron
_CONV = (nir.Conv1d, nir.Conv2d)
_POOL = (nir.SumPool2d, nir.AvgPool2d)
#: nodes that hold no state: a cycle made only of them has nothing to carry a value over a step
#: per-neuron fields the neuron modules take as one value per layer or per channel (the rest become a
#: per-neuron input scale), with the spikelab module that takes them
_PER_CHANNEL = {nir.LIF: ("LIF", ("tau", "v_threshold")),
                nir.CubaLIF: ("CurrentLIF", ("tau_syn", "tau_mem", "v_threshold")),
                nir.IF: ("IF", ("v_threshold",))}
_STATELESS = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Flatten, nir.Scale, nir.Threshold) + _CONV + _POOL \
    + ((nir.Identity,) if hasattr(nir, "Identity") else ())


def unsupported_message(name: str, node: nir.NIRNode, supported: Collection[type], where: str = "") -> str:
    """The refusal of a node type no importer is registered for."""
    return (f"node {name!r}{where}: NIR node type {type(node).__name__} is not supported; "
            f"supported: {', '.join(sorted(t.__name__ for t in supported))} "
            "(spikelab.export.register_node adds more)")


def check_graph(graph: nir.NIRGraph, supported: Collection[type],
                shapes: Optional[dict[tuple[str, ...], Shape]] = None) -> Shape:
    """Check ``graph`` (subgraphs included) for import by the importers of the ``supported`` node
    types; returns the per-sample shape of its output (None where unknown).

    ``shapes``, when given, is filled with the per-sample shape each node receives (None where
    unknown), keyed by its path: the names of the subgraphs it is in, then its own name.

    Raises:
        NIRImportError: naming the node, edge or subgraph at fault and what was expected.
    """
    return _check(graph, supported, (), None, shapes)


def aligned_shape(shape: tuple[int, ...], n: int) -> Optional[tuple[int, ...]]:
    """The shape of ``n`` dimensions a per-neuron parameter of ``shape`` takes for a node whose input
    has ``n`` per-sample dimensions, as the importers read it; None if it has more dimensions.

    Leading dimensions of size 1 beyond ``n`` are dropped; a 1-D parameter of C > 1 values is one
    value per channel (dimension 0: ``(C, 1, ..., 1)``), the form exporters write after a
    convolution (for a 1-D input that is one value per neuron); any other shape lines up with the
    input's last dimensions (NumPy's broadcasting: ``(H, W)`` -> ``(1, H, W)``).
    """
    shape = tuple(int(d) for d in shape)
    while len(shape) > n and shape[0] == 1:
        shape = shape[1:]
    if len(shape) > n:
        return None
    if len(shape) == 1 and n >= 2:
        return shape + (1,) * (n - 1)
    return (1,) * (n - len(shape)) + shape


def param_fits(shape: tuple[int, ...], x: tuple[int, ...]) -> bool:
    """Whether a per-neuron parameter of ``shape`` applies to the input shape ``x`` (:func:`aligned_shape`)."""
    a = aligned_shape(shape, len(x))
    return a is not None and all(p in (1, s) for p, s in zip(a, x))


def align_param(a: np.ndarray, x: tuple[int, ...]) -> np.ndarray:
    """``a`` reshaped to :func:`aligned_shape` for the input shape ``x`` (same values, ``len(x)`` dimensions)."""
    shape = aligned_shape(np.shape(a), len(x))
    if shape is None or not param_fits(np.shape(a), x):
        raise ValueError(f"a parameter of shape {np.shape(a)} does not apply to an input of shape {tuple(x)}")
    return np.reshape(a, shape)


def accepted_shapes(x: tuple[int, ...]) -> str:
    """The per-neuron parameter shapes a node with input shape ``x`` accepts, in words."""
    n = len(x)
    if n == 0:
        return "a single value"
    if n == 1:
        return f"a single value or {_fmt(x)} (one per neuron)"
    rest = x[1:] if n > 2 else (1,) + x[1:]
    examples = ", ".join(dict.fromkeys([_fmt(rest), _fmt((x[0],) + (1,) * (n - 1)), _fmt(x)]))
    return (f"a single value, ({x[0]},) (one per channel, dimension 0) or a shape of 2 to {n} dimensions that "
            f"broadcasts to {_fmt(x)} by NumPy's rules, such as {examples}")


# ----- small helpers ---------------------------------------------------------------------------------

def _fmt(shape) -> str:
    dims = ["?" if d is None else str(d) for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _where(name: str, node: nir.NIRNode, path: tuple[str, ...]) -> str:
    return f"NIR node {name!r} ({type(node).__name__}){_in(path)}"


def _in(path: tuple[str, ...]) -> str:
    return f" in subgraph {'/'.join(path)!r}" if path else ""


def _array(value) -> Optional[np.ndarray]:
    """A node field as a numeric array (torch tensors included); None for strings, None and others."""
    if value is None or isinstance(value, (str, bytes, bool, dict)):
        return None
    if hasattr(value, "detach"):  # some exporters store torch tensors
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        return None
    return a if a.dtype.kind in "biufc" else None


def numeric_fields(node: nir.NIRNode) -> Iterator[tuple[str, np.ndarray]]:
    """The numeric fields of a node (its declared types and metadata aside)."""
    skip = {"input_type", "output_type", "metadata"}
    names = ([f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node)
             else [k for k in vars(node) if not k.startswith("_")])
    for name in names:
        a = _array(getattr(node, name, None)) if name not in skip else None
        if a is not None:
            yield name, a


def _declared(types, key: str) -> Shape:
    """A node's declared ``input_type``/``output_type`` as a shape, None where absent or odd."""
    if not isinstance(types, dict) or not types:
        return None
    value = types.get(key, next(iter(types.values())))
    a = _array(value)
    if a is None or a.dtype.kind not in "iuf" or not np.all(a == np.round(a)):
        return None
    return tuple(int(d) for d in a.reshape(-1))


def _ints(where: str, field: str, value, n: int, minimum: int) -> tuple[int, ...]:
    """``value`` (one number or ``n``) as ``n`` whole numbers >= ``minimum``."""
    a = _array(value)
    ok = a is not None and a.dtype.kind in "iuf" and a.size in (1, n) and np.all(a == np.round(a))
    if not ok or np.any(a < minimum):
        raise NIRImportError(f"{where}: {field} = {value!r}; expected {'one or ' if n > 1 else ''}{n} whole "
                             f"number{'s' if n > 1 else ''} >= {minimum}")
    return tuple(int(v) for v in np.broadcast_to(a.reshape(-1), (n,)))


@dataclasses.dataclass(frozen=True)
class _Want:
    """The input shape a node takes: ``dims`` (None: any size); ``mode`` "exact", "last" (leading
    dimensions free, as an affine map on the last one) or "params" (any shape all its per-neuron
    ``params``, ``(field, shape)`` pairs, apply to; see :func:`aligned_shape`)."""

    dims: tuple[Optional[int], ...]
    mode: str = "exact"
    params: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def fits(self, shape: tuple[int, ...]) -> bool:
        if self.mode == "params":
            return all(param_fits(p, shape) for _, p in self.params)
        if self.mode == "last":
            if len(shape) < len(self.dims):
                return False
            shape = shape[len(shape) - len(self.dims):]
        return len(shape) == len(self.dims) and all(d is None or d == s for d, s in zip(self.dims, shape))

    def misfit(self, shape: tuple[int, ...]) -> str:
        """Why ``shape`` does not fit a "params" node: the first parameter that does not apply."""
        for field, p in self.params:
            if not param_fits(p, shape):
                return (f"its {field} has shape {_fmt(p)}; for an input of shape {_fmt(shape)} it accepts "
                        f"{accepted_shapes(shape)}")
        return ""

    @property
    def rank(self) -> int:
        """The most dimensions of a parameter with more than one value ("params" mode)."""
        return max((len(p) for _, p in self.params if int(np.prod(p)) > 1), default=0)

    def __str__(self) -> str:
        if self.mode == "last":
            return f"(..., {', '.join(str(d) for d in self.dims)})"
        if self.mode == "params":
            big = [p for _, p in self.params if int(np.prod(p)) > 1]
            channels = next((p[0] for p in big if len(p) == 1), None)
            multi = [p for p in big if len(p) > 1]
            if not big:
                return "any shape (its parameters are single values)"
            if not multi:
                return f"({channels},) or ({channels}, ...) (its 1-D parameters are one value per channel, dimension 0)"
            inner = ", ".join("?" if d == 1 else str(d) for d in np.broadcast_shapes(*multi))
            text = f"({inner}) or (..., {inner})"
            return text + (f" with {channels} channels at dimension 0" if channels is not None else "")
        return _fmt(self.dims)


def _arriving(produced: tuple[int, ...], want: Optional[_Want], from_input: bool, lenient: bool) -> Shape:
    """``produced`` as the destination takes it, or None where it does not fit. An Input's type
    may carry extra leading dimensions (dropped: all of them before an affine map, leading ones of
    size 1 before per-neuron parameters, any that keep the rest from fitting otherwise); a graph
    boundary's (``lenient``) as well."""
    if from_input and want is not None and want.mode == "last" and want.fits(produced):
        return produced[len(produced) - len(want.dims):]  # NIR's affine maps take vectors: the rest is a batch
    if from_input and want is not None and want.mode == "params" and want.rank:
        i = 0  # a batch of one before per-neuron parameters: drop it
        while len(produced) - i > want.rank and produced[i] == 1:
            i += 1
        if i and want.fits(produced[i:]):
            return produced[i:]
    if want is None or want.fits(produced):
        return produced
    if from_input:
        for k in range(1, len(produced)):
            if want.fits(produced[k:]):
                return produced[k:]
    if lenient and want.mode == "exact":
        n, m = len(want.dims), len(produced)
        if (m > n and want.fits(produced[m - n:])) or (0 < m < n and _Want(want.dims[n - m:]).fits(produced)):
            return produced
    return None


# ----- nodes ------------------------------------------------------------------------------------------

def _check_values(where: str, node: nir.NIRNode) -> dict[str, np.ndarray]:
    """Every numeric field finite; time constants positive; delays not negative."""
    arrays = dict(numeric_fields(node))
    for field, a in arrays.items():
        if a.dtype.kind in "fc":
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bad:
                raise NIRImportError(f"{where}: {field} has {bad} non-finite value{'s' if bad > 1 else ''} "
                                     "(NaN/inf); expected finite numbers")
    for field in _TIME_CONSTANTS:
        if field in arrays and np.any(arrays[field] <= 0):
            a = arrays[field]
            raise NIRImportError(f"{where}: {field} has {int(np.count_nonzero(a <= 0))} value(s) <= 0 (min "
                                 f"{float(a.min()):.3g}); expected positive time constants in seconds")
    if isinstance(node, nir.Delay) and "delay" in arrays and np.any(arrays["delay"] < 0):
        raise NIRImportError(f"{where}: delay has negative values (min {float(arrays['delay'].min()):.3g} s); "
                             "expected delays >= 0")
    return arrays


def _params(where: str, arrays: dict[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The per-neuron parameter shapes of a node, checked to agree for some input shape: the 1-D ones
    (one value per channel) of one length, the others broadcasting together."""
    shapes = tuple((f, tuple(int(d) for d in a.shape)) for f, a in arrays.items())
    big = [p for _, p in shapes if int(np.prod(p)) > 1]
    try:
        if len({p for p in big if len(p) == 1}) > 1:
            raise ValueError
        np.broadcast_shapes(*(p for p in big if len(p) > 1))
    except ValueError:
        listed = ", ".join(f"{f} {_fmt(p)}" for f, p in shapes)
        raise NIRImportError(f"{where}: parameter shapes differ ({listed}); expected one shape "
                             "(one value per neuron), one value per channel or a single value") from None
    return shapes


def _param_shape(params: tuple[tuple[str, tuple[int, ...]], ...]) -> Shape:
    """The neuron shape the parameters give where the input shape is not known (None: not fixed)."""
    big = [p for _, p in params if int(np.prod(p)) > 1]
    if not big or len({len(p) for p in big}) > 1:
        return None
    return tuple(np.broadcast_shapes(*big))


def _check_params(where: str, node: nir.NIRNode, arrays: dict[str, np.ndarray], x: tuple[int, ...]) -> None:
    """Every per-neuron parameter applies to the input shape ``x`` as the importers read it, and the
    ones a neuron module takes per layer or per channel do not vary within a channel."""
    for field, a in arrays.items():
        if not param_fits(a.shape, x):
            raise NIRImportError(f"{where}: {field} has shape {_fmt(a.shape)} but its input has shape {_fmt(x)}; "
                                 f"accepted: {accepted_shapes(x)}")
    module, fields = _PER_CHANNEL.get(type(node), ("", ()))
    for field in fields:
        a = arrays.get(field)
        if a is None or a.size <= 1 or len(x) <= 1:
            continue
        rows = align_param(a, x)
        rows = rows.reshape(rows.shape[0], -1)
        if not np.all(rows == rows[:, :1]):
            raise NIRImportError(
                f"{where}: {field} of shape {_fmt(a.shape)} varies within a channel of its input of shape "
                f"{_fmt(x)} (dimension 0 is the channel); spikelab's {module} takes {field} as one value per "
                f"layer or per channel; accepted: {accepted_shapes(x)}, with values equal within each channel")


def _weight(where: str, arrays: dict[str, np.ndarray], ndim: int, layout: str) -> np.ndarray:
    w = arrays.get("weight")
    if w is None or w.ndim != ndim:
        raise NIRImportError(f"{where}: weight of shape {None if w is None else w.shape}; expected {layout}")
    return w


def _check_bias(where: str, arrays: dict[str, np.ndarray], out: int) -> None:
    b = arrays.get("bias")
    if b is not None and (b.size not in (1, out) or b.ndim > 1):
        raise NIRImportError(f"{where}: bias of shape {b.shape} for {out} outputs; expected ({out},) or one value")


def _conv_geometry(where: str, node, w: np.ndarray):
    """Kernel, stride, dilation and padding (a tuple, or "same") of a convolution node."""
    nd = w.ndim - 2
    stride = _ints(where, "stride", node.stride, nd, 1)
    dilation = _ints(where, "dilation", node.dilation, nd, 1)
    padding = node.padding
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise NIRImportError(f"{where}: padding {padding!r}; expected 'same', 'valid' or whole numbers >= 0")
        padding = "same" if padding == "same" else (0,) * nd
    else:
        padding = _ints(where, "padding", padding, nd, 0)
    if padding == "same" and any(s != 1 for s in stride):
        raise NIRImportError(f"{where}: stride {stride[0] if nd == 1 else stride} is not supported with "
                             "padding='same' (torch pads 'same' only at stride 1); expected stride 1, or padding "
                             "as whole numbers")
    return tuple(w.shape[2:]), stride, dilation, padding


def _pool_geometry(where: str, node):
    kernel = _ints(where, "kernel_size", node.kernel_size, 2, 1)
    stride = _ints(where, "stride", node.stride, 2, 1)
    padding = _ints(where, "padding", node.padding, 2, 0)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise NIRImportError(f"{where}: padding {padding} is more than half the kernel {kernel}")
    return kernel, stride, padding


def _accepts(where: str, node: nir.NIRNode, arrays: dict[str, np.ndarray]) -> Optional[_Want]:
    """The input shape ``node`` takes (None: any), checking the node's own consistency."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _weight(where, arrays, 2, "[out, in]")
        _check_bias(where, arrays, w.shape[0])
        return _Want((w.shape[1],), "last")
    if isinstance(node, _CONV):
        nd = 1 if isinstance(node, nir.Conv1d) else 2
        w = _weight(where, arrays, nd + 2, "[out, in / groups, " + ("k]" if nd == 1 else "kh, kw]"))
        groups = _ints(where, "groups", node.groups, 1, 1)[0]
        if w.shape[0] % groups:
            raise NIRImportError(f"{where}: {w.shape[0]} output channels do not split into groups = {groups}")
        _check_bias(where, arrays, w.shape[0])
        _conv_geometry(where, node, w)
        declared = _declared(node.input_type, "input")  # NIR writes in / groups channels: keep its sizes only
        spatial = declared[1:] if declared is not None and len(declared) == nd + 1 else (None,) * nd
        return _Want((w.shape[1] * groups, *spatial))
    if isinstance(node, _POOL):
        _pool_geometry(where, node)
        declared = _declared(node.input_type, "input")
        return _Want(declared if declared is not None and len(declared) == 3 else (None, None, None))
    if isinstance(node, nir.Flatten):
        for field in ("start_dim", "end_dim"):
            v = getattr(node, field)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise NIRImportError(f"{where}: {field} = {v!r}; expected a whole number")
    if isinstance(node, ELEMENTWISE):
        return _Want((), "params", _params(where, arrays))
    if isinstance(node, nir.Input):
        return None
    if isinstance(node, nir.NIRGraph):
        inner = [n for n in node.nodes.values() if isinstance(n, nir.Input)]
        declared = _declared(inner[0].input_type, "input") if inner else None
    elif isinstance(node, nir.Output):
        declared = _declared(node.output_type, "output")
    else:  # Flatten, Identity, node types users registered
        declared = _declared(node.input_type, "input")
    return None if declared is None else _Want(declared)


def _flatten(where: str, node: nir.Flatten, x: tuple[int, ...]) -> tuple[int, ...]:
    n, start, end = len(x), int(node.start_dim), int(node.end_dim)
    if n == 0:
        raise NIRImportError(f"{where}: its input is a scalar (shape ()); expected at least one dimension to flatten")
    if not (-n <= start < n and -n <= end < n) or start % n > end % n:
        raise NIRImportError(f"{where}: start_dim = {start}, end_dim = {end} do not fit its input shape {_fmt(x)} "
                             f"({n} dimensions per sample, the batch not counted); expected dimensions in "
                             f"[{-n}, {n - 1}] with start_dim not after end_dim")
    s, e = start % n, end % n
    return x[:s] + (int(np.prod(x[s:e + 1])),) + x[e + 1:]


def _output(where: str, node: nir.NIRNode, x: Shape, arrays: dict[str, np.ndarray]) -> Shape:
    """The per-sample shape ``node`` gives for input shape ``x`` (None: unknown)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return (x[:-1] if x else ()) + (int(arrays["weight"].shape[0]),)
    if isinstance(node, _CONV):
        w = arrays["weight"]
        if x is None:
            return _declared(node.output_type, "output")
        kernel, stride, dilation, padding = _conv_geometry(where, node, w)
        if padding == "same":
            spatial = x[1:]
        else:
            spatial = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                            for n, p, d, k, s in zip(x[1:], padding, dilation, kernel, stride))
        if any(o < 1 for o in spatial):
            raise NIRImportError(f"{where}: its input {_fmt(x)} is smaller than the kernel {kernel} (padding "
                                 f"{padding}, dilation {dilation}); the output would be empty")
        return (int(w.shape[0]), *spatial)
    if isinstance(node, _POOL):
        if x is None:
            return _declared(node.output_type, "output")
        kernel, stride, padding = _pool_geometry(where, node)
        spatial = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(x[1:], padding, kernel, stride))
        if any(o < 1 for o in spatial):
            raise NIRImportError(f"{where}: its input {_fmt(x)} is smaller than the kernel {kernel}")
        return (x[0], *spatial)
    if isinstance(node, nir.Flatten):
        x = x if x is not None else _declared(node.input_type, "input")
        return None if x is None else _flatten(where, node, x)
    if isinstance(node, ELEMENTWISE):
        return x if x is not None else _param_shape(_params(where, arrays))
    if isinstance(node, nir.Output):
        return x if x is not None else _declared(node.output_type, "output")
    if x is not None and isinstance(node, getattr(nir, "Identity", ())):
        return x
    return _declared(node.output_type, "output")


# ----- graphs -----------------------------------------------------------------------------------------

def _instant_loop(nodes: dict, edges: list[tuple[str, str]]) -> Optional[list[str]]:
    """A cycle made only of stateless nodes (nothing carries its value to the next step), or None."""
    inner = [(s, d) for s, d in edges if isinstance(nodes[s], _STATELESS) and isinstance(nodes[d], _STATELESS)]
    names = list(dict.fromkeys(n for edge in inner for n in edge))
    _, back = graph_order(names, inner, names)  # every node a root: all reached
    if not back:
        return None
    last, first = min(back)  # the edge last -> first closes a cycle: walk it from first to last
    succ: dict[str, list[str]] = {}
    for s, d in inner:
        succ.setdefault(s, []).append(d)
    paths, seen = {first: [first]}, {first}
    queue = [first]
    while last not in paths:
        node = queue.pop(0)
        for nxt in succ.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return paths[last]


def _check(graph: nir.NIRGraph, supported: Collection[type], path: tuple[str, ...], shape_in: Shape,
           shapes: Optional[dict[tuple[str, ...], Shape]]) -> Shape:
    nodes, sub = graph.nodes, _in(path)
    if not isinstance(nodes, dict):
        raise NIRImportError(f"the graph{sub}: nodes is a {type(nodes).__name__}; expected a dict of named NIR nodes")
    for name, node in nodes.items():
        if not isinstance(node, nir.NIRNode):
            raise NIRImportError(f"node {name!r}{sub}: {type(node).__name__} is not a NIR node")
        if type(node) not in supported:
            raise NIRImportError(unsupported_message(name, node, supported, sub))
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in nodes.items() if isinstance(v, nir.Output)]
    if not inputs or not outputs:
        raise NIRImportError(f"the graph{sub} needs Input and Output nodes; it has inputs {inputs}, outputs {outputs}")
    edges: list[tuple[str, str]] = []
    for e in graph.edges:
        try:
            s, d = e
            hash(s), hash(d)
        except (TypeError, ValueError):
            raise NIRImportError(f"edge {e!r}{sub}: expected a pair (source, destination) of node names") from None
        for n in (s, d):
            if n not in nodes:
                names = ", ".join(repr(k) for k in list(nodes)[:20]) + (", ..." if len(nodes) > 20 else "")
                raise NIRImportError(f"edge ({s!r}, {d!r}){sub} names the unknown node {n!r}; nodes: {names}")
        if isinstance(nodes[d], nir.Input):
            raise NIRImportError(f"edge ({s!r}, {d!r}){sub} leads into the Input node {d!r}; an Input node takes "
                                 "the graph's input only")
        edges.append((s, d))
    order, back = graph_order(list(nodes), edges, inputs, _in(path))
    loop = _instant_loop(nodes, edges)
    if loop:
        raise NIRImportError(f"NIR nodes {loop}{sub} form a cycle with no neuron, integrator or delay in it: a value "
                             "would feed back within the same instant (an algebraic loop), which NIR gives no time "
                             "step and spikelab cannot run as written; expected a neuron or a Delay in every cycle")

    out: dict[str, Shape] = {}
    arriving: dict[str, tuple[tuple[int, ...], str]] = {}  # node -> (shape it receives, from which source)
    wants: dict[str, Optional[_Want]] = {}
    into: dict[str, list[str]] = {}
    for s, d in edges:
        into.setdefault(d, []).append(s)

    def receive(s: str, d: str) -> None:
        produced = out.get(s)
        if produced is None:
            return
        dst = nodes[d]
        got = _arriving(produced, wants[d], isinstance(nodes[s], nir.Input), isinstance(dst, (nir.Output, nir.NIRGraph)))
        if got is None:
            want = wants[d]
            why = f": {want.misfit(produced)}" if want.mode == "params" else ""
            raise NIRImportError(f"NIR edge {s!r} -> {d!r}{sub}: {s!r} ({type(nodes[s]).__name__}) gives shape "
                                 f"{_fmt(produced)} but {d!r} ({type(dst).__name__}) takes {want}{why}")
        if d in arriving and arriving[d][0] != got:
            first, src = arriving[d]
            raise NIRImportError(f"{_where(d, dst, path)}: the inputs it sums differ in shape: {src!r} gives "
                                 f"{_fmt(first)}, {s!r} gives {_fmt(got)}; expected equal shapes")
        arriving.setdefault(d, (got, s))

    fields: dict[str, dict[str, np.ndarray]] = {}
    for name in order:
        node = nodes[name]
        where = _where(name, node, path)
        if isinstance(node, nir.NIRGraph):
            wants[name] = _accepts(where, node, {})
        else:
            arrays = fields[name] = _check_values(where, node)
            wants[name] = _accepts(where, node, arrays)
        if isinstance(node, nir.Input):
            out[name] = shape_in if shape_in is not None else _declared(node.input_type, "input")
            continue
        for s in into.get(name, ()):
            if (s, name) not in back:
                receive(s, name)
        x = arriving.get(name, (None,))[0]
        if isinstance(node, nir.NIRGraph):
            out[name] = _check(node, supported, path + (name,), x, shapes)
        else:
            out[name] = _output(where, node, x, arrays)
    for s, d in sorted(back):
        receive(s, d)
    for name in order:  # every input shape now known, back edges included
        node, x = nodes[name], arriving.get(name, (None,))[0]
        if isinstance(node, nir.Input):
            x = out[name]
        elif x is not None and isinstance(node, ELEMENTWISE):
            _check_params(_where(name, node, path), node, fields[name], x)
        if shapes is not None:
            shapes[path + (name,)] = x
    return out[outputs[0]]


__all__ = ["accepted_shapes", "align_param", "aligned_shape", "check_graph", "param_fits", "unsupported_message"]
