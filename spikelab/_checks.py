"""Argument checks shared by the library: each error names the argument and what was expected."""

from __future__ import annotations

import math
from typing import Any

import torch


def check_float_tensor(x: Any, name: str, min_ndim: int, layout: str) -> torch.Tensor:
    """Refuse non-tensors, non-floating dtypes and too few dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype} (convert with .float())")
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expected shape {layout} (at least {min_ndim} dims), got shape {tuple(x.shape)}")
    return x


def check_time_steps(x_seq: torch.Tensor, name: str = "x_seq") -> torch.Tensor:
    """A sequence ``[T, B, ...]`` needs at least one step: a state cannot evolve over none, and
    its rates and time means would be NaN."""
    if x_seq.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one time step (shape [T, B, ...] with T >= 1), "
                         f"got shape {tuple(x_seq.shape)}")
    return x_seq


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within ``[low, high]`` (ends open when asked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name}: expected {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name}: expected {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_values(t: torch.Tensor, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> torch.Tensor:
    """Every element finite and within bounds."""
    t = t.detach()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if low is not None and ((t < low).any() or (low_open and (t == low).any())):
        raise ValueError(f"{name}: expected every value {'>' if low_open else '>='} {low}, got min {t.min().item()}")
    if high is not None and ((t > high).any() or (high_open and (t == high).any())):
        raise ValueError(f"{name}: expected every value {'<' if high_open else '<='} {high}, got max {t.max().item()}")
    return t


def as_batch_index(index, device: torch.device, size: int) -> torch.Tensor:
    """The integer index of the samples to keep from a batch of ``size``.

    Accepts exactly a 1-D boolean mask of length ``size`` or 1-D unique integer indices in
    ``[0, size)``; anything else (a mask of another length, a ``(B, 1)`` mask, repeated or
    out-of-range indices) would mix samples' states, so it is refused.
    """
    index = torch.as_tensor(index, device=device)
    last = _LAST_INDEX[0]  # one tuple, replaced whole: safe to read from several threads
    if last is not None and last[0] is index and last[1] == index._version and last[2] == size:
        return last[3]  # the same index, just checked for the previous layer of the model
    result = _checked_index(index, size)
    _LAST_INDEX[0] = (index, index._version, size, result)
    return result


_LAST_INDEX: list = [None]


def _checked_index(index: torch.Tensor, size: int) -> torch.Tensor:
    expected = f"a 1-D boolean mask of length {size} or 1-D unique integer indices in [0, {size})"
    if index.ndim != 1:
        raise ValueError(f"index: expected {expected}, got shape {tuple(index.shape)}")
    if index.dtype == torch.bool:
        if index.numel() != size:
            raise ValueError(f"index: expected {expected}, got a boolean mask of length {index.numel()}")
        return index.nonzero().flatten()
    if index.is_floating_point() or index.is_complex():
        raise TypeError(f"index: expected {expected}, got dtype {index.dtype}")
    index = index.long()
    if index.numel():
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= size:
            raise ValueError(f"index: expected {expected}, got values from {low} to {high}")
        if torch.unique(index).numel() != index.numel():
            raise ValueError(f"index: expected {expected}, got repeated indices")
    return index


def finite_tensor(value: Any, name: str) -> torch.Tensor:
    """A float32 copy of a number or tensor, refusing bools and non-finite values."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a number or a tensor, got a bool")
    t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: expected finite values")
    return t


__all__ = ["check_float_tensor", "check_time_steps", "check_number", "check_values", "as_batch_index", "finite_tensor"]
