"""torch.library custom ops over the fused kernels, with autograd and fake (meta) kernels.

Each neuron family has a forward op and a backward op working on ``[T, M]`` (time, neurons)
with per-neuron parameter vectors ``[M]``. The ``backend`` argument picks the kernel module
(``"numba"`` on CPU, ``"triton"`` on CUDA, or on CPU under ``TRITON_INTERPRET=1``).
Being custom ops with fake implementations, they trace through ``torch.compile`` without
graph breaks. The ``*_sequence`` wrappers at the bottom take the reference backend's
signature, so a neuron calls either interchangeably.
"""

from __future__ import annotations

import importlib
import math
from typing import Optional

import torch
from torch import Tensor

from spikelab.kernels import buffers

RESET_CODES = {"subtract": 0, "hard": 1, "none": 2}

_MODULES: dict[tuple[str, str], object] = {}


def kernel_module(backend: str, family: str):
    """``spikelab.kernels.<backend>.<family>``, imported once."""
    key = (backend, family)
    if key not in _MODULES:
        _MODULES[key] = importlib.import_module(f"spikelab.kernels.{backend}.{family}")
    return _MODULES[key]


def _none_saved(like: Tensor) -> Tensor:
    return like.new_empty((0, 0))


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A large kernel output: from the CPU buffer cache on CPU (see buffers.py)."""
    if device.type == "cpu":
        return buffers.empty(shape, dtype)
    return torch.empty(shape, dtype=dtype, device=device)


def _saved_like(x: Tensor, state: Tensor) -> Tensor:
    """The saved membrane: ``x``'s shape in the state's dtype (float32 for half inputs)."""
    return _empty(x.shape, state.dtype, x.device)


def _fake_saved(x: Tensor, state: Tensor, save: bool) -> Tensor:
    return torch.empty(x.shape, dtype=state.dtype, device=x.device) if save else _none_saved(x)


def _fake_grads(g_out: Tensor, h_save: Tensor, state: Tensor, n: int) -> tuple:
    dx = torch.empty(h_save.shape, dtype=g_out.dtype, device=h_save.device)
    return (dx,) + tuple(torch.empty_like(state) for _ in range(n))


# ----- LIF / IF / PLIF ----------------------------------------------------------------------------

@torch.library.custom_op("spikelab::lif_forward", mutates_args=(), device_types=("cpu", "cuda"))
def lif_forward(x: Tensor, v0: Tensor, beta: Tensor, scale: Tensor, thr: Tensor, reset_code: int,
                reset_value: float, detach: bool, robust: bool, sg_code: int, sg_alpha: float, save: bool,
                backend: str) -> tuple[Tensor, Tensor, Tensor]:
    out = _empty(x.shape, x.dtype, x.device)
    v_out = torch.empty_like(v0)
    h_save = _saved_like(x, v0) if save else _none_saved(x)
    kernel_module(backend, "lif").lif_forward_launch(
        x, v0, beta, scale, thr, reset_code, reset_value, robust, out, v_out, h_save, save)
    return out, v_out, h_save


@lif_forward.register_fake
def _(x, v0, beta, scale, thr, reset_code, reset_value, detach, robust, sg_code, sg_alpha, save, backend):
    return torch.empty_like(x), torch.empty_like(v0), _fake_saved(x, v0, save)


@torch.library.custom_op("spikelab::lif_backward", mutates_args=(), device_types=("cpu", "cuda"))
def lif_backward(g_out: Tensor, g_v: Tensor, h_save: Tensor, v0: Tensor, beta: Tensor, scale: Tensor, thr: Tensor,
                 reset_code: int, reset_value: float, detach: bool, robust: bool, sg_code: int, sg_alpha: float,
                 need_beta: bool, need_scale: bool, need_thr: bool, backend: str
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    dx = _empty(h_save.shape, g_out.dtype, h_save.device)
    dv0, dbeta, dscale, dthr = (torch.empty_like(v0) for _ in range(4))
    kernel_module(backend, "lif").lif_backward_launch(
        g_out, g_v, h_save, v0, beta, scale, thr, reset_code, reset_value, detach, robust, sg_code, sg_alpha,
        need_beta, need_scale, need_thr, dx, dv0, dbeta, dscale, dthr)
    return dx, dv0, dbeta, dscale, dthr


@lif_backward.register_fake
def _(g_out, g_v, h_save, v0, *args):
    return _fake_grads(g_out, h_save, v0, 4)


def _as_rows(g: Optional[Tensor], like: Tensor) -> Tensor:
    """An incoming ``[T, M]`` gradient as a contiguous ``[T or 1, M or 1]`` tensor.

    A broadcast gradient (``out.sum()`` gives a stride-0 scalar) stays compact: the
    kernels broadcast a size-1 dimension themselves instead of reading a materialised copy.
    """
    if g is None:
        return like.new_zeros((1, 1))
    if g.shape[0] > 1 and g.stride(0) == 0:
        g = g[:1]
    if g.shape[1] > 1 and g.stride(1) == 0:
        g = g[:, :1]
    return g.contiguous()


def _state_grad(g: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.contiguous()


def _check_saved(h_save: Tensor, family: str) -> None:
    if h_save.numel() == 0:
        raise RuntimeError(f"spikelab {family} kernel: backward called but the forward ran without saving "
                           "(it was called under no_grad or with no input requiring grad)")


def _lif_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled [T, M] gradient for the unused saved output
    x, v0, beta, scale, thr, reset_code, reset_value, detach, robust, sg_code, sg_alpha, save, backend = inputs
    ctx.save_for_backward(output[2], v0, beta, scale, thr)
    ctx.config = (reset_code, reset_value, detach, robust, sg_code, sg_alpha)
    ctx.backend = backend


def _lif_autograd(ctx, g_out, g_v, _g_h):
    h_save, v0, beta, scale, thr = ctx.saved_tensors
    _check_saved(h_save, "lif")
    need = ctx.needs_input_grad
    dx, dv0, dbeta, dscale, dthr = lif_backward(_as_rows(g_out, h_save), _state_grad(g_v, v0), h_save, v0, beta,
                                                scale, thr, *ctx.config, need[2], need[3], need[4], ctx.backend)
    return (dx, dv0, dbeta if need[2] else None, dscale if need[3] else None, dthr if need[4] else None,
            None, None, None, None, None, None, None, None)


lif_forward.register_autograd(_lif_autograd, setup_context=_lif_setup)


# ----- probabilistic LIF ---------------------------------------------------------------------------

@torch.library.custom_op("spikelab::prob_forward", mutates_args=(), device_types=("cpu", "cuda"))
def prob_forward(x: Tensor, v0: Tensor, beta: Tensor, scale: Tensor, thr: Tensor, temp: Tensor, noise_key: Tensor,
                 stochastic: bool, reset_code: int, reset_value: float, detach: bool, save: bool, backend: str
                 ) -> tuple[Tensor, Tensor, Tensor]:
    out = _empty(x.shape, x.dtype, x.device)
    v_out = torch.empty_like(v0)
    h_save = _saved_like(x, v0) if save else _none_saved(x)
    kernel_module(backend, "probabilistic").prob_forward_launch(
        x, v0, beta, scale, thr, temp, noise_key, stochastic, reset_code, reset_value, out, v_out, h_save, save)
    return out, v_out, h_save


@prob_forward.register_fake
def _(x, v0, *args):
    save = args[-2]
    return torch.empty_like(x), torch.empty_like(v0), _fake_saved(x, v0, save)


@torch.library.custom_op("spikelab::prob_backward", mutates_args=(), device_types=("cpu", "cuda"))
def prob_backward(g_out: Tensor, g_v: Tensor, h_save: Tensor, v0: Tensor, beta: Tensor, scale: Tensor, thr: Tensor,
                  temp: Tensor, noise_key: Tensor, stochastic: bool, reset_code: int, reset_value: float,
                  detach: bool, need_scale: bool, backend: str
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    dx = _empty(h_save.shape, g_out.dtype, h_save.device)
    grads = [torch.empty_like(v0) for _ in range(5)]
    kernel_module(backend, "probabilistic").prob_backward_launch(
        g_out, g_v, h_save, v0, beta, scale, thr, temp, noise_key, stochastic, reset_code, reset_value, detach,
        need_scale, dx, *grads)
    return (dx, *grads)


@prob_backward.register_fake
def _(g_out, g_v, h_save, v0, *args):
    return _fake_grads(g_out, h_save, v0, 5)


def _prob_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled [T, M] gradient for the unused saved output
    x, v0, beta, scale, thr, temp, noise_key, stochastic, reset_code, reset_value, detach, save, backend = inputs
    ctx.save_for_backward(output[2], v0, beta, scale, thr, temp, noise_key)
    ctx.config = (stochastic, reset_code, reset_value, detach)
    ctx.backend = backend


def _prob_autograd(ctx, g_out, g_v, _g_h):
    h_save, v0, beta, scale, thr, temp, noise_key = ctx.saved_tensors
    _check_saved(h_save, "probabilistic")
    need = ctx.needs_input_grad
    grads = prob_backward(_as_rows(g_out, h_save), _state_grad(g_v, v0), h_save, v0, beta, scale, thr, temp,
                          noise_key, *ctx.config, need[3], ctx.backend)
    return tuple(g if n else None for g, n in zip(grads, need[:6])) + (None,) * 7


prob_forward.register_autograd(_prob_autograd, setup_context=_prob_setup)


# ----- wrappers with the reference signature ------------------------------------------------------

def _per_neuron(p: Tensor, shape: torch.Size, dtype: torch.dtype, m: int) -> Tensor:
    """A parameter broadcast to one value per neuron, flat ``[M]``, contiguous, in ``dtype``."""
    return p.to(dtype).expand(shape).contiguous().view(m)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def lif_sequence(x: Tensor, v: Tensor, beta: Tensor, input_scale: Tensor, threshold: Tensor, *, surrogate,
                 reset_mode: str = "subtract", reset_value: float = 0.0, detach_reset: bool = False,
                 threshold_robust: bool = False, trace: Optional[list] = None, backend: str = "numba"):
    """Fused equivalent of :func:`spikelab.kernels.reference.lif_sequence`."""
    xs, (v0,), params, save, shape = _flat(x, (v,), (beta, input_scale, threshold), trace is not None, backend)
    out, v_out, h_save = torch.ops.spikelab.lif_forward(
        xs, v0, *params, RESET_CODES[reset_mode], float(reset_value), bool(detach_reset), bool(threshold_robust),
        surrogate.code, surrogate.alpha, save, backend)
    return _finish(out, x, (v_out,), h_save, shape, trace)


def _flat(x: Tensor, state, params, trace_wanted: bool, backend: str):
    """Flatten ``x`` to ``[T, M]``, the states and parameters to ``[M]``; decide on saving.

    States and parameters are float32 (float64 for float64 input). Triton reads half
    inputs directly; Numba gets them converted to float32.
    """
    steps, shape = x.shape[0], x.shape[1:]
    m = math.prod(shape)
    state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if backend == "numba" and x.dtype not in (torch.float32, torch.float64):
        x = x.to(state_dtype)
    xs = x.contiguous().view(steps, m)
    flat_params = [_per_neuron(p if torch.is_tensor(p) else torch.tensor(p), shape, state_dtype, m).to(x.device)
                   for p in params]
    states = [s.to(state_dtype).expand(shape).contiguous().view(m) for s in state]
    save = trace_wanted or _needs_grad(x, *state, *flat_params)
    return xs, states, flat_params, save, shape


def _finish(out: Tensor, x: Tensor, states, h_save: Tensor, shape, trace: Optional[list]):
    if trace is not None:
        trace.extend(h_save.view(x.shape[0], *shape).to(x.dtype).unbind(0))
    return out.view(x.shape).to(x.dtype), tuple(s.view(shape).to(x.dtype) for s in states)


_KEYS: dict[str, str] = {}


def _generated_keys() -> dict[str, str]:
    """The kernel key of each generated built-in family (registered once, outside any compiled region)."""
    if not _KEYS:
        from spikelab.kernels import families, generated

        _KEYS.update({name: generated.register(make()) for name, make in families.GENERATED.items()})
    return _KEYS


def _generated(family: str, x, states, params, *, surrogate, reset_mode, reset_value, detach_reset,
               threshold_robust, trace, backend):
    """A family whose fused kernels are generated (``spikelab.kernels.families``)."""
    from spikelab.kernels import generated

    if trace is not None:
        raise ValueError("membrane traces are recorded by the reference backend (backend='torch')")
    key = _generated_keys()[family]
    options = dict(surrogate=surrogate, reset_mode=reset_mode, reset_value=reset_value, detach_reset=detach_reset,
                   threshold_robust=threshold_robust)
    if backend == "triton" and x.device.type == "cpu":
        with generated.cpu_kernels("triton"):
            return generated.sequence(key, x, *states, *params, **options)
    return generated.sequence(key, x, *states, *params, **options)


def alif_sequence(x, v, a, beta, input_scale, threshold, rho, adaptation, *, surrogate, reset_mode="subtract",
                  reset_value=0.0, detach_reset=False, threshold_robust=False, trace=None, backend="numba"):
    """Fused equivalent of :func:`spikelab.kernels.reference.alif_sequence` (generated kernels)."""
    return _generated("alif", x, (v, a), (beta, input_scale, rho, adaptation, threshold), surrogate=surrogate,
                      reset_mode=reset_mode, reset_value=reset_value, detach_reset=detach_reset,
                      threshold_robust=threshold_robust, trace=trace, backend=backend)


def cuba_sequence(x, v, i, alpha, beta, threshold, *, surrogate, reset_mode="subtract", reset_value=0.0,
                  detach_reset=False, threshold_robust=False, trace=None, backend="numba"):
    """Fused equivalent of :func:`spikelab.kernels.reference.cuba_sequence` (generated kernels)."""
    return _generated("cuba", x, (v, i), (alpha, beta, threshold), surrogate=surrogate, reset_mode=reset_mode,
                      reset_value=reset_value, detach_reset=detach_reset, threshold_robust=threshold_robust,
                      trace=trace, backend=backend)


def probabilistic_sequence(x, v, beta, input_scale, threshold, temperature, noise_key, *, reset_mode="subtract",
                           reset_value=0.0, detach_reset=False, trace=None, backend="numba"):
    """Fused equivalent of :func:`spikelab.kernels.reference.probabilistic_sequence`."""
    xs, (v0,), params, save, shape = _flat(x, (v,), (beta, input_scale, threshold, temperature),
                                           trace is not None, backend)
    stochastic = noise_key is not None
    key = noise_key if stochastic else torch.zeros(2, dtype=torch.int64)
    out, v_out, h_save = torch.ops.spikelab.prob_forward(
        xs, v0, *params, key, stochastic, RESET_CODES[reset_mode], float(reset_value), bool(detach_reset), save,
        backend)
    return _finish(out, x, (v_out,), h_save, shape, trace)
