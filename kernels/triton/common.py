"""Pieces shared by the Triton kernels: surrogate derivatives, exact division, launching."""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

HALF_PI = math.pi / 2
INV_SQRT_PI = 1 / math.sqrt(math.pi)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def block_for(m: int) -> int:
    """Neurons per program: small enough to give every SM several programs (each program
    walks the whole time axis), large enough to keep loads wide."""
    return 256 if m >= 1 << 17 else 128


def launch(kernel, m: int, *args, **constexprs):
    """Launch ``kernel`` over ``cdiv(m, BLOCK)`` programs. On a GPU, FMA contraction is off so
    that ``beta * v + c * x`` rounds exactly as in the reference (spikes must be equal)."""
    block = block_for(m)
    grid = (triton.cdiv(m, block),)
    options = {} if interpreting() else {"num_warps": 2, "enable_fp_fusion": False}
    kernel[grid](*args, BLOCK=block, **constexprs, **options)


def float_args(*values: float):
    return tuple(float(v) for v in values)


@triton.jit
def div(a, b):
    """Correctly rounded division (the default on GPU is approximate)."""
    return tl.math.div_rn(a, b)


@triton.jit
def surrogate_grad(z, alpha, SG: tl.constexpr):
    """Derivative of surrogate ``SG`` (codes of spikelab.surrogate) at ``z``."""
    if SG == 0:  # atan
        u = 1.5707963267948966 * alpha * z
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
        return alpha * 0.5641895835477563 * tl.exp(-u * u)
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


@triton.jit
def fires(h, th, ROBUST: tl.constexpr):
    """Does the neuron fire: the surrogate's argument is >= 0."""
    return surrogate_arg(h, th, ROBUST) >= 0.0


@triton.jit
def spike_out(fired, th, ROBUST: tl.constexpr):
    """The layer output of a step: 1 per spike, or ``th`` per spike with threshold-robust firing."""
    if ROBUST:
        return tl.where(fired, th, 0.0)
    else:
        return tl.where(fired, 1.0, 0.0)


def grad_strides(g: torch.Tensor) -> tuple[int, int]:
    """Strides of a ``[T or 1, M or 1]`` gradient, 0 along a broadcast (size-1) dimension."""
    return (g.stride(0) if g.shape[0] > 1 else 0, g.stride(1) if g.shape[1] > 1 else 0)


@triton.jit
def surrogate_arg(h, th, ROBUST: tl.constexpr):
    """What the surrogate sees: ``h - th``, or ``h / th - 1`` for threshold-robust firing."""
    if ROBUST:
        return div(h, th) - 1.0
    else:
        return h - th


@triton.jit
def reset_partials(h, th, s, reset_value, RESET: tl.constexpr, DETACH: tl.constexpr):
    """``(dv/dS, dv/dh, dv/dth)`` of the reset ``v(h, S, th)``; ``dv/dS`` is 0 with a detached reset."""
    zero = 0.0 * s
    if RESET == 0:
        dv_ds = -th + zero
        dv_dh = 1.0 + zero
        dv_dth = -s
    elif RESET == 1:
        dv_ds = reset_value - h
        dv_dh = 1.0 - s
        dv_dth = zero
    else:
        dv_ds = zero
        dv_dh = 1.0 + zero
        dv_dth = zero
    if DETACH:
        dv_ds = zero
    return dv_ds, dv_dh, dv_dth


@triton.jit
def fire_backward(g, dv, h, th, s, sg, dv_ds, dv_dh, dv_dth, extra_ds, ROBUST: tl.constexpr):
    """``(dL/dh, dL/dth)`` of one step from the output gradient ``g``, the carried membrane
    gradient ``dv`` and ``extra_ds`` (other paths through the spike, e.g. adaptation)."""
    if ROBUST:
        dz = (g * th + dv * dv_ds + extra_ds) * sg
        dh = div(dz, th) + dv * dv_dh
        dth = dz * (-div(h, th * th)) + dv * dv_dth + g * s
    else:
        dz = (g + dv * dv_ds + extra_ds) * sg
        dh = dz + dv * dv_dh
        dth = -dz + dv * dv_dth
    return dh, dth
