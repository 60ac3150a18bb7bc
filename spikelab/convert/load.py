"""Loading the ANN to convert: a module, a full saved model, or a state_dict plus an architecture."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn


def build_architecture(arch: str, **kwargs) -> nn.Module:
    """An untrained model from ``package.module:Class`` (called with ``kwargs``) or a torchvision name."""
    if ":" in arch:
        module_name, _, attr = arch.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"arch: cannot import {arch!r} ({err}); expected 'package.module:Class'") from None
        return factory(**kwargs)
    try:
        from torchvision import models as tv
    except Exception:  # noqa: BLE001 - torchvision missing or broken beside this torch
        raise ValueError(f"arch: {arch!r} looks like a torchvision name, but torchvision does not import here; "
                         "give the architecture as 'package.module:Class'") from None
    try:
        return tv.get_model(arch, **kwargs)
    except ValueError as err:
        raise ValueError(f"arch: unknown torchvision model {arch!r} ({err})") from None


def _state_dict_of(obj) -> Optional[dict]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


def load_ann(weights: Union[str, Path, nn.Module, dict], arch: Optional[str] = None, trust: bool = False,
             **arch_kwargs) -> nn.Module:
    """The ANN to convert, in ``eval()`` mode.

    ``weights`` may be a module, a path to a fully saved model, or a state_dict (or a path to
    one, possibly inside ``{"state_dict": ...}`` / ``{"model": ...}``); a state_dict needs
    ``arch``. Key or shape mismatches are reported with the offending names.
    """
    if isinstance(weights, nn.Module):
        return weights.eval()
    obj = weights
    if isinstance(weights, (str, Path)):
        from spikelab import files

        # a state_dict loads as data; a whole saved model only with trust=True (unpickling runs code)
        obj = files.load(weights, trust=trust, what="weights file")
    if isinstance(obj, nn.Module):
        return obj.eval()
    state = _state_dict_of(obj)
    if state is None:
        raise ValueError(f"weights: {weights!r} holds neither a model nor a state_dict")
    if arch is None:
        raise ValueError("arch: a state_dict needs the architecture ('package.module:Class' or a torchvision name)")
    model = build_architecture(arch, **arch_kwargs)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        lines = []
        if missing:
            lines.append(f"missing from the checkpoint: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            lines.append(f"not in {arch}: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        for k in shapes[:10]:
            lines.append(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
        raise ValueError(f"weights: the checkpoint does not match {arch}: " + "; ".join(lines))
    model.load_state_dict(state)
    return model.eval()
