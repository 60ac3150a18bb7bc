"""Model-wide state operations: reset every neuron, or shrink every state to some samples."""

from __future__ import annotations

import torch
from torch import nn


def _stateful(model: nn.Module):
    """Stateful spikelab modules of ``model``, outermost first, each visited once."""
    seen: set[int] = set()
    for module in model.modules():
        if getattr(module, "_spikelab_stateful", False) and id(module) not in seen:
            # containers reset their children themselves
            for sub in module.modules():
                seen.add(id(sub))
            yield module


def reset(model: nn.Module) -> None:
    """Reset the streaming state of every spikelab neuron and stateful layer in ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    for module in _stateful(model):
        module.reset()


def select_batch(model: nn.Module, index: torch.Tensor) -> None:
    """Keep only the samples ``index`` (indices or a boolean mask) in every streaming state."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    for module in _stateful(model):
        module.select_batch(index)


__all__ = ["reset", "select_batch"]
