"""Source text of the fused Numba and Triton kernels of a :class:`~spikelab.kernels.symbolic.StepGraph`.

Both dialects share one layout. Forward: one pass over time, every state in a local (Numba:
a chunk's small arrays; Triton: registers), output spikes written, nothing saved. Backward:
the input ``x`` is what autograd keeps (one float per neuron-step, as the hand-written kernels
keep ``h``); the backward replays the forward of its chunk to record the states before each
step, then walks time in reverse, recomputing each step's spike argument, the surrogate
derivative and the generated gradient expressions. Forward expressions are emitted node by
node in the traced order (same rounding as the reference); gradient expressions go through
SymPy's common-subexpression elimination.

Variants are separate functions (``*_plain`` / ``*_robust`` firing; ``*_fast`` without
parameter gradients / ``*_full``): Numba and Triton compile only those that run.
"""

from __future__ import annotations

import math
import re

import numpy as np
import sympy

from spikelab.kernels.expr import Expr, TraceError
from spikelab.kernels.generated import block_suffix
from spikelab.kernels.graph import StepGraph, topological
from spikelab.kernels.symbolic import Sigmoid, backward, inputs_of


_F32_MAX = float(np.finfo(np.float32).max)


class Dialect:
    """How one language writes constants, functions and selects."""

    name = ""

    def __init__(self) -> None:
        self.constants: dict[float, str] = {}

    def const(self, v: float) -> str:
        raise NotImplementedError

    def call(self, fn: str, *a: str) -> str:
        raise NotImplementedError

    def select(self, c: str, a: str, b: str) -> str:
        raise NotImplementedError

    def div(self, a: str, b: str) -> str:
        return f"({a} / {b})"

    def logic(self, op: str, parts: list[str]) -> str:
        raise NotImplementedError

    # shared ------------------------------------------------------------------------------------
    def pow_const(self, a: str, k: float) -> str:
        """``a ** k`` the way torch computes a tensor to a scalar power."""
        if k == 2:
            return f"({a} * {a})"
        if k == 3:
            return f"({a} * {a} * {a})"
        if k == 1:
            return a
        if k == 0.5:
            return self.call("sqrt", a)
        if k == -1:
            return self.div(self.const(1.0), a)
        if k == -2:
            return self.div(self.const(1.0), f"({a} * {a})")
        if k == -0.5:
            return self.div(self.const(1.0), self.call("sqrt", a))
        return self.call("powc", a, self.const(k))


class NumbaDialect(Dialect):
    name = "numba"
    _FN = {"exp": "fexp", "log": "math.log", "tanh": "math.tanh", "sqrt": "math.sqrt", "abs": "abs",
           "minimum": "min", "maximum": "max"}

    def const(self, v: float) -> str:
        v = float(v)
        if v not in self.constants:
            self.constants[v] = f"K{len(self.constants)}"
        return self.constants[v]

    def call(self, fn: str, *a: str) -> str:
        if fn == "sigmoid":
            one = self.const(1.0)
            return f"({one} / ({one} + fexp(-{a[0]})))"
        if fn == "powc":
            return f"({a[0]} ** {a[1]})"
        return f"{self._FN[fn]}({', '.join(a)})"

    def select(self, c: str, a: str, b: str) -> str:
        return f"({a} if {c} else {b})"

    def logic(self, op: str, parts: list[str]) -> str:
        if op == "not":
            return f"(not {parts[0]})"
        return "(" + f" {op} ".join(parts) + ")"


class TritonDialect(Dialect):
    """Divisions and square roots correctly rounded (``_div``, ``_sqrt``: the GPU's defaults are
    approximate in float32); ``F64`` is the kernels' float64 flag."""

    name = "triton"
    _FN = {"exp": "tl.exp", "log": "tl.log", "abs": "tl.abs", "minimum": "tl.minimum", "maximum": "tl.maximum"}

    def __init__(self) -> None:
        super().__init__()
        self._wide: dict[str, str] = {}  # emitted text of a float64-exact constant -> its literal

    def const(self, v: float) -> str:
        """A literal; one that float32 cannot hold exactly is built in float64 when ``F64``: a
        compiled kernel types a Python float literal as float32, rounding it before it meets a
        float64 block (Triton's interpreter keeps it double, so only a GPU showed this)."""
        literal = repr(float(v))
        if not math.isfinite(v) or abs(v) > _F32_MAX or float(np.float32(v)) == float(v):
            return literal
        text = f"(tl.full([], {literal}, tl.float64) if F64 else {literal})"
        self._wide[text] = literal
        return text

    def pow_const(self, a: str, k: float) -> str:
        if float(k).is_integer() and 0 < abs(k) <= 16:  # exact for negative bases, as torch's pow
            product = "(" + " * ".join([a] * int(abs(k))) + ")"
            return product if k > 0 else self.div(self.const(1.0), product)
        return super().pow_const(a, k)

    def call(self, fn: str, *a: str) -> str:
        if fn == "powc":
            return f"tl.exp({a[1]} * tl.log({a[0]}))"
        if fn in ("tanh", "sigmoid", "sqrt"):
            return f"_{fn}({a[0]}, F64)"
        return f"{self._FN[fn]}({', '.join(a)})"

    def select(self, c: str, a: str, b: str) -> str:
        return f"tl.where({c}, {a}, {b})"

    def div(self, a: str, b: str) -> str:
        return f"_div({self._block(a)}, {self._block(b)}, F64)"

    def _block(self, a: str) -> str:
        """A literal as a block of the step's shape and dtype (``div_rn`` takes tensors)."""
        if a in self._wide:
            return f"tl.full(x_.shape, {self._wide[a]}, x_.dtype)"
        try:
            float(a)
        except ValueError:
            return a
        return f"tl.full(x_.shape, {a}, x_.dtype)"

    def logic(self, op: str, parts: list[str]) -> str:
        if op == "not":
            return f"(~{parts[0]})"
        return "(" + (" & " if op == "and" else " | ").join(parts) + ")"


# ----- forward: the traced DAG, node by node ------------------------------------------------------

_BINARY = {"add": "+", "sub": "-", "mul": "*", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _dag_lines(nodes: list[Expr], names: dict[int, str], d: Dialect, prefix: str) -> list[str]:
    lines = []
    for n in nodes:
        a = [_ref(arg, names, d) for arg in n.args]
        if n.op in _BINARY:
            text = f"({a[0]} {_BINARY[n.op]} {a[1]})"
        elif n.op == "div":
            text = d.div(a[0], a[1])
        elif n.op == "neg":
            text = f"(-{a[0]})"
        elif n.op == "pow":
            text = d.pow_const(a[0], float(n.args[1].value))
        elif n.op == "where":
            text = d.select(a[0], a[1], a[2])
        else:
            text = d.call(n.op, *a)
        name = f"{prefix}{len(names)}"
        names[id(n)] = name
        lines.append(f"{name} = {text}")
    return lines


def _ref(n: Expr, names: dict[int, str], d: Dialect) -> str:
    if n.op == "sym":
        return n.value
    if n.op == "const":
        return d.const(n.value)
    return names[id(n)]


def forward_lines(g: StepGraph, d: Dialect, robust: bool) -> tuple[list[str], dict[int, str]]:
    """Lines defining ``c_<state>``, ``theta_`` and ``z_`` from the previous states and ``x_``."""
    names: dict[int, str] = {}
    roots = [*g.charged, g.theta] + ([g.argument] if g.argument is not None and not robust else [])
    lines = _dag_lines(topological(roots, set()), names, d, "f")
    for s, e in zip(g.states, g.charged):
        lines.append(f"c_{s} = {_ref(e, names, d)}")
    lines.append(f"theta_ = {_ref(g.theta, names, d)}")
    h = f"c_{g.states[g.fires]}"
    if robust:
        lines.append(f"z_ = {d.div(h, 'theta_')} - {d.const(1.0)}")
    elif g.argument is not None:
        lines.append(f"z_ = {_ref(g.argument, names, d)}")
    else:
        lines.append(f"z_ = {h} - theta_")
    return lines, names


def after_lines(g: StepGraph, d: Dialect, names: dict[int, str]) -> list[str]:
    """Lines defining ``n_<state>`` (non-firing states after the spike ``spike_``)."""
    roots = [e for e in g.after if e is not None]
    done = set(names)
    lines = _dag_lines(topological(roots, done), names, d, "a")
    for j, (s, e) in enumerate(zip(g.states, g.after)):
        if j != g.fires:
            lines.append(f"n_{s} = {_ref(e, names, d) if e is not None else f'c_{s}'}")
    return lines


# ----- backward: SymPy expressions, after common-subexpression elimination -------------------------

def _sym(e, d: Dialect) -> str:
    if isinstance(e, sympy.Symbol):
        return e.name
    if isinstance(e, sympy.Number):
        return d.const(float(e))
    if isinstance(e, sympy.Add):
        return "(" + " + ".join(_sym(a, d) for a in e.args) + ")"
    if isinstance(e, sympy.Mul):
        num, den, sign = [], [], ""
        for a in e.args:
            if a == -1:
                sign = "-" if not sign else ""
            elif isinstance(a, sympy.Pow) and a.exp.is_number and a.exp < 0:
                den.append(_sym(a.base ** -a.exp, d))
            else:
                num.append(_sym(a, d))
        top = " * ".join(num) if num else d.const(1.0)
        text = d.div(f"({top})", "(" + " * ".join(den) + ")") if den else f"({top})"
        return f"(-{text})" if sign else text
    if isinstance(e, sympy.Pow):
        if not e.exp.is_number:
            raise TraceError(f"gradient needs a power with a non-constant exponent: {e}")
        return d.pow_const(_sym(e.base, d), float(e.exp))
    if isinstance(e, (sympy.exp, sympy.log, sympy.tanh, Sigmoid)):
        fn = {sympy.exp: "exp", sympy.log: "log", sympy.tanh: "tanh", Sigmoid: "sigmoid"}[type(e)]
        return d.call(fn, _sym(e.args[0], d))
    if isinstance(e, sympy.Piecewise):
        text = _sym(e.args[-1].expr, d)
        if e.args[-1].cond != sympy.true:  # undefined outside the conditions: 0 there
            text = d.select(_sym(e.args[-1].cond, d), text, d.const(0.0))
        for pair in reversed(e.args[:-1]):
            text = d.select(_sym(pair.cond, d), _sym(pair.expr, d), text)
        return text
    if isinstance(e, sympy.core.relational.Relational):
        return f"({_sym(e.lhs, d)} {e.rel_op} {_sym(e.rhs, d)})"
    if isinstance(e, sympy.And):
        return d.logic("and", [_sym(a, d) for a in e.args])
    if isinstance(e, sympy.Or):
        return d.logic("or", [_sym(a, d) for a in e.args])
    if isinstance(e, sympy.Not):
        return d.logic("not", [_sym(e.args[0], d)])
    if isinstance(e, sympy.ITE):  # if a then b else c, as logic: (a and b) or (not a and c)
        a, b, c = (_sym(x, d) for x in e.args)
        return d.logic("or", [d.logic("and", [a, b]), d.logic("and", [d.logic("not", [a]), c])])
    if e == sympy.true:
        return "True"
    if e == sympy.false:
        return "False"
    raise TraceError(f"cannot compile {type(e).__name__} in a gradient expression: {e}")


def sympy_lines(exprs: dict[str, sympy.Expr], d: Dialect, prefix: str) -> list[str]:
    """``name = expr`` lines for ``exprs`` with shared subexpressions computed once."""
    names = list(exprs)
    symbols = sympy.numbered_symbols(prefix)
    replacements, reduced = sympy.cse([exprs[n] for n in names], symbols=symbols, optimizations="basic")
    lines = [f"{s.name} = {_sym(e, d)}" for s, e in replacements]
    lines += [f"{n} = {_sym(e, d)}" for n, e in zip(names, reduced)]
    return lines


def backward_lines(g: StepGraph, d: Dialect, robust: bool, with_params: bool) -> tuple[list[str], set[str]]:
    """Lines defining ``DS_`` (from the spike ``spike_``, ``G``, ``A_<state>``), ``DZ = DS_ * SG`` and
    ``g_<input>`` for every input (previous states, ``x_``, and with ``with_params`` parameters, ``thr_``);
    and the names of the symbols they read."""
    bw = backward(g, robust)
    grads = {f"g_{q}": bw.grads[q] for q in inputs_of(g, with_params)}
    lines = sympy_lines({"DS_": bw.d_spike}, d, "q")
    lines.append("DZ = DS_ * SG")
    lines += sympy_lines(grads, d, "r")
    reads = {str(sym) for e in [bw.d_spike, *grads.values()] for sym in e.free_symbols}
    return lines, reads


# ----- whole modules --------------------------------------------------------------------------------

def _indent(lines: list[str], n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in lines)


def numba_source(g: StepGraph) -> str:
    """A Python module with ``forward_{plain,robust}`` and ``backward_{plain,robust}_{fast,full}``."""
    parts = [f'"""Generated by spikelab from the {g.name} neuron spec; do not edit (regenerated on change)."""',
             "import math", "import numba as nb", "import numpy as np", "from numba import prange",
             "from spikelab.kernels.numba.common import NoAliasCompiler, grad_row, reset_row, surrogate_row, typed",
             "from spikelab.kernels.numba.blocks import pool_row, unpool_row",
             "from spikelab.kernels.numba.fastmath import exp as fexp",
             "from spikelab.kernels.numba.noise import uniform", ""]
    for robust in (False, True):
        parts.append(_numba_forward(g, robust))
        for with_params in (False, True):
            parts.append(_numba_backward(g, robust, with_params))
    return "\n\n".join(parts) + "\n"


def _state_args(g: StepGraph, prefix: str) -> list[str]:
    return [f"{prefix}{s}" for s in g.states]


def _param_args(g: StepGraph, prefix: str) -> list[str]:
    return [f"{prefix}{p}" for p in g.params] + [f"{prefix}thr"]


def _numba_loads(g: StepGraph, state_src: str) -> list[str]:
    loads = [f"s_{s} = {state_src}{s}[k]" for s in g.states]
    loads += [f"p_{p} = P_{p}[k]" for p in g.params] + ["thr_ = P_thr[k]", "x_ = xt[k]"]
    return loads


def _pool_constants(pool: bool) -> list[str]:
    """The pooling window's plane and scale, in the variants that pool (dead code elsewhere)."""
    return ["plane = max(1, geo[0] * geo[1] * geo[6])", "PS = typed(x, pool_scale)"] if pool else []


def _noise_counter(g: StepGraph) -> list[str]:
    """The escape noise's counter at step ``t`` (only escape-noise families draw noise)."""
    return ["base = (first_step + t) * M + lo"] if g.escape else []


def _numba_constants(d: NumbaDialect) -> list[str]:
    return [f"{name} = typed(x, {value!r})" for value, name in d.constants.items()]


def _numba_spike(g: StepGraph, d: NumbaDialect, counter: str) -> list[str]:
    """Lines defining ``fired`` and ``spike_`` from ``z_``."""
    one, zero = d.const(1.0), d.const(0.0)
    if g.escape:  # z_ is the firing probability
        return [f"fired = uniform(seed, {counter}) < z_",
                f"spike_ = ({one} if fired else {zero}) if stochastic else z_"]
    return ["fired = z_ >= " + zero, f"spike_ = {one} if fired else {zero}"]


def _numba_reset(g: StepGraph, d: NumbaDialect) -> str:
    """The firing state after the reset (selects for unit spikes; the reference's arithmetic for
    escape-noise neurons, whose mean-field spike is fractional)."""
    f = g.states[g.fires]
    if not g.escape:
        return f"ST_{f}[k] = reset_row(c_{f}, theta_, fired, reset_code, VALUE)"
    one = d.const(1.0)
    return (f"ST_{f}[k] = (c_{f} - theta_ * spike_) if reset_code == 0 else ((c_{f} * ({one} - spike_) + VALUE * "
            f"spike_) if reset_code == 1 else c_{f})")


# Fused blocks (kernels/numba/blocks.py) are separate functions ``*_bn``, ``*_pool``, ``*_bn_pool``:
# branches that pick an input or gradient row inside the time loop keep LLVM from vectorising
# the step (measured: the plain backward ran 2-3x slower with them).
BLOCK_VARIANTS = ((False, False), (True, False), (False, True), (True, True))


def _block_setup(bn: bool) -> list[str]:
    return ["SC = bn_scale[lo:hi]", "SH = bn_shift[lo:hi]"] if bn else []


def _affine_load(lines: list[str], bn: bool) -> list[str]:
    """The per-neuron lines with the input normalised as it is loaded (batch norm's affine)."""
    return [("x_ = xt[k] * SC[k] + SH[k]" if line == "x_ = xt[k]" else line) for line in lines] if bn else lines


def _numba_tasks(name: str, args: list[str]) -> str:
    """``{name}_tasks``: kernel ``name``'s chunks on Numba's thread pool. The kernel itself is
    serial over a range of chunks: a ``prange`` loop around its whole body took two to four
    times as long to compile (measured: a LIF backward 6-9 s against 2 s), and only this
    wrapper needs the parallel compiler."""
    return f"""@nb.njit(parallel=True, cache=True, nogil=True)
def {name}_tasks(nchunks, {', '.join(args)}):
    for c in prange(nchunks):
        first = np.int64(c)  # prange's index is unsigned: an int64 keeps the kernel's one compiled signature
        {name}(first, first + 1, {', '.join(args)})
"""


def _numba_forward(g: StepGraph, robust: bool) -> str:
    d = NumbaDialect()
    d.const(1.0), d.const(0.0)
    fwd, names = forward_lines(g, d, robust)
    aft = after_lines(g, d, names)
    zero = d.const(0.0)
    out = f"theta_ if fired else {zero}" if robust else "spike_"
    body = _numba_loads(g, "ST_") + fwd + _numba_spike(g, d, "base + k") + [f"ot[k] = {out}"] + aft
    body += [_numba_reset(g, d)]
    body += [f"ST_{s}[k] = n_{s}" for j, s in enumerate(g.states) if j != g.fires]
    args = ["x"] + _state_args(g, "s0_") + _param_args(g, "a_")
    args += ["reset_code", "reset_value", "seed", "first_step", "stochastic", "out"] + _state_args(g, "so_")
    args += ["chunk", "bn_scale", "bn_shift", "geo", "pool_scale"]
    finish = [f"so_{s}[lo:hi] = ST_{s}" for s in g.states]
    sources = []
    for bn, pool in BLOCK_VARIANTS:
        setup = [f"ST_{s} = s0_{s}[lo:hi].copy()" for s in g.states] + _block_setup(bn)
        setup += [f"P_{p} = a_{p}[lo:hi]" for p in g.params] + ["P_thr = a_thr[lo:hi]"]
        setup += ["orow = np.empty(n, x.dtype)"] if pool else []
        row = ["xt = x[t, lo:hi]", "ot = orow" if pool else "ot = out[t, lo:hi]"]
        row += _noise_counter(g)
        pooled = ["pool_row(orow, out, t, lo // plane, hi // plane, geo, PS)"] if pool else []
        name = f"forward_{'robust' if robust else 'plain'}{block_suffix(bn, pool)}"
        sources.append(_numba_tasks(name, args))
        sources.append(f"""@nb.njit(cache=True, nogil=True, error_model="numpy", pipeline_class=NoAliasCompiler)
def {name}(c_lo, c_hi, {', '.join(args)}):
    T, M = x.shape
    VALUE = typed(x, reset_value)
{_indent(_pool_constants(pool), 4)}
{_indent(_numba_constants(d), 4)}
    for c in range(c_lo, c_hi):
        lo = c * chunk
        hi = min(lo + chunk, M)
        n = hi - lo
{_indent(setup, 8)}
        for t in range(T):
{_indent(row, 12)}
            for k in range(n):
{_indent(_affine_load(body, bn), 16)}
{_indent(pooled, 12)}
{_indent(finish, 8)}
""")
    return "\n\n".join(sources)


def _numba_backward(g: StepGraph, robust: bool, with_params: bool) -> str:
    d = NumbaDialect()
    one, zero = d.const(1.0), d.const(0.0)
    fwd, names = forward_lines(g, d, robust)
    aft = after_lines(g, d, names)
    bwd, reads = backward_lines(g, d, robust, with_params)
    # the replay records only what the reverse pass reads: the previous states and charged values
    # its gradient expressions use, and every spike argument
    prev = [s for s in g.states if f"s_{s}" in reads]
    kept = [s for s in g.states if f"c_{s}" in reads]
    nodes = sorted(r for r in reads if re.fullmatch(r"f\d+", r))  # recorded transcendental values
    record = [f"C_{s}[t, k] = c_{s}" for s in kept] + [f"R_{r}[t, k] = {r}" for r in nodes]
    replay = [f"H_{s}[t, k] = ST_{s}[k]" for s in prev]
    replay += _numba_loads(g, "ST_") + fwd + ["Z[t, k] = z_"] + record
    replay += _numba_spike(g, d, "base + k") + aft
    replay += [_numba_reset(g, d)]
    replay += [f"ST_{s}[k] = n_{s}" for j, s in enumerate(g.states) if j != g.fires]
    loads = [f"s_{s} = H_{s}[t, k]" for s in prev] + [f"c_{s} = C_{s}[t, k]" for s in kept]
    loads += [f"{r} = R_{r}[t, k]" for r in nodes]
    loads += [f"p_{p} = P_{p}[k]" for p in g.params] + ["thr_ = P_thr[k]", "x_ = xt[k]"]
    if g.escape:
        grad_pass = loads + ["z_ = zt[k]"] + _numba_spike(g, d, "base + k") + ["G = gt[k]", f"SG = {one}"]
    else:
        grad_pass = loads + [f"spike_ = {one} if zt[k] >= {zero} else {zero}", "G = gt[k]", "SG = sgrow[k]"]
    grad_pass += [f"A_{s} = ADJ_{s}[k]" for s in g.states] + bwd
    grad_pass += [f"ADJ_{s}[k] = g_s_{s}" for s in g.states]
    if with_params:
        grad_pass += [f"ACC_{p}[k] += g_p_{p}" for p in g.params] + ["ACC_thr[k] += g_thr_"]
    args = ["g_out"] + _state_args(g, "gs_") + ["x"] + _state_args(g, "s0_") + _param_args(g, "a_")
    args += ["reset_code", "reset_value", "seed", "first_step", "stochastic", "detach", "sg_code", "sg_alpha",
             "chunk", "dx"]
    args += _state_args(g, "ds_") + _param_args(g, "dp_")
    args += ["bn_scale", "bn_shift", "bn_mean", "bn_sum", "bn_dot", "geo", "pool_scale"]
    accs = [f"ACC_{p} = np.zeros(n, x.dtype)" for p in g.params] + ["ACC_thr = np.zeros(n, x.dtype)"]
    # with batch norm, g_x_ is the gradient of the normalised input: its two sums, then d/dx
    bn_grad = ["A1[k] += g_x_", "A2[k] += g_x_ * (xr[k] - MU[k])", "dxt[k] = g_x_ * SC[k]"]
    sources = []
    for bn, pool in BLOCK_VARIANTS:
        setup = [f"ST_{s} = s0_{s}[lo:hi].copy()" for s in g.states]
        setup += [f"H_{s} = np.empty((T, n), x.dtype)" for s in prev] + ["Z = np.empty((T, n), x.dtype)"]
        setup += [f"C_{s} = np.empty((T, n), x.dtype)" for s in kept]
        setup += [f"R_{r} = np.empty((T, n), x.dtype)" for r in nodes]
        setup += [f"P_{p} = a_{p}[lo:hi]" for p in g.params] + ["P_thr = a_thr[lo:hi]"] + _block_setup(bn)
        after_replay = [f"ADJ_{s} = gs_{s}[lo:hi].copy()" for s in g.states] + (accs if with_params else [])
        after_replay += ["sgrow = np.empty(n, x.dtype)", "grow = np.empty(n, x.dtype)"]
        if bn:
            after_replay += ["MU = bn_mean[lo:hi]", "A1 = np.zeros(n, x.dtype)", "A2 = np.zeros(n, x.dtype)"]
        finish = [f"ds_{s}[lo:hi] = ADJ_{s}" for s in g.states]
        if with_params:
            finish += [f"dp_{p}[lo:hi] = ACC_{p}" for p in g.params] + ["dp_thr[lo:hi] = ACC_thr"]
        finish += ["bn_sum[lo:hi] = A1", "bn_dot[lo:hi] = A2"] if bn else []
        replay_row = ["xt = x[t, lo:hi]"]
        rev_row = ["xr = x[t, lo:hi]", "xt = xr"]
        rev_row.append("gt = unpool_row(g_out, t, lo // plane, hi // plane, geo, PS, grow)" if pool
                       else "gt = grad_row(g_out, t, lo, hi, grow)")
        rev_row += ["dxt = dx[t, lo:hi]", "zt = Z[t]"] + _noise_counter(g)
        if not g.escape:
            rev_row.append("surrogate_row(sg_code, sg_alpha, zt, sgrow)")
        name = (f"backward_{'robust' if robust else 'plain'}_{'full' if with_params else 'fast'}"
                f"{block_suffix(bn, pool)}")
        sources.append(_numba_tasks(name, args))
        sources.append(f"""@nb.njit(cache=True, nogil=True, error_model="numpy", pipeline_class=NoAliasCompiler)
def {name}(c_lo, c_hi, {', '.join(args)}):
    T, M = x.shape
    VALUE = typed(x, reset_value)
    SUB = typed(x, 1.0 if reset_code == 0 else 0.0)
    HARD = typed(x, 1.0 if reset_code == 1 else 0.0)
    KEEP = typed(x, 0.0 if detach else 1.0)
{_indent(_pool_constants(pool), 4)}
{_indent(_numba_constants(d), 4)}
    for c in range(c_lo, c_hi):
        lo = c * chunk
        hi = min(lo + chunk, M)
        n = hi - lo
{_indent(setup, 8)}
        for t in range(T):
{_indent(replay_row + _noise_counter(g), 12)}
            for k in range(n):
{_indent(_affine_load(replay, bn), 16)}
{_indent(after_replay, 8)}
        for t in range(T - 1, -1, -1):
{_indent(rev_row, 12)}
            for k in range(n):
{_indent(_affine_load(grad_pass, bn) + (bn_grad if bn else ["dxt[k] = g_x_"]), 16)}
{_indent(finish, 8)}
""")
    return "\n\n".join(sources)


_TRITON_HEADER = '''
@triton.jit
def _div(a, b, F64: tl.constexpr):
    if F64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _scalar(hi, mid, lo, F64: tl.constexpr):
    """A float launch argument sent as three float32 parts (a compiled kernel takes a Python
    float as float32): their exact float64 sum when F64, else the float32 value itself."""
    if F64:
        return (tl.cast(hi, tl.float64) + tl.cast(mid, tl.float64)) + tl.cast(lo, tl.float64)
    else:
        return hi


@triton.jit
def _sqrt(a, F64: tl.constexpr):
    if F64:
        return tl.sqrt(a)
    else:
        return tl.math.sqrt_rn(a)


@triton.jit
def _escape_reset(h, s, th, value, RESET: tl.constexpr):
    """The reference's reset arithmetic (a mean-field spike is fractional)."""
    if RESET == 0:
        return h - th * s
    elif RESET == 1:
        return h * (1.0 - s) + value * s
    else:
        return h


@triton.jit
def _tanh(a, F64: tl.constexpr):
    e = tl.exp(-2.0 * tl.abs(a))
    r = _div(1.0 - e, 1.0 + e, F64)
    return tl.where(a < 0, -r, r)


@triton.jit
def _sigmoid(a, F64: tl.constexpr):
    return _div(tl.full(a.shape, 1.0, a.dtype), 1.0 + tl.exp(-a), F64)
'''


def triton_source(g: StepGraph) -> str:
    """A Python module with Triton kernels ``forward_*`` and ``backward_*`` (same variants as Numba)."""
    parts = [f'"""Generated by spikelab from the {g.name} neuron spec; do not edit (regenerated on change)."""',
             "import triton", "import triton.language as tl",
             "from spikelab.kernels.triton.common import reset_after, surrogate_grad, uniform", _TRITON_HEADER]
    for robust in (False, True):
        parts.append(_triton_forward(g, robust))
        for with_params in (False, True):
            parts.append(_triton_backward(g, robust, with_params))
    return "\n\n".join(parts) + "\n"


# float launch arguments that a float64 kernel needs to float64 precision: each travels as
# ``name_hi, name_mid, name_lo`` (spikelab.kernels.triton.common.wide on the host) and is rebuilt
# first thing
WIDE_SCALARS = ("reset_value", "VALUE", "sg_alpha", "pool_scale")
WIDE_PARTS = ("hi", "mid", "lo")


def _widened(args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` with each wide scalar split in three, and the lines that rebuild them."""
    out, lines = [], []
    for a in args:
        if a in WIDE_SCALARS:
            parts = [f"{a}_{p}" for p in WIDE_PARTS]
            out += parts
            lines.append(f"{a} = _scalar({', '.join(parts)}, F64)")
        else:
            out.append(a)
    return out, lines


def _triton_param_loads(g: StepGraph) -> list[str]:
    loads = [f"p_{p} = tl.load(a_{p} + offs, mask=mask, other=1.0)" for p in g.params]
    return loads + ["thr_ = tl.load(a_thr + offs, mask=mask, other=1.0)"]


def _triton_spike(g: StepGraph) -> list[str]:
    """Lines defining ``fired`` and ``spike_`` from ``z_`` (for escape noise, ``z_`` is the probability)."""
    if not g.escape:
        return ["fired = z_ >= 0.0", "spike_ = tl.where(fired, 1.0, 0.0)"]
    return ["fired = uniform(seed, counter) < z_", "if STOCHASTIC:", "    spike_ = tl.where(fired, 1.0, 0.0)",
            "else:", "    spike_ = z_"]


def _triton_reset(g: StepGraph) -> str:
    f = g.states[g.fires]
    if g.escape:
        return f"s_{f} = tl.where(mask, _escape_reset(c_{f}, spike_, theta_, reset_value, RESET), s_{f})"
    return f"s_{f} = tl.where(mask, reset_after(c_{f}, theta_, fired, reset_value, RESET), s_{f})"


# fused blocks: batch norm as a per-neuron affine of the input (BN), non-overlapping pooling of
# the output (POOL: each lane adds its spike to its cell; the host zero-fills the output)
_TRITON_BLOCK_ARGS = ["bn_scale", "bn_shift", "H", "W", "KH", "KW", "OH", "OW", "pool_scale"]
_TRITON_BLOCK_SETUP = [
    "if BN:", "    SC = tl.load(bn_scale + offs, mask=mask, other=1.0)",
    "    SH = tl.load(bn_shift + offs, mask=mask, other=0.0)",
    "if POOL:", "    plane_ = offs // (H * W)", "    rest_ = offs % (H * W)", "    oy_ = (rest_ // W) // KH",
    "    ox_ = (rest_ % W) // KW", "    pooled = mask & (oy_ < OH) & (ox_ < OW)",
    "    cell = ((plane_ * OH + oy_) * OW + ox_).to(tl.int64)", "    Mp = (M // (H * W)) * OH * OW",
]


def _triton_forward(g: StepGraph, robust: bool) -> str:
    d = TritonDialect()
    fwd, names = forward_lines(g, d, robust)
    aft = after_lines(g, d, names)
    f = g.states[g.fires]
    out = "tl.where(fired, theta_, 0.0)" if robust else "spike_"
    body = ["if HIST:"] + [f"    tl.store(hist + tl.cast(TM, tl.int64) * {j} + row, s_{s}, mask=mask)" for j, s in enumerate(g.states)]
    body += ["x_ = tl.load(x + row, mask=mask, other=0.0).to(s_%s.dtype)" % f, "if BN:", "    x_ = x_ * SC + SH"]
    body += fwd + _triton_spike(g) + [
        "if not HIST:", "    if POOL:",
        f"        tl.atomic_add(out + prow + cell, ({out}).to(out.dtype.element_ty) * pool_scale, mask=pooled)",
        "        prow += Mp", "    else:",
        f"        tl.store(out + row, ({out}).to(out.dtype.element_ty), mask=mask)"] + aft
    body += [_triton_reset(g)]
    body += [f"s_{s} = tl.where(mask, n_{s}, s_{s})" for j, s in enumerate(g.states) if j != g.fires]
    body += ["row += M", "counter += M"]
    setup = [f"s_{s} = tl.load(s0_{s} + offs, mask=mask, other=0.0)" for s in g.states] + _triton_param_loads(g)
    setup += _TRITON_BLOCK_SETUP
    finish = [f"tl.store(so_{s} + offs, s_{s}, mask=mask)" for s in g.states]
    args = ["x"] + _state_args(g, "s0_") + _param_args(g, "a_") + ["out"] + _state_args(g, "so_") + ["hist"]
    args += ["T", "M", "TM", "reset_value", "seed", "first_row"] + _TRITON_BLOCK_ARGS
    args += ["RESET: tl.constexpr", "HIST: tl.constexpr", "STOCHASTIC: tl.constexpr", "F64: tl.constexpr",
             "BN: tl.constexpr", "POOL: tl.constexpr", "BLOCK: tl.constexpr"]
    name = f"forward_{'robust' if robust else 'plain'}"
    args, rebuilt = _widened(args)
    setup = rebuilt + setup
    return f"""@triton.jit
def {name}({', '.join(args)}):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
{_indent(setup, 4)}
    row = offs.to(tl.int64)
    prow = tl.cast(0, tl.int64)
    counter = offs.to(tl.int64) + first_row
    for t in range(T):
{_indent(body, 8)}
{_indent(finish, 4)}
"""


def _triton_backward(g: StepGraph, robust: bool, with_params: bool) -> str:
    d = TritonDialect()
    fwd, _ = forward_lines(g, d, robust)
    bwd, _ = backward_lines(g, d, robust, with_params)
    f = g.states[g.fires]
    ns = len(g.states)
    x_load = "x_ = tl.load(x + row, mask=mask, other=0.0).to(s_%s.dtype)" % f
    rev = [f"s_{s} = tl.load(hist + tl.cast(TM, tl.int64) * {j} + row, mask=mask, other=0.0)" for j, s in enumerate(g.states)]
    rev += [x_load, "if BN:", "    xr_ = x_", "    x_ = x_ * SC + SH"] + fwd
    if g.escape:
        rev += _triton_spike(g) + ["SG = 1.0"]
    else:
        rev += ["SG = surrogate_grad(z_, sg_alpha, SG_CODE)", "spike_ = tl.where(z_ >= 0.0, 1.0, 0.0)"]
    rev += ["if POOL:", "    G = tl.load(g_out + prow + cell, mask=pooled, other=0.0).to(s_%s.dtype) * pool_scale" % f,
            "    prow -= Mp", "else:", "    G = tl.load(g_out + g_off, mask=mask, other=0.0).to(s_%s.dtype)" % f] + bwd
    rev += ["if BN:", "    BN1 += tl.where(mask, g_x_, 0.0)", "    BN2 += tl.where(mask, g_x_ * (xr_ - MU), 0.0)",
            "    g_x_ = g_x_ * SC", "tl.store(dx + row, g_x_.to(dx.dtype.element_ty), mask=mask)"]
    rev += [f"A_{s} = tl.where(mask, g_s_{s}, 0.0)" for s in g.states]
    if with_params:
        rev += [f"ACC_{p} += tl.where(mask, g_p_{p}, 0.0)" for p in g.params] + \
               ["ACC_thr += tl.where(mask, g_thr_, 0.0)"]
    rev += ["row -= M", "g_off -= gstride_t", "counter -= M"]
    setup = _triton_param_loads(g) + _TRITON_BLOCK_SETUP
    setup += ["if BN:", "    MU = tl.load(bn_mean + offs, mask=mask, other=0.0)"]
    adj = [f"A_{s} = tl.load(gs_{s} + offs, mask=mask, other=0.0)" for s in g.states]
    zero = f"tl.full(A_{f}.shape, 0.0, A_{f}.dtype)"  # tl.zeros_like here broke sm_90 compilation
    accs = [f"ACC_{p} = {zero}" for p in g.params + ("thr",)] if with_params else []
    accs += ["if POOL:", "    prow = tl.cast(T - 1, tl.int64) * Mp", "if BN:", f"    BN1 = {zero}", f"    BN2 = {zero}"]
    finish = [f"tl.store(ds_{s} + offs, A_{s}, mask=mask)" for s in g.states]
    if with_params:
        finish += [f"tl.store(dp_{p} + offs, ACC_{p}, mask=mask)" for p in g.params]
        finish += ["tl.store(dp_thr + offs, ACC_thr, mask=mask)"]
    finish += ["if BN:", "    tl.store(bn_sum + offs, BN1, mask=mask)", "    tl.store(bn_dot + offs, BN2, mask=mask)"]
    args = ["g_out", "g_last", "gstride_t", "gstride_m"] + _state_args(g, "gs_") + ["x"]
    args += _param_args(g, "a_") + ["hist", "dx"] + _state_args(g, "ds_") + _param_args(g, "dp_")
    args += ["T", "M", "TM", "last_row", "reset_value", "SUB", "HARD", "VALUE", "KEEP", "sg_alpha", "seed",
             "first_row"] + _TRITON_BLOCK_ARGS + ["bn_mean", "bn_sum", "bn_dot"]
    args += ["RESET: tl.constexpr", "SG_CODE: tl.constexpr", "STOCHASTIC: tl.constexpr", "F64: tl.constexpr",
             "BN: tl.constexpr", "POOL: tl.constexpr", "BLOCK: tl.constexpr"]
    name = f"backward_{'robust' if robust else 'plain'}_{'full' if with_params else 'fast'}"
    assert ns >= 1
    args, rebuilt = _widened(args)
    setup = rebuilt + setup
    return f"""@triton.jit
def {name}({', '.join(args)}):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
{_indent(setup + adj + accs, 4)}
    row = offs.to(tl.int64) + last_row
    g_off = offs.to(tl.int64) * gstride_m + g_last
    counter = offs.to(tl.int64) + first_row + last_row
    for i in range(T):
{_indent(rev, 8)}
{_indent(finish, 4)}
"""


__all__ = ["numba_source", "triton_source", "forward_lines", "after_lines", "backward_lines"]
