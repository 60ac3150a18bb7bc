"""Fused layer blocks: batch norm -> neuron -> pooling as one autograd op.

``spikelab::block_forward`` runs a generated neuron family with batch norm applied to its input
inside the kernel (a per-neuron affine; in training, the statistics over time, batch and
plane come from one extra pass over the input) and non-overlapping average/sum pooling
applied to its output inside the kernel (only the pooled spikes are written). Autograd keeps
only the block's input, as the neuron alone does; ``spikelab::block_backward`` reads the
pooled gradient directly, accumulates batch norm's two per-channel sums inside the neuron's
backward and adds the statistics term of the input gradient in one more pass. Batch norm
follows ``torch.nn.functional.batch_norm``: the normalised input is ``x * a + b`` with
``a = weight / sqrt(var + eps)``, ``b = bias - mean * a`` (PyTorch's CPU order), the variance
biased, the statistics over ``[T * B, ..., plane]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from spikelab.kernels import generated
from spikelab.kernels.generated import Block


@dataclass(frozen=True)
class BlockArgs:
    """A block around a neuron on ``x`` ``[T, B, C, *plane]``.

    ``bn``: whether batch norm comes first; ``weight``/``bias`` its affine (``None``: 1 and 0);
    ``batch_stats``: normalise with the batch's statistics (training), else with
    ``running_mean``/``running_var``. ``pool``: ``(KH, KW)`` windows (stride = window, no
    padding; ``KH = 1`` for 1-D pooling), ``None`` for no pooling; each pooled value is the
    window's sum times ``pool_scale``.
    """

    bn: bool = False
    weight: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    running_mean: Optional[Tensor] = None
    running_var: Optional[Tensor] = None
    batch_stats: bool = True
    eps: float = 1e-5
    pool: Optional[tuple[int, int]] = None
    pool_scale: float = 1.0


def geometry(shape: torch.Size, pool: Optional[tuple[int, int]], channels_last: bool = False) -> list[int]:
    """``[C, H, W, KH, KW, CL]`` of a per-step shape ``[B, C, *plane]`` (plane of 0, 1 or 2 dims);
    ``CL`` is 1 when the neurons are in channels-last order ``[B, H, W, C]``, else 0."""
    c = shape[1]
    plane = list(shape[2:])
    if len(plane) > 2:
        raise ValueError(f"fused blocks take [B, C], [B, C, L] or [B, C, H, W] per step, got {tuple(shape)}")
    h, w = (1, 1) if not plane else ((1, plane[0]) if len(plane) == 1 else (plane[0], plane[1]))
    kh, kw = pool if pool is not None else (0, 0)
    return [c, h, w, kh, kw, int(channels_last)]


def pooled_shape(shape: torch.Size, pool: tuple[int, int]) -> tuple[int, ...]:
    """The per-step shape after pooling ``shape`` ``[B, C, *plane]`` by ``pool``."""
    kh, kw = pool
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2] // kw)
    return (shape[0], shape[1], shape[2] // kh, shape[3] // kw)


def _per_neuron(v: Tensor, batch: int, plane: int, cl: int = 0) -> Tensor:
    """A per-channel ``[C]`` vector as one value per neuron ``[B * C * plane]`` (``cl``: in
    channels-last order ``[B * plane * C]``)."""
    if cl:
        return v.view(1, 1, -1).expand(batch, plane, v.shape[0]).reshape(-1).contiguous()
    return v.view(1, -1, 1).expand(batch, v.shape[0], plane).reshape(-1).contiguous()


def _channel_sums(v: Tensor, batch: int, channels: int, cl: int = 0) -> Tensor:
    """Per-channel float64 sums of a per-neuron vector ``[B * C * plane]`` (``cl``: ``[B * plane * C]``)."""
    if cl:
        return v.view(batch, -1, channels).sum((0, 1), dtype=torch.float64)
    return v.view(batch, channels, -1).sum((0, 2), dtype=torch.float64)


def _moments(x: Tensor, channels: int, batch: int, cl: int = 0) -> tuple[Tensor, Tensor]:
    """Batch mean and biased variance per channel of ``x`` ``[T, B * C * plane]`` (``cl``:
    ``[T, B * plane * C]``, CPU only; float64 on CPU, from float64 sums; the input's dtype on a GPU)."""
    count = x.shape[0] * x.shape[1] // channels
    if x.device.type == "cpu":
        from spikelab.kernels.numba.blocks import moments

        s1 = torch.empty(x.shape[1], dtype=torch.float64)
        s2 = torch.empty(x.shape[1], dtype=torch.float64)
        moments(x.detach().numpy(), s1.numpy(), s2.numpy())
        mean = _channel_sums(s1, batch, channels, cl) / count
        var = (_channel_sums(s2, batch, channels, cl) / count - mean * mean).clamp_min(0.0)
        return mean, var
    # on a GPU in the input's dtype (Welford inside): a float64 round trip would be two more
    # kernel launches per block for the same float32 values
    var, mean = torch.var_mean(x.view(x.shape[0] * batch, channels, -1), dim=(0, 2), unbiased=False)
    return mean, var


def _affine(weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(invstd, a, b)`` per channel in the input's dtype (PyTorch's CPU arithmetic order)."""
    invstd = torch.rsqrt(var + eps) if var.dtype == torch.float64 else 1.0 / torch.sqrt(var + eps)
    a = weight * invstd
    return invstd, a, bias - mean * a


def _setup_block(x: Tensor, bn: list[Tensor], batch_stats: bool, eps: float, geo: list[int], pool_scale: float,
                 mean: Optional[Tensor] = None, var: Optional[Tensor] = None):
    """``(block, mean, var, invstd, a, batch)``: the kernel's :class:`Block`, the statistics it
    normalises with, ``1 / sqrt(var + eps)`` and the scale ``a`` per channel, and the batch size
    (the statistics are the given ones, else the batch's or the running ones)."""
    c, h, w, kh, kw, cl = geo
    plane = h * w
    batch = x.shape[1] // (c * plane)
    if not kh:
        pool_geo = (0, 0, 0, 0, 0, 0, 1)
    elif cl and h % kh == 0:
        # channels-last: each band of KH rows is a plane of its own (its windows and cells are
        # contiguous), so a kernel task holds a band, not a whole sample (small batches still
        # split into many tasks, and the backward's history fits its cache budget)
        pool_geo = (kh, w, kh, kw, 1, w // kw, c)
    else:
        pool_geo = (h, w, kh, kw, h // kh, w // kw, c if cl else 1)
    if not bn:
        return Block(geo=pool_geo, pool_scale=pool_scale), None, None, None, None, batch
    weight, bias, running_mean, running_var = bn
    if mean is None:
        if batch_stats:
            mean, var = _moments(x, c, batch, cl)
            mean, var = mean.to(x.dtype), var.to(x.dtype)
        else:
            mean, var = running_mean.to(x.dtype), running_var.to(x.dtype)
    invstd, a, b = _affine(weight.to(x.dtype), bias.to(x.dtype), mean, var, eps)
    block = Block(_per_neuron(a, batch, plane, cl), _per_neuron(b, batch, plane, cl),
                  _per_neuron(mean, batch, plane, cl), pool_geo, pool_scale)
    return block, mean, var, invstd, a, batch


@torch.library.custom_op("spikelab::block_forward", mutates_args=(), device_types=("cpu", "cuda"))
def block_forward(key: str, x: Tensor, states: list[Tensor], params: list[Tensor], noise_key: Tensor,
                  stochastic: bool, reset_code: int, reset_value: float, detach: bool, robust: bool, sg_code: int,
                  sg_alpha: float, bn: list[Tensor], batch_stats: bool, eps: float, geo: list[int],
                  pool_scale: float) -> list[Tensor]:
    return _forward_outputs(key, x, states, params, noise_key, stochastic, reset_code, reset_value, detach, robust,
                            sg_code, sg_alpha, bn, batch_stats, eps, geo, pool_scale)


def _forward_outputs(key: str, x: Tensor, states: list[Tensor], params: list[Tensor], noise_key: Tensor,
                     stochastic: bool, reset_code: int, reset_value: float, detach: bool, robust: bool, sg_code: int,
                     sg_alpha: float, bn: list[Tensor], batch_stats: bool, eps: float, geo: list[int],
                     pool_scale: float) -> list[Tensor]:
    """The forward op's body: ``[out, *new states, mean, var]``."""
    block, mean, var, _, _, batch = _setup_block(x, bn, batch_stats, eps, geo, pool_scale)
    T = x.shape[0]
    _, h, w, kh, kw, _ = geo
    cells = x.shape[1] // (h * w) * (h // kh) * (w // kw) if kh else x.shape[1]
    out = generated._empty((T, cells), x.dtype, x.device)
    new = [torch.empty_like(s) for s in states]
    generated.run_forward(key, x, states, params, noise_key, stochastic, reset_code, reset_value, robust, out, new,
                          block)
    stats = [mean, var] if bn and batch_stats else [x.new_empty(0), x.new_empty(0)]
    return [out, *new, *stats]


@block_forward.register_fake
def _(key, x, states, params, noise_key, stochastic, reset_code, reset_value, detach, robust, sg_code, sg_alpha, bn,
      batch_stats, eps, geo, pool_scale):
    c, h, w, kh, kw, _ = geo
    cells = x.shape[1] // (h * w) * (h // kh) * (w // kw) if kh else x.shape[1]
    stats = [x.new_empty(c), x.new_empty(c)] if bn and batch_stats else [x.new_empty(0), x.new_empty(0)]
    return [x.new_empty((x.shape[0], cells)), *(torch.empty_like(s) for s in states), *stats]


@torch.library.custom_op("spikelab::block_backward", mutates_args=(), device_types=("cpu", "cuda"))
def block_backward(key: str, g_out: Tensor, g_states: list[Tensor], x: Tensor, states: list[Tensor],
                   params: list[Tensor], noise_key: Tensor, stochastic: bool, reset_code: int, reset_value: float,
                   detach: bool, robust: bool, sg_code: int, sg_alpha: float, need_params: bool, bn: list[Tensor],
                   stats: list[Tensor], batch_stats: bool, eps: float, geo: list[int],
                   pool_scale: float) -> list[Tensor]:
    return _backward_outputs(key, g_out, g_states, x, states, params, noise_key, stochastic, reset_code, reset_value,
                             detach, robust, sg_code, sg_alpha, need_params, bn, stats, batch_stats, eps, geo,
                             pool_scale)


def _backward_outputs(key: str, g_out: Tensor, g_states: list[Tensor], x: Tensor, states: list[Tensor],
                      params: list[Tensor], noise_key: Tensor, stochastic: bool, reset_code: int, reset_value: float,
                      detach: bool, robust: bool, sg_code: int, sg_alpha: float, need_params: bool, bn: list[Tensor],
                      stats: list[Tensor], batch_stats: bool, eps: float, geo: list[int],
                      pool_scale: float) -> list[Tensor]:
    """The backward op's body: ``[dx, *d_states, *d_params, d_weight, d_bias]``."""
    given = stats if bn and batch_stats else ()  # the batch's statistics, kept from the forward
    block, mean, _, invstd, a, batch = _setup_block(x, bn, batch_stats, eps, geo, pool_scale, *given)
    dx = generated._empty(x.shape, x.dtype, x.device)
    d_states = [torch.empty_like(s) for s in states]
    d_params = [torch.empty_like(p) for p in params]  # written whole by the _full kernels; unread otherwise
    sums = (x.new_empty(x.shape[1]), x.new_empty(x.shape[1])) if bn else (None, None)
    generated.run_backward(key, g_out, g_states, x, states, params, noise_key, stochastic, reset_code, reset_value,
                           detach, robust, sg_code, sg_alpha, need_params, dx, d_states, d_params, block, sums)
    if not bn:
        return [dx, *d_states, *d_params, x.new_empty(0), x.new_empty(0)]
    c, cl = geo[0], geo[5]
    s_g = _channel_sums(sums[0], batch, c, cl)  # sum of dL/dy
    s_gx = _channel_sums(sums[1], batch, c, cl)  # sum of dL/dy * (x - mean)
    inv64, a64 = invstd.double(), a.double()
    d_weight, d_bias = (s_gx * inv64).to(x.dtype), s_g.to(x.dtype)
    if batch_stats:  # the statistics' own dependence on x: dx += k1 * x + k0 per channel
        count = x.shape[0] * x.shape[1] // c
        k1 = -a64 * inv64 * inv64 * s_gx / count
        k0 = -a64 * s_g / count - k1 * mean.double()
        _add_affine(dx, x, k1.to(x.dtype), k0.to(x.dtype), batch, geo[1] * geo[2], cl)
    return [dx, *d_states, *d_params, d_weight, d_bias]


def _add_affine(dx: Tensor, x: Tensor, k1: Tensor, k0: Tensor, batch: int, plane: int, cl: int = 0) -> None:
    if dx.device.type == "cpu":
        from spikelab.kernels.numba.blocks import add_affine

        add_affine(dx.numpy(), x.detach().numpy(), _per_neuron(k1, batch, plane, cl).numpy(),
                   _per_neuron(k0, batch, plane, cl).numpy())
        return
    shape = (x.shape[0] * batch, k1.shape[0], plane)
    dx.view(shape).add_(x.view(shape) * k1.view(1, -1, 1) + k0.view(1, -1, 1))


@block_backward.register_fake
def _(key, g_out, g_states, x, states, params, noise_key, stochastic, reset_code, reset_value, detach, robust,
      sg_code, sg_alpha, need_params, bn, *args):
    c = bn[0].shape[0] if bn else 0
    return [torch.empty_like(x), *(torch.empty_like(s) for s in states), *(torch.empty_like(p) for p in params),
            x.new_empty(c), x.new_empty(c)]


def _setup(ctx, inputs, output):
    (key, x, states, params, noise_key, stochastic, reset_code, reset_value, detach, robust, sg_code, sg_alpha, bn,
     batch_stats, eps, geo, pool_scale) = inputs
    ns = len(states)
    stats = list(output[1 + ns:])
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*stats)
    ctx.save_for_backward(x, *states, *params, noise_key, *bn, *(stats if bn and batch_stats else []))
    ctx.counts = (ns, len(params), len(bn))
    ctx.config = (stochastic, reset_code, reset_value, detach, robust, sg_code, sg_alpha)
    ctx.block = (batch_stats, eps, geo, pool_scale)
    ctx.key = key
    ctx.cpu_kernels = generated._CPU_KERNELS["name"]
    ctx.needs = (x.requires_grad, [s.requires_grad for s in states], [p.requires_grad for p in params],
                 [t.requires_grad for t in bn[:2]])
    ctx.pooled_shape = output[0].shape
    ctx.eager = False  # EagerBlock sets it: its backward calls the body, not the operator


def _autograd(ctx, grads):
    g_out, g_states = grads[0], grads[1:1 + ctx.counts[0]]
    ns, npar, nbn = ctx.counts
    saved = ctx.saved_tensors
    x, states = saved[0], list(saved[1:1 + ns])
    params, noise_key = list(saved[1 + ns:1 + ns + npar]), saved[1 + ns + npar]
    bn, stats = list(saved[2 + ns + npar:2 + ns + npar + nbn]), list(saved[2 + ns + npar + nbn:])
    need_x, need_states, need_params, need_bn = ctx.needs
    batch_stats, eps, geo, pool_scale = ctx.block
    if g_out is None:
        g_out = x.new_zeros(ctx.pooled_shape)
    g = g_out.contiguous() if geo[3] else generated._as_rows(g_out, x)
    g_states = [torch.zeros_like(s) if gs is None else gs.contiguous() for gs, s in zip(g_states, states)]
    backward = _backward_outputs if ctx.eager else block_backward
    with generated.cpu_kernels(ctx.cpu_kernels):
        result = backward(ctx.key, g, g_states, x, states, params, noise_key, *ctx.config, any(need_params),
                                bn, stats, batch_stats, eps, geo, pool_scale)
    dx, d_states, d_params = result[0], result[1:1 + ns], result[1 + ns:1 + ns + npar]
    d_bn = [result[-2], result[-1]] if bn else []
    d_bn = [d if n else None for d, n in zip(d_bn, need_bn)] + [None] * (nbn - len(d_bn))
    return (None, dx if need_x else None, [d if n else None for d, n in zip(d_states, need_states)],
            [d if n else None for d, n in zip(d_params, need_params)], None, None, None, None, None, None, None,
            None, d_bn, None, None, None, None)


block_forward.register_autograd(_autograd, setup_context=_setup)


class EagerBlock(torch.autograd.Function):
    """``spikelab::block_forward`` and its registered backward without the operator's dispatch, for
    eager calls nobody traces (``generated._untraced``); compilers and tracers see the operator."""

    @staticmethod
    def forward(ctx, key: str, counts: tuple[int, int], options: tuple, block: tuple, x: Tensor, *tensors: Tensor):
        ns, npar = counts
        states, params, bn = list(tensors[:ns]), list(tensors[ns:ns + npar]), list(tensors[ns + npar:])
        inputs = (key, x, states, params, *options, bn, *block)
        outputs = _forward_outputs(*inputs)
        _setup(ctx, inputs, outputs)
        ctx.eager = True
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        r = _autograd(ctx, grads)
        _, dx, d_states, d_params, d_bn = r[0], r[1], r[2], r[3], r[12]
        return (None, None, None, None, dx, *d_states, *d_params, *d_bn)


def run(key: str, x: Tensor, states: list[Tensor], params: list[Tensor], options: tuple, block: BlockArgs,
        shape: torch.Size, channels_last: bool = False) -> tuple[Tensor, list[Tensor], Optional[tuple[Tensor, Tensor]]]:
    """Run the block on ``x`` ``[T, M]`` (per-step ``shape`` ``[B, C, *plane]``; ``options``: the
    neuron's arguments of ``spec_forward`` after the parameters; ``channels_last``: the neurons,
    states and parameters are in ``[B, H, W, C]`` order, Numba kernels only).

    Returns the output ``[T, *per-step shape after pooling]`` (channels-last memory with
    ``channels_last``), the final states and, with batch norm on the batch's statistics, their
    mean and biased variance per channel (for the running statistics; not differentiable)."""
    geo = geometry(shape, block.pool, channels_last)
    bn = bn_tensors(block, shape[1], x)
    config = (bool(block.batch_stats), float(block.eps), geo, float(block.pool_scale))
    tensors = [*states, *params, *bn]
    if generated._untraced(x, tensors):
        outputs = EagerBlock.apply(key, (len(states), len(params)), options, config, x, *tensors)
    else:
        outputs = torch.ops.spikelab.block_forward(key, x, states, params, *options, bn, *config)
    ns = len(states)
    cells = pooled_shape(shape, block.pool) if block.pool is not None else tuple(shape)
    if channels_last:  # rows in [B, H, W, C] order: the same memory seen as [T, B, C, H, W]
        out = outputs[0].view(x.shape[0], cells[0], *cells[2:], cells[1]).permute(0, 1, 4, 2, 3)
    else:
        out = outputs[0].view(x.shape[0], *cells)
    stats = (outputs[1 + ns], outputs[2 + ns]) if block.bn and block.batch_stats else None
    return out, list(outputs[1:1 + ns]), stats


def bn_tensors(block: BlockArgs, channels: int, like: Tensor) -> list[Tensor]:
    """``[weight, bias, running_mean, running_var]`` of the block's batch norm (``[]`` without)."""
    if not block.bn:
        return []
    def given(t: Optional[Tensor], fill: float) -> Tensor:  # made only when absent (each is a launch on a GPU)
        return t if t is not None else like.new_full((channels,), fill)

    return [given(block.weight, 1.0), given(block.bias, 0.0), given(block.running_mean, 0.0),
            given(block.running_var, 1.0)]


__all__ = ["BlockArgs", "run", "block_forward", "block_backward", "geometry", "pooled_shape", "bn_tensors"]
