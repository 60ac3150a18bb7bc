"""A neuron step as data: :class:`StepGraph` (traced expressions), its hash, and a topological order.

Kept apart from the SymPy derivatives (``symbolic.py``) so that defining or importing a neuron
does not import SymPy; only generating kernels does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

from spikelab.kernels.expr import Expr


@dataclass(frozen=True)
class StepGraph:
    """One neuron step: per-state charge, effective threshold, spike argument, after-spike updates.

    With ``escape`` the argument is a firing probability ``p``: the spike is ``[u < p]`` for a
    uniform ``u`` of the counter-based noise (or ``p`` itself, mean-field), and its gradient
    passes straight through to ``p`` (the surrogate derivative is 1).

    Expressions are over the symbols ``s_<state>`` (previous states), ``x_``, ``p_<param>``,
    ``thr_`` (the threshold option) and, in ``after`` only, ``spike_``.
    """

    name: str
    states: tuple[str, ...]
    fires: int
    params: tuple[str, ...]
    charged: tuple[Expr, ...]
    theta: Expr
    argument: Optional[Expr]
    after: tuple[Optional[Expr], ...]
    escape: bool = False

    def key(self) -> str:
        """A short hash of the step's structure (names and expressions), naming its kernels."""
        text = repr((self.states, self.fires, self.params, self.escape, [canonical(e) for e in self.outputs()]))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def outputs(self) -> list[Optional[Expr]]:
        return [*self.charged, self.theta, self.argument, *self.after]


def canonical(e: Optional[Expr]) -> str:
    """The expression as text with shared nodes numbered (a DAG, not a tree)."""
    if e is None:
        return "-"
    seen: dict[int, int] = {}
    parts: list[str] = []

    def visit(n: Expr) -> str:
        if id(n) in seen:
            return f"#{seen[id(n)]}"
        if n.op in ("sym", "const"):
            return f"{n.op}:{n.value!r}"
        args = [visit(a) for a in n.args]
        seen[id(n)] = len(seen)
        parts.append(f"{n.op}({','.join(args)})")
        return f"#{seen[id(n)]}"

    return visit(e) + "|" + ";".join(parts)


def topological(roots: list[Expr], done: set[int]) -> list[Expr]:
    """Operation nodes reachable from ``roots`` and not in ``done``, each after its arguments."""
    order: list[Expr] = []
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        n, expanded = stack.pop()
        if id(n) in done or n.op in ("sym", "const"):
            continue
        if expanded:
            done.add(id(n))
            order.append(n)
            continue
        stack.append((n, True))
        stack.extend((a, False) for a in reversed(n.args))
    return order


__all__ = ["StepGraph", "canonical", "topological"]
