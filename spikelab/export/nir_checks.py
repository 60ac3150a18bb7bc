"""Checks of a NIR graph before :func:`~spikelab.export.from_nir` builds anything.

One pass over the nodes and edges of a graph and of its subgraphs: every numeric array is
finite and time constants are positive; the structure runs (edges name known nodes, the graph
has an Input and an Output, every node is reachable, no cycle lacks a neuron or delay to carry
it over a step); shapes agree along every edge. Shapes come from a node's declared type where
the weights do not fix them, from its weights and parameters otherwise. An Input's or Output's
type may carry extra leading (batch) dimensions, as some exporters write them. Each error names
the node or edge (and subgraph) and what was expected.
"""

from __future__ import annotations

import dataclasses
from typing import Collection, Iterator, Optional

import nir
import numpy as np

from spikelab.export.errors import NIRImportError

Shape = Optional[tuple[int, ...]]  # a per-sample shape; None where it is not known

_TIME_CONSTANTS = ("tau", "tau_mem", "tau_syn")
_NEURONS = tuple(getattr(nir, n) for n in ("LIF", "IF", "CubaLIF", "LI", "I", "CubaLI") if hasattr(nir, n))
_ELEMENTWISE = _NEURONS + (nir.Scale, nir.Threshold, nir.Delay)  # one parameter value per neuron
_CONV = (nir.Conv1d, nir.Conv2d)
_POOL = (nir.SumPool2d, nir.AvgPool2d)
#: nodes that hold no state: a cycle made only of them has nothing to carry a value over a step
_STATELESS = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Flatten, nir.Scale, nir.Threshold) + _CONV + _POOL \
    + ((nir.Identity,) if hasattr(nir, "Identity") else ())


def unsupported_message(name: str, node: nir.NIRNode, supported: Collection[type], where: str = "") -> str:
    """The refusal of a node type no importer is registered for."""
    return (f"node {name!r}{where}: NIR node type {type(node).__name__} is not supported; "
            f"supported: {', '.join(sorted(t.__name__ for t in supported))} "
            "(spikelab.export.register_node adds more)")


def check_graph(graph: nir.NIRGraph, supported: Collection[type]) -> Shape:
    """Check ``graph`` (subgraphs included) for import by the importers of the ``supported`` node
    types; returns the per-sample shape of its output (None where unknown).

    Raises:
        NIRImportError: naming the node, edge or subgraph at fault and what was expected.
    """
    return _check(graph, supported, (), None)


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


def _fields(node: nir.NIRNode) -> Iterator[tuple[str, np.ndarray]]:
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
    dimensions free, as an affine map on the last one) or "broadcast" (per-neuron parameters)."""

    dims: tuple[Optional[int], ...]
    mode: str = "exact"

    def fits(self, shape: tuple[int, ...]) -> bool:
        if self.mode == "broadcast":
            try:
                return tuple(np.broadcast_shapes(self.dims, shape)) == tuple(shape)
            except ValueError:
                return False
        if self.mode == "last":
            if len(shape) < len(self.dims):
                return False
            shape = shape[len(shape) - len(self.dims):]
        return len(shape) == len(self.dims) and all(d is None or d == s for d, s in zip(self.dims, shape))

    def __str__(self) -> str:
        if self.mode == "last":
            return f"(..., {', '.join(str(d) for d in self.dims)})"
        if self.mode == "broadcast":
            return f"{_fmt(self.dims)} (or a shape its parameters broadcast to)"
        return _fmt(self.dims)


def _arriving(produced: tuple[int, ...], want: Optional[_Want], from_input: bool, lenient: bool) -> Shape:
    """``produced`` as the destination takes it, or None where it does not fit. An Input's type
    may carry extra leading dimensions (dropped); a graph boundary's (``lenient``) as well."""
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
    arrays = dict(_fields(node))
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


def _param_shape(where: str, arrays: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The one shape the per-neuron parameters of a node broadcast to."""
    try:
        return tuple(np.broadcast_shapes(*(a.shape for a in arrays.values()))) if arrays else ()
    except ValueError:
        shapes = ", ".join(f"{f} {_fmt(a.shape)}" for f, a in arrays.items())
        raise NIRImportError(f"{where}: parameter shapes differ ({shapes}); expected one shape "
                             "(one value per neuron)") from None


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
    if isinstance(node, _ELEMENTWISE):
        return _Want(_param_shape(where, arrays), "broadcast")
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
    if isinstance(node, _ELEMENTWISE):
        p = _param_shape(where, arrays)
        return x if x is not None else (p if int(np.prod(p)) > 1 else None)
    if isinstance(node, nir.Output):
        return x if x is not None else _declared(node.output_type, "output")
    if x is not None and isinstance(node, getattr(nir, "Identity", ())):
        return x
    return _declared(node.output_type, "output")


# ----- graphs -----------------------------------------------------------------------------------------

def _order(nodes: dict, edges: list[tuple[str, str]], inputs: list[str], path: tuple[str, ...]):
    """Depth-first order from the inputs and the edges that close cycles; every node reached."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for s, d in edges:
        succ[s].append(d)
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()
    post: list[str] = []
    for root in inputs:
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                post.append(node)
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    unreached = [n for n in nodes if n not in state]
    if unreached:
        raise NIRImportError(f"NIR nodes {unreached}{_in(path)} cannot be reached from the graph's inputs {inputs}; "
                             "expected every node on a path from an Input node")
    return post[::-1], back


def _instant_loop(nodes: dict, edges: list[tuple[str, str]]) -> Optional[list[str]]:
    """A cycle made only of stateless nodes (nothing carries its value to the next step), or None."""
    succ: dict[str, list[str]] = {}
    for s, d in edges:
        if isinstance(nodes[s], _STATELESS) and isinstance(nodes[d], _STATELESS):
            succ.setdefault(s, []).append(d)
    state: dict[str, int] = {}
    for root in succ:
        if root in state:
            continue
        stack = [(root, iter(succ.get(root, ())))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                names = [n for n, _ in stack]
                return names[names.index(nxt):]
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ.get(nxt, ()))))
    return None


def _check(graph: nir.NIRGraph, supported: Collection[type], path: tuple[str, ...], shape_in: Shape) -> Shape:
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
    order, back = _order(nodes, edges, inputs, path)
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
            raise NIRImportError(f"NIR edge {s!r} -> {d!r}{sub}: {s!r} ({type(nodes[s]).__name__}) gives shape "
                                 f"{_fmt(produced)} but {d!r} ({type(dst).__name__}) takes {wants[d]}")
        if d in arriving and arriving[d][0] != got:
            first, src = arriving[d]
            raise NIRImportError(f"{_where(d, dst, path)}: the inputs it sums differ in shape: {src!r} gives "
                                 f"{_fmt(first)}, {s!r} gives {_fmt(got)}; expected equal shapes")
        arriving.setdefault(d, (got, s))

    for name in order:
        node = nodes[name]
        where = _where(name, node, path)
        if isinstance(node, nir.NIRGraph):
            wants[name] = _accepts(where, node, {})
        else:
            arrays = _check_values(where, node)
            wants[name] = _accepts(where, node, arrays)
        if isinstance(node, nir.Input):
            out[name] = shape_in if shape_in is not None else _declared(node.input_type, "input")
            continue
        for s in into.get(name, ()):
            if (s, name) not in back:
                receive(s, name)
        x = arriving.get(name, (None,))[0]
        if isinstance(node, nir.NIRGraph):
            out[name] = _check(node, supported, path + (name,), x)
        else:
            out[name] = _output(where, node, x, arrays)
    for s, d in sorted(back):
        receive(s, d)
    return out[outputs[0]]


__all__ = ["check_graph", "unsupported_message"]
