"""The one dispatch from a neuron family to a kernel implementation.

``backend="torch"`` is the plain-PyTorch reference (autograd defines the gradient).
``"numba"`` runs the fused CPU kernels, ``"triton"`` the fused CUDA kernels.
``"auto"`` picks triton for CUDA tensors and numba for CPU tensors, and the reference for
what the fused kernels do not cover (a surrogate with ``smooth_forward=True``, or a surrogate
class of the user's own, whose derivative only the reference can call).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable, Optional

import torch

from spikelab.kernels import reference

BACKENDS = ("auto", "torch", "numba", "triton")

_REFERENCE: dict[str, Callable] = {
    "lif": reference.lif_sequence,
    "alif": reference.alif_sequence,
    "cuba": reference.cuba_sequence,
    "probabilistic": reference.probabilistic_sequence,
}

# the families each fused backend implements (wrappers in spikelab.kernels.ops)
_FUSED_FAMILIES: dict[str, frozenset[str]] = {
    "numba": frozenset({"lif", "alif", "cuba", "probabilistic"}),
    "triton": frozenset({"lif", "alif", "cuba", "probabilistic"}),
}


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why and what to use instead."""


def check_backend_name(backend: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return backend


def triton_interpreter() -> bool:
    """True when Triton kernels run on CPU tensors through ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_INSTALLED: dict[str, bool] = {}


def _installed(module: str) -> bool:
    if module not in _INSTALLED:
        _INSTALLED[module] = importlib.util.find_spec(module) is not None
    return _INSTALLED[module]


def prepare(family) -> None:
    """Register a built-in family's generated kernels when its neuron is built, so the graph is
    never hashed inside a ``torch.compile`` region (which would break the graph)."""
    if isinstance(family, str) and family in _GENERATED_FAMILIES:
        from spikelab.kernels import ops

        ops._generated_keys()


_GENERATED_FAMILIES = frozenset({"lif", "alif", "cuba", "probabilistic"})


def _fused(family: str, backend: str) -> Callable:
    from spikelab.kernels import ops

    return functools.partial(getattr(ops, f"{family}_sequence"), backend=backend)


def _spec(family, backend: str, device: torch.device, smooth: bool) -> Callable:
    """A neuron written as a spec: its reference, or its generated kernels (chosen by device)."""
    if backend == "torch" or (backend == "auto" and smooth):
        return family.reference
    if backend != "auto":
        _check_fused(backend, device, smooth)
    elif device.type not in ("cpu", "cuda") or not _installed("triton" if device.type == "cuda" else "numba"):
        return family.reference
    from spikelab.kernels import generated

    run = functools.partial(generated.sequence, family.key)
    if backend == "triton" and device.type == "cpu":  # Triton's interpreter (tests without a GPU)
        def run_interpreted(*args, **kwargs):
            with generated.cpu_kernels("triton"):
                return generated.sequence(family.key, *args, **kwargs)
        return run_interpreted
    return run


def resolve(family, backend: str, device: torch.device, smooth: bool = False) -> Callable:
    """The implementation of ``family`` that ``backend`` names for tensors on ``device``.

    ``family`` is a built-in family's name or a spec neuron's :class:`SpecFamily`.
    ``smooth`` says the surrogate's forward is its smooth primitive, which only the
    reference computes.
    """
    check_backend_name(backend)
    if not isinstance(family, str):
        return _spec(family, backend, device, smooth)
    if backend == "torch":
        return _REFERENCE[family]
    if backend == "auto":
        if smooth:
            return _REFERENCE[family]
        preferred = "triton" if device.type == "cuda" else "numba"
        if family in _FUSED_FAMILIES[preferred] and _installed(preferred):
            return _fused(family, preferred)
        return _REFERENCE[family]
    _check_fused(backend, device, smooth)
    if family not in _FUSED_FAMILIES[backend]:
        raise BackendUnavailableError(
            f"backend {backend!r} has no kernel for the {family!r} neuron family in this build; "
            "use backend='torch' (the reference) or 'auto'"
        )
    return _fused(family, backend)


def resolve_block(family, backend: str, device: torch.device, smooth: bool = False) -> Optional[Callable]:
    """The fused kernels of ``family`` when they can also run a layer block (batch norm and
    pooling fused around the neuron, :mod:`spikelab.kernels.blocks`) here; ``None`` when the
    neuron would run on the reference."""
    check_backend_name(backend)
    if smooth or backend == "torch" or device.type not in ("cpu", "cuda"):
        return None
    try:
        impl = resolve(family, backend, device, smooth)
    except BackendUnavailableError:
        return None  # the unfused run raises the error, with its explanation
    reference = _REFERENCE[family] if isinstance(family, str) else family.reference
    if impl == reference:  # == : a spec's reference is a bound method, made anew on each access
        return None
    return impl


def _check_fused(backend: str, device: torch.device, smooth: bool) -> None:
    """Refuse a fused ``backend`` that cannot run here, saying why and what to use instead."""
    if smooth:
        raise BackendUnavailableError(
            f"backend {backend!r}: fused kernels fire with a Heaviside step and compute only the built-in "
            "surrogates' derivatives; a surrogate with smooth_forward=True, or a Surrogate class of your own, "
            "runs on backend='torch' (or 'auto', which falls back to it)"
        )
    if backend == "triton" and device.type != "cuda" and not triton_interpreter():
        raise BackendUnavailableError(
            f"backend 'triton' runs on CUDA tensors, got a tensor on {device}; use backend='numba' or "
            "'auto' on CPU (or set TRITON_INTERPRET=1 to run the Triton kernels in the interpreter)"
        )
    if backend == "numba" and device.type != "cpu":
        raise BackendUnavailableError(
            f"backend 'numba' runs on CPU tensors, got a tensor on {device}; use backend='triton' or 'auto'"
        )
    if not _installed(backend):
        raise BackendUnavailableError(
            f"backend {backend!r} needs the {backend} package, which is not installed; "
            f"`pip install {backend}` or use backend='torch' (the reference) or 'auto'"
        )


__all__ = ["BackendUnavailableError", "check_backend_name", "prepare", "resolve", "resolve_block"]
