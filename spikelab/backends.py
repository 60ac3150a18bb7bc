"""The one dispatch from a neuron family to a kernel implementation.

``backend="torch"`` is the plain-PyTorch reference (autograd defines the gradient).
``backend="auto"`` picks the fastest implementation available for the input's device.
Fused Numba (CPU) and Triton (CUDA) kernels register here under the same family names.
"""

from __future__ import annotations

from typing import Callable

import torch

from spikelab.kernels import reference

BACKENDS = ("auto", "torch", "numba", "triton")

_REFERENCE: dict[str, Callable] = {
    "lif": reference.lif_sequence,
    "alif": reference.alif_sequence,
    "cuba": reference.cuba_sequence,
    "probabilistic": reference.probabilistic_sequence,
}

# family -> backend name -> implementation; fused kernels add themselves here.
_FUSED: dict[str, dict[str, Callable]] = {family: {} for family in _REFERENCE}


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why and what to use instead."""


def check_backend_name(backend: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return backend


def register(family: str, backend: str, fn: Callable) -> None:
    """Make ``fn`` the ``backend`` implementation of ``family`` (same signature as the reference)."""
    if family not in _REFERENCE:
        raise ValueError(f"family: unknown neuron family {family!r}; expected one of {sorted(_REFERENCE)}")
    if backend not in ("numba", "triton"):
        raise ValueError(f"backend: only fused backends register, expected 'numba' or 'triton', got {backend!r}")
    _FUSED[family][backend] = fn


def resolve(family: str, backend: str, device: torch.device) -> Callable:
    """The implementation of ``family`` that ``backend`` names for tensors on ``device``."""
    check_backend_name(backend)
    if backend == "torch":
        return _REFERENCE[family]
    fused = _FUSED[family]
    if backend == "auto":
        preferred = "triton" if device.type == "cuda" else "numba"
        return fused.get(preferred, _REFERENCE[family])
    if backend == "triton" and device.type != "cuda":
        raise BackendUnavailableError(
            f"backend 'triton' runs on CUDA tensors only, got a tensor on {device}; "
            "use backend='numba' or 'auto' on CPU"
        )
    if backend not in fused:
        raise BackendUnavailableError(
            f"backend {backend!r} has no kernel for the {family!r} neuron family in this build; "
            "use backend='torch' (the reference) or 'auto'"
        )
    return fused[backend]
