"""Surrogate spike functions: a Heaviside step forward, a smooth derivative backward.

Every surrogate is a small object with one sharpness parameter ``alpha`` and two pure
functions of ``x = v - threshold`` (or ``v / threshold - 1`` for threshold-robust firing):

* ``primitive(x)``: a smooth step that the surrogate stands for (used only when
  ``smooth_forward=True``, for gradient checks and soft spikes);
* ``derivative(x)``: ``d primitive / dx``, the gradient the spike passes backward.

Slope semantics (``alpha`` larger means a sharper, narrower surrogate):

=================  ======================================================  =========  ========
name               derivative                                              peak       integral
=================  ======================================================  =========  ========
``atan``           ``alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)``         alpha/2    1
``sigmoid``        ``alpha * sig(alpha x) * (1 - sig(alpha x))``            alpha/4    1
``fast_sigmoid``   ``1 / (1 + alpha * |x|) ** 2`` (SuperSpike)              1          2/alpha
``triangle``       ``alpha * max(0, 1 - alpha * |x|)``                     alpha      1
``rectangle``      ``alpha`` if ``|x| < 1 / (2 alpha)`` else 0             alpha      1
``erf``            ``alpha / sqrt(pi) * exp(-(alpha x) ** 2)``             alpha/vpi  1
``straight_through``  ``1`` everywhere                                     1          n/a
=================  ======================================================  =========  ========

``atan`` (alpha=2) and ``fast_sigmoid`` match snnTorch's ``surrogate.atan`` and
``surrogate.fast_sigmoid(slope=alpha)``; ``atan``, ``sigmoid``, ``erf`` and ``rectangle``
match SpikingJelly's surrogates with the same ``alpha``.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch

__all__ = [
    "Surrogate",
    "ATan",
    "Sigmoid",
    "FastSigmoid",
    "SuperSpike",
    "Triangle",
    "Rectangle",
    "Erf",
    "StraightThrough",
    "get",
    "available",
    "spike",
]


class Surrogate:
    """Base class: subclasses define ``primitive`` and ``derivative`` and a default alpha."""

    name: str = ""
    default_alpha: float = 1.0
    code: int  # a built-in surrogate's stable id in the fused kernels (see ``in_kernels``)

    def __init__(self, alpha: float | None = None, smooth_forward: bool = False) -> None:
        alpha = self.default_alpha if alpha is None else alpha
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
            raise TypeError(f"surrogate {self.name!r}: alpha must be a number, got {type(alpha).__name__}")
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"surrogate {self.name!r}: alpha must be a finite positive number, got {alpha}")
        self.alpha = float(alpha)
        self.smooth_forward = bool(smooth_forward)

    def primitive(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Spike (Heaviside, ``x >= 0``) with this surrogate's gradient."""
        return _SpikeFunction.apply(x, self)

    def __repr__(self) -> str:
        smooth = ", smooth_forward=True" if self.smooth_forward else ""
        return f"{type(self).__name__}(alpha={self.alpha:g}{smooth})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.alpha == self.alpha  # type: ignore[attr-defined]
            and other.smooth_forward == self.smooth_forward  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.alpha, self.smooth_forward))

    @property
    def in_kernels(self) -> bool:
        """Whether the fused kernels compute this surrogate's derivative: only the built-in classes
        themselves. A subclass of your own (or one overriding a built-in's ``derivative``) runs on
        the reference backend, which calls its ``derivative``."""
        return type(self) in _KERNEL_CLASSES


class ATan(Surrogate):
    """Arc-tangent surrogate (Fang et al. 2021); the snnTorch and SpikingJelly default."""

    name, default_alpha, code = "atan", 2.0, 0

    def primitive(self, x):
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5

    def derivative(self, x):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x) ** 2)


class Sigmoid(Surrogate):
    """Logistic surrogate: the derivative of ``sigmoid(alpha x)``."""

    name, default_alpha, code = "sigmoid", 4.0, 1

    def primitive(self, x):
        return torch.sigmoid(self.alpha * x)

    def derivative(self, x):
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1 - s)


class FastSigmoid(Surrogate):
    """SuperSpike / fast sigmoid (Zenke & Ganguli 2018): ``1 / (1 + alpha |x|)^2``, peak 1."""

    name, default_alpha, code = "fast_sigmoid", 25.0, 2

    def primitive(self, x):
        return x / (1 + self.alpha * x.abs()) + 0.5

    def derivative(self, x):
        return 1 / (1 + self.alpha * x.abs()) ** 2


SuperSpike = FastSigmoid


class Triangle(Surrogate):
    """Triangular window of half-width ``1/alpha`` and unit area."""

    name, default_alpha, code = "triangle", 1.0, 3

    def primitive(self, x):
        a = self.alpha
        xc = x.clamp(-1 / a, 1 / a)
        return 0.5 + a * xc - 0.5 * a * a * xc * xc.abs()

    def derivative(self, x):
        return self.alpha * (1 - self.alpha * x.abs()).clamp_min(0)


class Rectangle(Surrogate):
    """Rectangular window of width ``1/alpha`` and height ``alpha`` (unit area)."""

    name, default_alpha, code = "rectangle", 1.0, 4

    def primitive(self, x):
        return (self.alpha * x + 0.5).clamp(0, 1)

    def derivative(self, x):
        return self.alpha * (x.abs() < 0.5 / self.alpha).to(x.dtype)


class Erf(Surrogate):
    """Gaussian window: the derivative of ``(1 + erf(alpha x)) / 2``."""

    name, default_alpha, code = "erf", 2.0, 5

    def primitive(self, x):
        return 0.5 * (1 + torch.erf(self.alpha * x))

    def derivative(self, x):
        return self.alpha / math.sqrt(math.pi) * torch.exp(-((self.alpha * x) ** 2))


class StraightThrough(Surrogate):
    """Straight-through estimator: the gradient passes unchanged (``alpha`` is unused)."""

    name, default_alpha, code = "straight_through", 1.0, 6

    def primitive(self, x):
        return x + 0.5

    def derivative(self, x):
        return torch.ones_like(x)


_REGISTRY: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (ATan, Sigmoid, FastSigmoid, Triangle, Rectangle, Erf, StraightThrough)
}
_KERNEL_CLASSES = frozenset(_REGISTRY.values())
_ALIASES = {"superspike": "fast_sigmoid", "ste": "straight_through", "rect": "rectangle", "triangular": "triangle"}


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(_REGISTRY)


SurrogateLike = Union[str, Surrogate]


def get(surrogate: SurrogateLike, alpha: float | None = None) -> Surrogate:
    """Resolve a surrogate given by name (``"atan"``) or as an object (returned as is)."""
    if isinstance(surrogate, Surrogate):
        if alpha is not None:
            raise ValueError("surrogate: pass alpha either in the surrogate object or by name, not both")
        return surrogate
    if isinstance(surrogate, str):
        key = surrogate.lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in _REGISTRY:
            raise ValueError(f"surrogate: unknown surrogate {surrogate!r}; expected one of {available()}")
        return _REGISTRY[key](alpha)
    raise TypeError(
        f"surrogate: expected a name (one of {available()}) or a spikelab.surrogate.Surrogate, "
        f"got {type(surrogate).__name__}"
    )


class _SpikeFunction(torch.autograd.Function):
    """Heaviside forward (``x >= 0``), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        if surrogate.smooth_forward:
            return surrogate.primitive(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


def spike(x: torch.Tensor, surrogate: SurrogateLike = "atan") -> torch.Tensor:
    """Functional spike: ``H(x)`` forward with ``surrogate``'s derivative backward."""
    return get(surrogate)(x)


SpikeFn = Callable[[torch.Tensor], torch.Tensor]
