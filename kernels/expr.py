"""Elementwise functions for neuron equations, and the tracer that records them.

A neuron spec (:class:`spikelab.neurons.Neuron`) writes its per-step equations with Python
arithmetic and the functions here. Each function works on three kinds of values:

* torch tensors: the plain-PyTorch reference (autograd defines the gradient);
* Python numbers;
* :class:`Expr` nodes: the spec is traced once, recording every operation in the order it
  was written, so the generated kernels round exactly as the reference does.

Anything else (``torch.sin`` on a traced value, Python ``if`` on one) fails while tracing,
with a message naming the operation.
"""

from __future__ import annotations

import math
from typing import Any, Union

import torch

Number = Union[int, float]

#: operations a traced expression may hold, with their arity
OPS = {
    "sym": 0, "const": 0,
    "add": 2, "sub": 2, "mul": 2, "div": 2, "pow": 2, "neg": 1,
    "exp": 1, "log": 1, "tanh": 1, "sigmoid": 1, "sqrt": 1, "abs": 1,
    "minimum": 2, "maximum": 2, "where": 3,
    "lt": 2, "le": 2, "gt": 2, "ge": 2,
}
COMPARISONS = ("lt", "le", "gt", "ge")


class TraceError(TypeError):
    """A neuron's equations use something the kernel generator cannot compile."""


class Expr:
    """A node of a traced neuron step: an operation and its argument nodes (a DAG)."""

    __slots__ = ("op", "args", "value")

    def __init__(self, op: str, args: tuple = (), value: Any = None) -> None:
        self.op = op
        self.args = args
        self.value = value  # the symbol's name, or the constant

    # ----- arithmetic, recorded in the order written -------------------------------------------
    def __add__(self, o): return _node("add", self, o)
    def __radd__(self, o): return _node("add", o, self)
    def __sub__(self, o): return _node("sub", self, o)
    def __rsub__(self, o): return _node("sub", o, self)
    def __mul__(self, o): return _node("mul", self, o)
    def __rmul__(self, o): return _node("mul", o, self)
    def __truediv__(self, o): return _node("div", self, o)
    def __rtruediv__(self, o): return _node("div", o, self)
    def __neg__(self): return Expr("neg", (self,))
    def __pos__(self): return self

    def __pow__(self, o):
        if isinstance(o, Expr):
            raise TraceError("x ** y with a traced exponent: use exp(y * log(x))")
        return _node("pow", self, o)

    def __rpow__(self, o):
        raise TraceError("number ** (traced value): use exp(value * log(number))")

    def __lt__(self, o): return _node("lt", self, o)
    def __le__(self, o): return _node("le", self, o)
    def __gt__(self, o): return _node("gt", self, o)
    def __ge__(self, o): return _node("ge", self, o)

    def __bool__(self):
        raise TraceError("a Python `if`, `and`, `or` or `min`/`max` on a neuron value cannot be compiled into a "
                         "kernel; use where(condition, a, b), clamp, minimum or maximum")

    __hash__ = object.__hash__

    def __eq__(self, o):  # noqa: D105 - equality tests are not elementwise operations here
        raise TraceError("== on a neuron value: use where() with <, <=, > or >=")

    def __floordiv__(self, o):
        raise TraceError("// (floor division) is not supported in neuron equations")

    def __mod__(self, o):
        raise TraceError("% (modulo) is not supported in neuron equations")

    def __abs__(self):
        return Expr("abs", (self,))

    def __array__(self, *args, **kwargs):
        raise TraceError("NumPy functions cannot be compiled; use spikelab.neurons' exp, log, tanh, sigmoid, ...")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        raise TraceError(f"torch.{name} cannot be compiled into a kernel; use the functions of spikelab.neurons "
                         f"({', '.join(PUBLIC)}) and + - * / **")

    def __repr__(self) -> str:
        if self.op == "sym":
            return str(self.value)
        if self.op == "const":
            return repr(self.value)
        return f"{self.op}({', '.join(map(repr, self.args))})"


def _const(v: Any) -> Expr:
    if isinstance(v, Expr):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, torch.Tensor):
            raise TraceError("a tensor inside a neuron's equations: declare it in `parameters` instead")
        raise TraceError(f"unsupported value of type {type(v).__name__} in a neuron's equations")
    if not math.isfinite(v):
        raise TraceError(f"non-finite constant {v} in a neuron's equations")
    return Expr("const", (), v)


def _node(op: str, *args: Any) -> Expr:
    args = tuple(_const(a) for a in args)
    values = args[1:] if op == "where" else args
    if any(a.op in COMPARISONS for a in values):
        raise TraceError("a comparison (<, <=, >, >=) is not a number here; use it as the condition of "
                         "where(condition, a, b)")
    return Expr(op, args)


def _traced(*args: Any) -> bool:
    return any(isinstance(a, Expr) for a in args)


def _tensor(*args: Any) -> bool:
    return any(isinstance(a, torch.Tensor) for a in args)


def _unary(op: str, on_tensor, on_number, doc: str):
    """An elementwise function of one value: recorded when traced, else torch's or math's."""
    def fn(x):
        if _traced(x):
            return _node(op, x)
        return on_tensor(x) if _tensor(x) else on_number(x)
    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    return fn


exp = _unary("exp", torch.exp, math.exp, "``e ** x``.")
log = _unary("log", torch.log, math.log, "Natural logarithm.")
tanh = _unary("tanh", torch.tanh, math.tanh, "Hyperbolic tangent.")
sigmoid = _unary("sigmoid", torch.sigmoid, lambda v: 1.0 / (1.0 + math.exp(-v)), "``1 / (1 + exp(-x))``.")
sqrt = _unary("sqrt", torch.sqrt, math.sqrt, "Square root.")


def _extremum(op: str, on_tensors, bound: str, on_numbers, doc: str):
    """Elementwise minimum or maximum: recorded when traced; torch's for tensors (a number
    against a tensor becomes a clamp bound); Python's for numbers."""
    def fn(a, b):
        if _traced(a, b):
            return _node(op, a, b)
        if _tensor(a) and _tensor(b):
            return on_tensors(a, b)
        if _tensor(a, b):
            tensor, number = (a, b) if _tensor(a) else (b, a)
            return torch.clamp(tensor, **{bound: number})
        return on_numbers(a, b)
    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    return fn


minimum = _extremum("minimum", torch.minimum, "max", min, "Elementwise minimum of two values.")
maximum = _extremum("maximum", torch.maximum, "min", max, "Elementwise maximum of two values.")


def clamp(x, min=None, max=None):  # noqa: A002 - torch's names
    """``x`` limited to ``[min, max]`` (either end may be ``None``)."""
    if min is None and max is None:
        raise TraceError("clamp needs min, max or both")
    if _traced(x, min, max):
        out = x
        if min is not None:
            out = _node("maximum", out, min)
        if max is not None:
            out = _node("minimum", out, max)
        return out
    if _tensor(x, min, max):
        if not _tensor(x):
            x = torch.as_tensor(x, dtype=torch.float32)
        return torch.clamp(x, min=min, max=max)
    lo = x if min is None else _py_max(x, min)
    return lo if max is None else _py_min(lo, max)


def _py_max(a, b):
    return a if a >= b else b


def _py_min(a, b):
    return a if a <= b else b


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b`` (the condition a comparison: <, <=, >, >=)."""
    if _traced(condition, a, b):
        if not (isinstance(condition, Expr) and condition.op in COMPARISONS):
            raise TraceError("where: the condition must be a comparison of neuron values (<, <=, >, >=)")
        return _node("where", condition, a, b)
    if _tensor(condition, a, b):
        return torch.where(condition, a, b)
    return a if condition else b


PUBLIC = ("exp", "log", "tanh", "sigmoid", "sqrt", "clamp", "minimum", "maximum", "where")

__all__ = ["Expr", "TraceError", "exp", "log", "tanh", "sigmoid", "sqrt", "clamp", "minimum", "maximum", "where"]
