"""A neuron step as data (:class:`StepGraph`), and its derivatives for the generated backward.

The forward of a step is the traced expression DAG itself, emitted operation by operation in
the order the spec wrote them (so a generated kernel rounds as the reference does). The
backward comes from SymPy: every expression of the step is turned into a SymPy expression
over the previous states, the input, the parameters, the threshold and the spike ``S``, and
differentiated. With ``G`` the gradient of the step's output and ``A_j`` the gradient of each
new state, the local loss of a step is ``L = G * out + sum_j A_j * new_j``; the spike enters
through the surrogate, ``dL/dz = sg(z) * dL/dS``. ``detach_reset`` drops the firing state's
reset term from ``dL/dS`` (``KEEP = 0``); the reset mode enters as the runtime factors
``SUB`` and ``HARD`` of ``new = h - SUB * theta * S + HARD * (VALUE - h) * S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import sympy

from spikelab.kernels.expr import OPS, Expr, TraceError
from spikelab.kernels.graph import StepGraph, canonical, topological

RUNTIME = ("SUB", "HARD", "VALUE", "KEEP", "G", "SG", "DZ")
TRANSCENDENTAL = ("exp", "log", "tanh", "sigmoid", "sqrt")


# ----- SymPy ------------------------------------------------------------------------------------

class Sigmoid(sympy.Function):
    """``1 / (1 + exp(-x))`` with the stable derivative ``s (1 - s)``."""

    def fdiff(self, argindex=1):
        s = Sigmoid(self.args[0])
        return s * (1 - s)


def to_sympy(e: Expr, symbols: dict[str, sympy.Symbol], memo: Optional[dict] = None):
    memo = {} if memo is None else memo
    if id(e) in memo:
        return memo[id(e)]
    if e.op == "sym":
        out = symbols[e.value]
    elif e.op == "const":
        out = sympy.Integer(e.value) if float(e.value).is_integer() else sympy.Float(e.value, 17)
    else:
        a = [to_sympy(arg, symbols, memo) for arg in e.args]
        out = _SYMPY[e.op](*a)
    memo[id(e)] = out
    return out


def _piece(cond, a, b):
    return sympy.Piecewise((a, cond), (b, True))


_SYMPY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "neg": lambda a: -a,
    "exp": sympy.exp, "log": sympy.log, "tanh": sympy.tanh, "sigmoid": Sigmoid, "sqrt": sympy.sqrt,
    "abs": lambda a: _piece(a >= 0, a, -a),
    "minimum": lambda a, b: _piece(a <= b, a, b), "maximum": lambda a, b: _piece(a >= b, a, b),
    "where": lambda c, a, b: _piece(c, a, b),
    "lt": sympy.Lt, "le": sympy.Le, "gt": sympy.Gt, "ge": sympy.Ge,
}
assert set(_SYMPY) | {"sym", "const"} == set(OPS), "every traced operation has a SymPy form"


@dataclass
class Backward:
    """The backward of one step as SymPy expressions: ``dS`` (gradient reaching the spike) and,
    per input name (``s_<state>``, ``x_``, ``p_<param>``, ``thr_``), its gradient with ``DZ``
    (= ``SG * dS``) as a symbol."""

    d_spike: sympy.Expr
    grads: dict[str, sympy.Expr]

    def reads(self, name: str) -> bool:
        """Does any expression read the symbol ``name``?"""
        return any(sympy.Symbol(name, real=True) in e.free_symbols for e in [self.d_spike, *self.grads.values()])


def symbols_of(graph: StepGraph) -> dict[str, sympy.Symbol]:
    names = [f"s_{s}" for s in graph.states] + ["x_"] + [f"p_{p}" for p in graph.params]
    names += ["thr_", "spike_"] + list(RUNTIME) + [f"A_{s}" for s in graph.states] + [f"c_{s}" for s in graph.states]
    return {n: sympy.Symbol(n, real=True) for n in names}


def inputs_of(graph: StepGraph, with_params: bool) -> list[str]:
    names = [f"s_{s}" for s in graph.states] + ["x_"]
    if with_params:
        names += [f"p_{p}" for p in graph.params] + ["thr_"]
    return names


def backward(graph: StepGraph, robust: bool) -> Backward:
    """Symbolic backward of ``graph`` (``robust``: the threshold-robust firing variant)."""
    sym = symbols_of(graph)
    memo: dict = {}
    c = [to_sympy(e, sym, memo) for e in graph.charged]
    theta = to_sympy(graph.theta, sym, memo)
    h = c[graph.fires]
    if robust:
        z = h / theta - 1
    elif graph.argument is not None:
        z = to_sympy(graph.argument, sym, memo)
    else:
        z = h - theta
    S = sym["spike_"]
    out = theta * S if robust else S
    new = []
    for j, e in enumerate(graph.after):
        if j == graph.fires:
            new.append(h - sym["SUB"] * theta * S + sym["HARD"] * (sym["VALUE"] - h) * S)
        else:
            new.append(c[j] if e is None else to_sympy(e, sym, memo))
    adj = [sym[f"A_{s}"] for s in graph.states]
    d_spike = sym["G"] * sympy.diff(out, S)
    for j, n in enumerate(new):
        term = adj[j] * sympy.diff(n, S)
        d_spike += sym["KEEP"] * term if j == graph.fires else term
    loss = sym["G"] * out + sum(a * n for a, n in zip(adj, new))
    grads = {}
    for q in inputs_of(graph, True):
        grads[q] = sympy.diff(loss, sym[q]) + sym["DZ"] * sympy.diff(z, sym[q])
    # values the replay can record are named, so the reverse pass reads them from the block's
    # buffer instead of recomputing them: the charged values (x then stays unread) and every
    # transcendental function of the forward (f<i>, as the forward's lines name them)
    named = {c[j]: sym[f"c_{s}"] for j, s in enumerate(graph.states) if not c[j].is_Symbol}
    roots = [*graph.charged, graph.theta] + ([graph.argument] if graph.argument is not None and not robust else [])
    for i, node in enumerate(topological(roots, set())):
        if node.op in TRANSCENDENTAL:
            named[to_sympy(node, sym, memo)] = sympy.Symbol(f"f{i}", real=True)
    if named:
        d_spike = d_spike.subs(named)
        grads = {q: g.subs(named) for q, g in grads.items()}
    for q, g in grads.items():
        _check_printable(graph, g, q)
    return Backward(d_spike=d_spike, grads=grads)


_PRINTABLE = (sympy.Symbol, sympy.Number, sympy.Add, sympy.Mul, sympy.Pow, sympy.exp, sympy.log, sympy.tanh,
              Sigmoid, sympy.Piecewise, sympy.core.relational.Relational, sympy.logic.boolalg.Boolean,
              sympy.core.containers.Tuple, sympy.functions.elementary.piecewise.ExprCondPair)


def _check_printable(graph: StepGraph, e, where: str) -> None:
    for node in sympy.preorder_traversal(e):
        if not isinstance(node, _PRINTABLE):
            raise TraceError(f"{graph.name}: the gradient with respect to {where} needs {type(node).__name__}, "
                             "which the kernel generator cannot compile")
        if isinstance(node, (sympy.core.numbers.NaN, sympy.core.numbers.Infinity,
                             sympy.core.numbers.NegativeInfinity, sympy.core.numbers.ComplexInfinity)):
            raise TraceError(f"{graph.name}: the gradient with respect to {where} is not finite ({node})")


__all__ = ["StepGraph", "Backward", "backward", "canonical", "topological", "inputs_of", "Sigmoid", "RUNTIME"]
