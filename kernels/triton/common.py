"""Pieces the generated Triton kernels share: surrogate derivatives, resets, noise, launching."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import triton
import triton.language as tl

HALF_PI = math.pi / 2
INV_SQRT_PI = 1 / math.sqrt(math.pi)
_F32_MAX = float(np.finfo(np.float32).max)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _fast_nested_calls() -> None:
    """In Triton's interpreter, stop re-patching ``triton.language`` on every device-function call.

    The interpreter patches the language module when a kernel starts and again on every call of
    a ``@triton.jit`` helper inside it (``surrogate_grad``, ``reset_after``, ... once per step):
    each re-patch walks the whole module, about a millisecond, most of a check's time. While a
    kernel runs, the builtins are already patched (``tl.where`` is no longer a Triton builtin),
    so a nested call runs its rewritten body directly; outside a kernel it patches as before.
    Interpreter only: compiled kernels inline helpers and never come here.
    """
    from triton.runtime import interpreter

    cls = interpreter.InterpretedFunction
    if getattr(cls, "_spikelab_fast_calls", False):
        return
    patched_call = cls.__call__

    def call(self, *args, **kwargs):
        if tl.core.is_builtin(tl.where):  # not inside a kernel run: Triton's own path
            return patched_call(self, *args, **kwargs)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # as Triton reports errors in device functions
            raise interpreter.InterpreterError(repr(e)) from e

    cls.__call__ = call
    cls._spikelab_fast_calls = True


if interpreting():
    _fast_nested_calls()


def block_for(m: int) -> int:
    """Neurons per program: small enough to give every SM several programs (each program
    walks the whole time axis), large enough to keep loads wide."""
    return 256 if m >= 1 << 17 else 128


def wide(v: float) -> tuple[float, float, float]:
    """``v`` as three float32-exact parts whose float64 sum ``(hi + mid) + lo`` is ``v`` exactly
    (each part holds the next 24 bits; below about 1e-22 the lower parts underflow and the sum
    is within 1e-44 of ``v``). A compiled kernel receives a Python float as float32, which a
    float64 kernel must not inherit: the generated kernels rebuild the value with ``_scalar``;
    float32 kernels use ``hi``, the value the launcher passed before."""
    v = float(v)
    if not math.isfinite(v) or abs(v) > _F32_MAX:
        return v, 0.0, 0.0
    hi = float(np.float32(v))
    mid = float(np.float32(v - hi))
    return hi, mid, float(np.float32(v - hi - mid))


def launch(kernel, m: int, *args, **constexprs):
    """Launch ``kernel`` over ``cdiv(m, BLOCK)`` programs. On a GPU, FMA contraction is off so
    that ``beta * v + c * x`` rounds exactly as in the reference (spikes must be equal)."""
    block = block_for(m)
    grid = (triton.cdiv(m, block),)
    options = {} if interpreting() else {"num_warps": 2, "enable_fp_fusion": False}
    kernel[grid](*args, BLOCK=block, **constexprs, **options)


@triton.jit
def surrogate_grad(z, alpha, SG: tl.constexpr):
    """Derivative of surrogate ``SG`` (codes of spikelab.surrogate) at ``z``."""
    # constants that float32 cannot hold are made in z's dtype (a literal would be float32)
    if SG == 0:  # atan
        u = tl.full([], 1.5707963267948966, z.dtype) * alpha * z
        return alpha / 2 / (1 + u * u)
    elif SG == 1:  # sigmoid
        s = 1 / (1 + tl.exp(-alpha * z))
        return alpha * s * (1 - s)
    elif SG == 2:  # fast sigmoid
        d = 1 + alpha * tl.abs(z)
        return 1 / (d * d)
    elif SG == 3:  # triangle
        return alpha * tl.maximum(1 - alpha * tl.abs(z), 0.0)
    elif SG == 4:  # rectangle
        return tl.where(tl.abs(z) < 0.5 / alpha, alpha, 0.0)
    elif SG == 5:  # erf
        u = alpha * z
        return alpha * tl.full([], 0.5641895835477563, z.dtype) * tl.exp(-u * u)
    else:  # straight through
        return z * 0 + 1


@triton.jit
def reset_after(h, th, fired, value, RESET: tl.constexpr):
    """Membrane after the reset (0 subtract, 1 hard to ``value``, 2 none)."""
    if RESET == 0:
        return tl.where(fired, h - th, h)
    elif RESET == 1:
        return tl.where(fired, value, h)
    else:
        return h


def grad_strides(g: torch.Tensor) -> tuple[int, int]:
    """Strides of a ``[T or 1, M or 1]`` gradient, 0 along a broadcast (size-1) dimension."""
    return (g.stride(0) if g.shape[0] > 1 else 0, g.stride(1) if g.shape[1] > 1 else 0)


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


@triton.jit
def uniform(seed, counter):
    """``counter`` int64; the same number in [0, 1) as ``reference.counter_uniform``."""
    key = _mix32((counter >> 32) ^ seed)
    bits = _mix32((counter & 0xFFFFFFFF) ^ key)
    return (bits >> 8).to(tl.float32) * 5.960464477539063e-08


__all__ = ["launch", "wide", "surrogate_grad", "reset_after", "grad_strides", "uniform"]
