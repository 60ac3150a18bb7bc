"""Ready-made spiking networks; each maps ``[T, B, ...]`` to per-step class scores ``[T, B, classes]``.

The readout is a plain linear layer applied at every step (a non-spiking accumulator): the
mean over time is the usual rate-coded logit, and losses that want every step (TET) have it.
``neuron`` is a factory (``lambda: spikelab.LIF(tau=2.0)`` by default) so every layer gets
its own neuron.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from spikelab import layers as L
from spikelab.neurons import LIF
from spikelab.neurons.base import BaseNeuron

NeuronFactory = Callable[[], BaseNeuron]


def _widths(name: str, values) -> list[int]:
    """Layer widths: a sequence of positive integers (``hidden``, ``channels``, ``stages``)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name}: expected a list of positive integers, got {values!r}")
    values = list(values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a list of positive integers, got {values!r}")
    return values


def _size(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def _dropout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {value!r}")
    return float(value)


def _default_neuron() -> BaseNeuron:
    return LIF(tau=2.0, detach_reset=True)


class SpikingMLP(L.Sequential):
    """Flatten -> (Linear -> neuron) x len(hidden) -> Linear readout."""

    def __init__(self, in_features: int, classes: int, hidden: Sequence[int] = (256,),
                 neuron: Optional[NeuronFactory] = None, dropout: float = 0.0) -> None:
        neuron = neuron or _default_neuron
        hidden, dropout = _widths("hidden", hidden), _dropout(dropout)
        mods: list[nn.Module] = [L.Flatten()]
        width = _size("in_features", in_features)
        for h in hidden:
            mods += [L.Linear(width, h), neuron()]
            if dropout:
                mods.append(L.Dropout(dropout))
            width = h
        mods.append(L.Linear(width, classes))
        super().__init__(*mods)


def _reduce_large_input(input_size: int, halvings: int = 0) -> tuple[list[nn.Module], int]:
    """A 4x4 sum-pool for inputs larger than 64 pixels (DVS128), and the size after it; refuses
    an input too small for ``halvings`` 2x2 poolings after that."""
    _size("input_size", input_size)
    mods, size = ([L.SumPool2d(4)], input_size // 4) if input_size > 64 else ([], input_size)
    if size < 2 ** halvings:
        raise ValueError(f"input_size: {input_size} pixels ({size} after the input pooling) is too small for "
                         f"{halvings} 2x2 poolings, which need at least {2 ** halvings}")
    return mods, size


def _conv_block(cin: int, cout: int, neuron: NeuronFactory) -> list[nn.Module]:
    """Conv-BN-neuron; the convolution's output is channels-last on CPU (see ``layers.Conv2d``)."""
    return [L.Conv2d(cin, cout, 3, padding=1, bias=False, channels_last=True), L.BatchNorm2d(cout), neuron()]


class SpikingCNN(L.Sequential):
    """Conv-BN-neuron blocks with 2x2 average pooling, then a linear readout.

    ``input_size=34`` (N-MNIST-like) uses the blocks as they are; ``input_size=128`` (DVS128)
    first sum-pools 4x4 so the same blocks see 32x32.
    """

    def __init__(self, in_channels: int = 2, classes: int = 10, input_size: int = 34,
                 channels: Sequence[int] = (16, 32), neuron: Optional[NeuronFactory] = None,
                 dropout: float = 0.0) -> None:
        neuron = neuron or _default_neuron
        channels, dropout = _widths("channels", channels), _dropout(dropout)
        mods, size = _reduce_large_input(input_size, len(channels))
        width = _size("in_channels", in_channels)
        for c in channels:
            mods += _conv_block(width, c, neuron) + [L.AvgPool2d(2)]
            width, size = c, size // 2
        mods.append(L.Flatten())
        if dropout:
            mods.append(L.Dropout(dropout))
        mods.append(L.Linear(width * size * size, classes))
        super().__init__(*mods)


class SEWBlock(nn.Module, L.SequenceModule):
    """Spike-element-wise residual block (Fang et al. 2021): ``out = f(x) + x`` with ADD,
    ``f`` = conv-BN-neuron-conv-BN-neuron."""

    _spikelab_stateful = True

    def __init__(self, channels: int, neuron: NeuronFactory) -> None:
        super().__init__()
        self.body = L.Sequential(*_conv_block(channels, channels, neuron), *_conv_block(channels, channels, neuron))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.body(x_seq) + x_seq

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.step(x) + x

    def reset(self) -> None:
        self.body.reset()

    def select_batch(self, index) -> None:
        self.body.select_batch(index)


class SEWResNet(L.Sequential):
    """A small SEW-ResNet: stem conv, ``stages`` of (downsampling conv + ``blocks`` SEW blocks)."""

    def __init__(self, in_channels: int = 2, classes: int = 10, input_size: int = 34,
                 stages: Sequence[int] = (16, 32), blocks: int = 1, neuron: Optional[NeuronFactory] = None) -> None:
        neuron = neuron or _default_neuron
        stages, blocks = _widths("stages", stages), _size("blocks", blocks, low=0)
        mods, size = _reduce_large_input(input_size, len(stages))
        width = _size("in_channels", in_channels)
        for c in stages:
            mods += _conv_block(width, c, neuron) + [L.AvgPool2d(2)]
            size //= 2
            mods += [SEWBlock(c, neuron) for _ in range(blocks)]
            width = c
        mods += [L.Flatten(), L.Linear(width * size * size, classes)]
        super().__init__(*mods)


MODELS = {"mlp": SpikingMLP, "cnn": SpikingCNN, "sew_resnet": SEWResNet}


def build_model(name: str, **kwargs) -> nn.Module:
    """A model by name (``mlp``, ``cnn``, ``sew_resnet``) with its keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["SpikingMLP", "SpikingCNN", "SEWBlock", "SEWResNet", "MODELS", "build_model"]
