"""Batching variable-length samples into time-first tensors ``[T, B, ...]``."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def pad_collate(batch: Sequence, pad_value: float = 0.0, dtype: torch.dtype = torch.float32):
    """``[(x_i [T_i, ...], label_i), ...]`` -> ``(x [T_max, B, ...], labels [B], lengths [B])``.

    Shorter samples are padded at the end with ``pad_value`` (zeros: no input spikes), so a
    network's state is exact up to each sample's own length.
    """
    if not batch:
        raise ValueError("pad_collate: empty batch")
    xs = [torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x) for x, _ in batch]
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) != 1 or any(x.ndim < 1 for x in xs):
        raise ValueError(f"pad_collate: every sample must be [T, ...] with the same trailing shape, got "
                         f"{sorted(tuple(x.shape) for x in xs)}")
    lengths = torch.tensor([x.shape[0] for x in xs])
    out = torch.full((int(lengths.max()), len(xs), *xs[0].shape[1:]), pad_value, dtype=dtype)
    for i, x in enumerate(xs):
        out[: x.shape[0], i] = x.to(dtype)
    labels = torch.as_tensor([int(y) for _, y in batch])
    return out, labels, lengths


__all__ = ["pad_collate"]
