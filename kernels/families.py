"""The built-in neuron families, written as step graphs: their fused kernels are generated.

Each graph is the family's step written once with the traced operations of
:mod:`spikelab.kernels.expr`, in the same order as its reference in ``reference.py`` (so the
generated kernels round as the reference does). Parameters come in the order of the
reference's arguments, the threshold last.
"""

from __future__ import annotations

from spikelab.kernels.expr import Expr
from spikelab.kernels.graph import StepGraph


def _s(name: str) -> Expr:
    return Expr("sym", (), name)


def lif() -> StepGraph:
    """LIF / IF / PLIF: ``h = beta v + c x`` (``c = 1`` or ``1 - beta``); PLIF's ``beta`` is computed
    from its learned parameter outside the kernel."""
    v, x, thr = _s("s_v"), _s("x_"), _s("thr_")
    beta, scale = _s("p_beta"), _s("p_input_scale")
    return StepGraph(name="LIF", states=("v",), fires=0, params=("beta", "input_scale"),
                     charged=(beta * v + scale * x,), theta=thr, argument=None, after=(None,))


def probabilistic_lif() -> StepGraph:
    """Escape-noise LIF: ``h = beta v + c x``, fires with probability ``sigmoid((h - threshold) / temperature)``."""
    v, x, thr = _s("s_v"), _s("x_"), _s("thr_")
    beta, scale, temp = _s("p_beta"), _s("p_input_scale"), _s("p_temperature")
    h = beta * v + scale * x
    p = Expr("sigmoid", ((h - thr) / temp,))
    return StepGraph(name="ProbabilisticLIF", states=("v",), fires=0, params=("beta", "input_scale", "temperature"),
                     charged=(h,), theta=thr, argument=p, after=(None,), escape=True)


def adaptive_lif() -> StepGraph:
    """Bellec's adaptive LIF: ``h = beta v + c x``, ``theta = threshold + adaptation a``,
    ``a <- rho a + (1 - rho) S``."""
    v, a, x, thr, spike = _s("s_v"), _s("s_a"), _s("x_"), _s("thr_"), _s("spike_")
    beta, scale, rho, adapt = _s("p_beta"), _s("p_input_scale"), _s("p_rho"), _s("p_adaptation")
    return StepGraph(name="AdaptiveLIF", states=("v", "a"), fires=0, params=("beta", "input_scale", "rho", "adaptation"),
                     charged=(beta * v + scale * x, a), theta=thr + adapt * a, argument=None,
                     after=(None, rho * a + (1.0 - rho) * spike))


def current_lif() -> StepGraph:
    """Current-based LIF: ``i <- alpha i + x``, ``h = beta v + i``."""
    v, i, x, thr = _s("s_v"), _s("s_i"), _s("x_"), _s("thr_")
    alpha, beta = _s("p_alpha"), _s("p_beta")
    current = alpha * i + x
    return StepGraph(name="CurrentLIF", states=("v", "i"), fires=0, params=("alpha", "beta"),
                     charged=(beta * v + current, current), theta=thr, argument=None, after=(None, None))


GENERATED = {"lif": lif, "alif": adaptive_lif, "cuba": current_lif, "probabilistic": probabilistic_lif}

__all__ = ["lif", "probabilistic_lif", "adaptive_lif", "current_lif", "GENERATED"]
