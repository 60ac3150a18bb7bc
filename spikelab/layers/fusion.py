"""Fused layer blocks in a :class:`spikelab.layers.Sequential`: BatchNorm -> neuron -> pooling.

Where a Sequential holds a batch norm followed by a neuron, a neuron followed by average or
sum pooling, or both (Conv/Linear -> BN -> neuron -> pool, the blocks SNN models are made of),
the three run as one fused kernel (:mod:`spikelab.kernels.blocks`): batch norm is applied
inside the neuron's loop, pooling to its output, and the training step saves and moves one
activation instead of three. The result equals running the layers one by one (float
rounding aside); running statistics are updated as ``nn.BatchNorm`` does.

Only exact, unmodified layers are fused: ``BatchNorm1d/2d`` (torch's or spikelab's), a
neuron whose kernels support blocks, ``AvgPool1d/2d`` or ``SumPool2d`` with stride equal to
the window, no padding and floor rounding; none of them may carry hooks (a ``Monitor``).
Anything else, and inputs the kernels cannot take, run unfused (a one-time note goes to the
``spikelab.layers`` debug log).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from spikelab.layers import temporal as T
from spikelab.neurons.base import BaseNeuron
from spikelab.neurons.spec import Neuron

logger = logging.getLogger("spikelab.layers")
_NOTED: set[str] = set()

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, T.BatchNorm1d, T.BatchNorm2d)
_POOLS_2D = (nn.AvgPool2d, T.AvgPool2d, T.SumPool2d)
_POOLS_1D = (nn.AvgPool1d, T.AvgPool1d)
_ENABLED = {"on": True}
_LIBRARY_RUNS = (BaseNeuron._run, Neuron._run)


def _note(cause: str, detail: str) -> None:
    """Log why layers run unfused, once per cause (not per shape)."""
    if cause not in _NOTED:
        _NOTED.add(cause)
        logger.debug("spikelab: running layers unfused: %s", detail)


def _hooked(module: nn.Module) -> bool:
    """Forward or backward hooks, on the module or global: the fused path would bypass them."""
    g = nn.modules.module
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or g._global_forward_hooks or g._global_forward_pre_hooks
                or g._global_backward_hooks or g._global_backward_pre_hooks)


def _batch_norm(module: nn.Module) -> bool:
    return type(module) in _BATCH_NORMS and not _hooked(module)


def _neuron(module: nn.Module) -> bool:
    """A neuron whose forward is the library's (a subclass that overrides it runs as written)."""
    return (isinstance(module, BaseNeuron) and type(module).forward is BaseNeuron.forward
            and type(module).forward_block is BaseNeuron.forward_block
            and type(module)._run in _LIBRARY_RUNS and not _hooked(module))


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def pool_window(module: nn.Module) -> Optional[tuple[tuple[int, int], float, int]]:
    """``((KH, KW), scale, plane dims)`` of a pooling layer the blocks can fuse, else ``None``."""
    if _hooked(module) or getattr(module, "ceil_mode", True):
        return None
    if type(module) in _POOLS_2D:
        kernel, stride, padding, dims = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), \
            _pair(module.padding), 2
    elif type(module) in _POOLS_1D:
        k, s, p = (int(v[0]) if isinstance(v, (tuple, list)) else int(v)
                   for v in (module.kernel_size, module.stride or module.kernel_size, module.padding))
        kernel, stride, padding, dims = (1, k), (1, s), (0, p), 1
    else:
        return None
    if stride != kernel or padding != (0, 0):
        return None
    divisor = getattr(module, "divisor_override", None) or kernel[0] * kernel[1]
    return kernel, 1.0 / divisor, dims


def _bn_args(bn: nn.Module, x: torch.Tensor):
    """The block arguments of batch norm ``bn`` and its running-average factor (PyTorch's rules)."""
    batch_stats = bn.training or bn.running_mean is None
    factor = None
    if bn.training and bn.track_running_stats and bn.running_mean is not None:
        factor = bn.momentum
    return dict(bn=True, weight=bn.weight, bias=bn.bias, eps=float(bn.eps), batch_stats=batch_stats,
                running_mean=None if batch_stats else bn.running_mean,
                running_var=None if batch_stats else bn.running_var), factor


def _fits(x: torch.Tensor, bn: Optional[nn.Module], pool) -> Optional[tuple[str, str]]:
    """``(cause, detail)`` when ``x`` cannot run as a block (``None``: it can). Anything the
    layers themselves would refuse is left to them (they raise their own errors)."""
    if x.dtype not in (torch.float32, torch.float64):
        return "dtype", f"input dtype {x.dtype} (blocks take float32 and float64)"
    if not 3 <= x.ndim <= 5:
        return "ndim", f"input shape {tuple(x.shape)} (blocks take [T, B, C], [T, B, C, L], [T, B, C, H, W])"
    if bn is not None:
        dims = (5,) if isinstance(bn, nn.BatchNorm2d) else (3, 4)  # as each class's _check_input_dim
        if x.ndim not in dims or x.shape[2] != bn.num_features:
            return "bn_shape", f"{type(bn).__name__}({bn.num_features}) on input shape {tuple(x.shape)}"
        if any(p is not None and p.dtype != x.dtype for p in (bn.weight, bn.bias, bn.running_mean)):
            return "bn_dtype", "batch norm parameters of another dtype than the input"
        if (bn.training or bn.running_mean is None) and x.numel() // x.shape[2] <= 1:
            return "bn_count", "one value per channel in training batch norm"
    if pool is not None:
        (kh, kw), _, dims = pool
        if x.ndim != 3 + dims or x.shape[-1] < kw or (dims == 2 and x.shape[-2] < kh):
            return "pool_shape", f"pooling {dims}-D windows {(kh, kw)} on input shape {tuple(x.shape)}"
    return None


def run_block(x: torch.Tensor, bn: Optional[nn.Module], neuron: BaseNeuron, pool: Optional[nn.Module]):
    """Run ``bn`` (or None) -> ``neuron`` -> ``pool`` (or None) fused; ``None`` if it cannot here."""
    if not _ENABLED["on"]:
        return None
    window = pool_window(pool) if pool is not None else None
    why = _fits(x, bn, window)
    if why is not None:
        _note(*why)
        return None
    from spikelab.kernels.blocks import BlockArgs

    sink = getattr(neuron, "rate_sink", None)
    pool_after = None
    if window is not None and sink is not None and _crops(x, window):
        # the firing rate is the pooled mean only when the windows tile the plane
        window, pool_after = None, pool
        if bn is None:
            return None
    kwargs, factor = {}, None
    if bn is not None:
        kwargs, factor = _bn_args(bn, x)
    if window is not None:
        kwargs.update(pool=window[0], pool_scale=window[1])
    result = neuron.forward_block(x, BlockArgs(**kwargs))
    if result is None:
        _note(f"neuron:{type(neuron).__name__}:{neuron.backend}:{x.device.type}",
              f"{type(neuron).__name__} (backend {neuron.backend!r}) runs without fused blocks on {x.device}")
        return None
    out, stats = result
    if bn is not None and bn.training and bn.track_running_stats and bn.running_mean is not None:
        _update_running_stats(bn, stats, x.numel() // x.shape[2], factor)
    if sink is not None:  # mean spike = mean pooled value / (window area * scale)
        rate = out.float().mean()
        sink(rate if window is None else rate / (window[0][0] * window[0][1] * window[1]))
    if pool_after is not None:
        out = pool_after(out) if isinstance(pool_after, T.SequenceModule) else \
            pool_after(out.flatten(0, 1)).unflatten(0, out.shape[:2])
    return out


def _crops(x: torch.Tensor, window) -> bool:
    """Whether pooling ``x`` by ``window`` leaves border neurons outside every window."""
    (kh, kw), _, dims = window
    return x.shape[-1] % kw != 0 or (dims == 2 and x.shape[-2] % kh != 0)


@torch.no_grad()
def _update_running_stats(bn: nn.Module, stats, count: int, momentum: Optional[float]) -> None:
    """``nn.BatchNorm``'s update: batches counted, running averages with the unbiased variance."""
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if momentum is not None:
        factor = momentum
    else:  # cumulative average (nn.BatchNorm: 0 when batches are not counted)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.num_batches_tracked is not None else 0.0
    mean, var = stats
    unbiased = var * (count / (count - 1))
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)


def match(layers: list[nn.Module], i: int) -> Optional[tuple[Optional[nn.Module], BaseNeuron, Optional[nn.Module], int]]:
    """The block starting at ``layers[i]``: ``(bn, neuron, pool, layers used)``, or ``None``."""
    bn = layers[i] if _batch_norm(layers[i]) else None
    j = i + (bn is not None)
    if j >= len(layers) or not _neuron(layers[j]):
        return None
    pool = layers[j + 1] if j + 1 < len(layers) and pool_window(layers[j + 1]) is not None else None
    if bn is None and pool is None:
        return None
    return bn, layers[j], pool, j + 1 + (pool is not None) - i


class unfused:
    """Context manager: run every Sequential layer by layer (for comparisons and debugging)."""

    def __enter__(self) -> "unfused":
        self._old = _ENABLED["on"]
        _ENABLED["on"] = False
        return self

    def __exit__(self, *exc) -> None:
        _ENABLED["on"] = self._old


__all__ = ["run_block", "match", "pool_window", "unfused"]
