"""A container that runs stateless and spiking layers together on ``[T, B, ...]``."""

from __future__ import annotations

import torch
from torch import nn

from spikelab._checks import check_float_tensor, check_time_steps
from spikelab.layers import fusion
from spikelab.layers.temporal import SequenceModule
from spikelab.neurons.base import BaseNeuron


def _takes_sequences(module: nn.Module) -> bool:
    return isinstance(module, (BaseNeuron, SequenceModule))


def _refuse_hidden_neurons(module: nn.Module, position: str) -> None:
    for name, sub in module.named_modules():
        if _takes_sequences(sub) and sub is not module:
            raise TypeError(
                f"{position}: {type(module).__name__} holds the spiking/sequence module {name!r} "
                f"({type(sub).__name__}) but does not take [T, B, ...] sequences itself; "
                "build it with spikelab.layers.Sequential so time is handled for its children"
            )


class Sequential(nn.Sequential, SequenceModule):
    """Like ``nn.Sequential``, on sequences ``[T, B, ...]``.

    Spikelab layers and neurons receive the whole sequence; any other (stateless) torch
    module, e.g. ``nn.Conv2d`` or ``nn.ReLU``, is applied to every step at once with time
    folded into the batch. ``step(x)`` runs one time step ``[B, ...]`` through every layer,
    neurons keeping their state until :func:`spikelab.reset`.
    """

    _spikelab_stateful = True

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        for i, layer in enumerate(self):
            if not _takes_sequences(layer):
                _refuse_hidden_neurons(layer, f"layer {i}")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_time_steps(check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]"))
        layers = list(self)
        i = 0
        while i < len(layers):
            block = fusion.match(layers, i)
            if block is not None:  # BatchNorm -> neuron -> pooling in one fused kernel
                out = fusion.run_block(x_seq, *block[:3])
                if out is not None:
                    x_seq, i = out, i + block[3]
                    continue
            x_seq = self._run_layer(layers[i], x_seq)
            i += 1
        return x_seq

    @staticmethod
    def _run_layer(layer: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
        if _takes_sequences(layer):
            return layer(x_seq)
        return layer(x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])

    def steps(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Advance ``T`` steps on ``x_seq`` ``[T, B, ...]`` from the streaming state, like ``T``
        calls of :meth:`step` (neurons run their multi-step kernels), so a stream can go on in
        chunks; ``forward`` instead starts every sequence from a fresh state."""
        check_time_steps(check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]"))
        for layer in self:
            if not _takes_sequences(layer):
                x_seq = self._run_layer(layer, x_seq)
            elif callable(getattr(layer, "steps", None)):
                x_seq = layer.steps(x_seq)
            else:
                x_seq = torch.stack([layer.step(x) for x in x_seq])
        return x_seq

    def step(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", 1, "[B, ...]")
        for layer in self:
            x = layer.step(x) if _takes_sequences(layer) else layer(x)
        return x

    def reset(self) -> None:
        for layer in self:
            if getattr(layer, "_spikelab_stateful", False):
                layer.reset()

    def select_batch(self, index: torch.Tensor) -> None:
        for layer in self:
            if getattr(layer, "_spikelab_stateful", False):
                layer.select_batch(index)


__all__ = ["Sequential"]
