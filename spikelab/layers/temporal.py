"""Time-distributed stateless layers: each applies its torch counterpart to every step of ``[T, B, ...]``.

Time and batch are folded into one dimension (``[T * B, ...]``) for one big call, so a
convolution runs as one batched kernel and BatchNorm takes its statistics over time and batch.
``step(x)`` applies the same layer to one step ``[B, ...]``.
"""

from __future__ import annotations

import torch
from torch import nn

from spikelab._checks import check_float_tensor
from spikelab.kernels import sparse_linear
from spikelab.layers.pooling import FastAvgPool2d
from spikelab.sequence import SequenceModule


class TimeDistributed(nn.Module, SequenceModule):
    """Apply any stateless ``module`` to each time step of ``[T, B, ...]`` (time folded into batch)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]")
        return self.module(x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class _Folded(SequenceModule):
    """Mixin: fold ``[T, B, ...]`` into ``[T * B, ...]`` around the torch layer's forward."""

    seq_layout = "[T, B, ...]"
    seq_ndim = 3

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, f"{type(self).__name__} input", self.seq_ndim, self.seq_layout)
        if x_seq.ndim != self.seq_ndim and self.seq_ndim > 3:
            raise ValueError(f"{type(self).__name__} input: expected shape {self.seq_layout}, "
                             f"got shape {tuple(x_seq.shape)}")
        return super().forward(x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])  # type: ignore[misc]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)  # type: ignore[misc]


class _SparseInputLinear(nn.Linear):
    """``nn.Linear`` whose product takes the sparse-input path (see :class:`Linear`); the
    folding around it comes from :class:`_Folded`."""

    def __init__(self, *args, sparse_input: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sparse_input = bool(sparse_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "sparse_input", True):  # absent on modules pickled by older versions
            return sparse_linear.linear(x, self.weight, self.bias)
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if getattr(self, "sparse_input", True) else ", sparse_input=False")


class Linear(_Folded, _SparseInputLinear):
    """``nn.Linear`` over ``[T, B, ..., in_features]``.

    ``sparse_input=True`` (the default): on CPU, an input that is mostly zeros (spikes from a
    neuron layer, up to about 20 % nonzero) runs through :func:`spikelab.kernels.sparse_linear.linear`,
    which visits only the nonzero inputs in the product and the weight gradient, where its cost
    model says that pays (wide layers; see docs/kernels.md); other inputs run ``F.linear``. The
    values are the same within float rounding; ``False`` always runs ``F.linear``."""


class Conv1d(_Folded, nn.Conv1d):
    """``nn.Conv1d`` over ``[T, B, C, L]``."""

    seq_layout, seq_ndim = "[T, B, C, L]", 4


class Conv2d(_Folded, nn.Conv2d):
    """``nn.Conv2d`` over ``[T, B, C, H, W]``.

    ``channels_last=True``: on CPU the convolution runs with channels-last weights, so its
    output (and, through the layers that keep it, the whole network's activations and
    gradients) is in channels-last memory, which oneDNN's CPU convolutions run much faster (the
    demo CNN's 2->16 and 16->32 convolutions, forward + backward: 2.7x and 1.45x, measured); the fused
    blocks take it without a copy. The values are the same; the output's strides differ (use
    ``reshape``/``flatten``, not ``view``, on it). The parameter itself stays as it is (checkpoints
    and exports do not change), and other devices run as without the flag."""

    seq_layout, seq_ndim = "[T, B, C, H, W]", 5

    def __init__(self, *args, channels_last: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channels_last = bool(channels_last)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias):
        if getattr(self, "channels_last", False) and input.device.type == "cpu" and input.dim() == 4:
            weight = weight.contiguous(memory_format=torch.channels_last)
        return super()._conv_forward(input, weight, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", channels_last=True" if getattr(self, "channels_last", False) else "")


class AvgPool1d(_Folded, nn.AvgPool1d):
    seq_layout, seq_ndim = "[T, B, C, L]", 4


class AvgPool2d(_Folded, FastAvgPool2d):
    """``nn.AvgPool2d`` over ``[T, B, C, H, W]`` (non-overlapping windows take the fast CPU path of
    :func:`spikelab.layers.pooling.avg_pool2d`)."""

    seq_layout, seq_ndim = "[T, B, C, H, W]", 5


class MaxPool1d(_Folded, nn.MaxPool1d):
    seq_layout, seq_ndim = "[T, B, C, L]", 4


class MaxPool2d(_Folded, nn.MaxPool2d):
    seq_layout, seq_ndim = "[T, B, C, H, W]", 5


class SumPool2d(_Folded, FastAvgPool2d):
    """Sum pooling (NIR's SumPool2d, Speck's pooling): average pooling without the division."""

    seq_layout, seq_ndim = "[T, B, C, H, W]", 5

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__(kernel_size, stride, padding, divisor_override=1)


class BatchNorm1d(_Folded, nn.BatchNorm1d):
    """BatchNorm over ``[T, B, C]`` or ``[T, B, C, L]``, statistics over time and batch."""


class BatchNorm2d(_Folded, nn.BatchNorm2d):
    """BatchNorm over ``[T, B, C, H, W]``, statistics over time and batch."""

    seq_layout, seq_ndim = "[T, B, C, H, W]", 5


class Flatten(nn.Module, SequenceModule):
    """Flatten each step's features: ``[T, B, ...] -> [T, B, F]`` (``step``: ``[B, ...] -> [B, F]``)."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "Flatten input", 2, "[T, B, ...]")
        return x_seq.flatten(2)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


__all__ = [
    "SequenceModule", "TimeDistributed", "Linear", "Conv1d", "Conv2d", "AvgPool1d", "AvgPool2d",
    "MaxPool1d", "MaxPool2d", "SumPool2d", "BatchNorm1d", "BatchNorm2d", "Flatten",
]
