"""A linear layer that visits only the nonzero inputs: ``F.linear`` for spike inputs on CPU.

Behind a spiking neuron a linear layer's input is mostly zeros (5-20 % spikes in trained
networks). :func:`linear` lists the nonzeros (:mod:`spikelab.kernels.numba.sparse`) and, where
they are few enough to pay, computes the product and the weight gradient from that list; the
input gradient ``grad_y @ w`` is dense whatever ``x`` is and stays with torch's GEMM. Autograd
keeps the nonzero list instead of ``x`` (8 bytes per nonzero against 4 per element), and the
weight (as ``F.linear`` does).

Anything else runs ``F.linear`` unchanged: inputs too dense to pay (:func:`relative_cost`), small
products, other devices and dtypes, and every traced, compiled or intercepted call. The values
are the dense product's within float rounding (the sums run in another order).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# When the sparse path pays, from a cost model measured on 2 threads (float32; [3200, 1024]
# inputs, 64-1024 outputs; 32-512 rows for the packing), in units of the dense GEMM's time per
# multiply-add: each nonzero input costs PRODUCT_COST per (padded) output column, each input
# element SCAN_COST to list the nonzeros, each weight element PACK_COST / rows to pack.
PRODUCT_COST = 3.2
SCAN_COST = 66.0
PACK_COST = 32.0
MARGIN = 0.8  # take the sparse path only where the model says it costs under 80 % of dense
MIN_WORK = 1 << 22  # rows x in x out below this: the dense product takes well under a millisecond
_DTYPES = (torch.float32, torch.float64)


def _tiles(n_out: int) -> int:
    """Column tiles of the packed weight for ``n_out`` outputs (the last one zero-padded)."""
    from spikelab.kernels.numba.sparse import TILE

    return -(-n_out // TILE)


def relative_cost(density: float, rows: int, n_out: int) -> float:
    """The sparse path's modelled time over the dense GEMM's for ``rows`` inputs of this
    ``density`` and ``n_out`` outputs."""
    from spikelab.kernels.numba.sparse import TILE

    padded = _tiles(n_out) * TILE
    return density * PRODUCT_COST * padded / n_out + SCAN_COST / n_out + PACK_COST / rows


def _eligible(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
    from spikelab.kernels.generated import _untraced

    tensors = [weight] if bias is None else [weight, bias]
    if x.device.type != "cpu" or not _untraced(x, tensors) or torch.is_autocast_enabled("cpu"):
        return False  # autocast: F.linear casts to its dtype
    if x.dtype not in _DTYPES or x.dim() < 2 or weight.dim() != 2 or (bias is not None and bias.dim() != 1):
        return False
    if any(t.device.type != "cpu" or t.dtype != x.dtype for t in tensors):
        return False
    n, k = weight.shape
    if x.shape[-1] != k or (bias is not None and bias.shape[0] != n) or min(n, k) == 0:
        return False
    return x.numel() * n >= MIN_WORK and x.numel() > 0


def _nonzeros(x2: Tensor, n_out: int) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """The row-wise nonzero list of ``x2`` ``[R, K]`` (``ptr``, ``idx``, ``val``, ``binary``:
    ``val`` is empty where every nonzero is 1), or ``None`` where it would not pay for
    ``n_out`` outputs (:func:`relative_cost`)."""
    from spikelab.kernels.numba.sparse import count_blocks, fill_rows, row_counts

    R, K = x2.shape
    if relative_cost(0.0, R, n_out) > MARGIN:
        return None  # too few outputs (or rows) to pay even for an all-zero input
    xn = x2.detach().numpy()
    ptr = np.zeros(R + 1, np.int64)
    graded = np.empty(count_blocks(R), np.int64)
    row_counts(xn, ptr, graded)
    np.cumsum(ptr, out=ptr)
    nnz = int(ptr[-1])
    if relative_cost(nnz / (R * K), R, n_out) > MARGIN:
        return None
    binary = not graded.any()
    idx = np.empty(nnz, np.int32)
    val = np.empty(0 if binary else nnz, xn.dtype)
    fill_rows(xn, ptr, idx, val, binary)
    return ptr, idx, val, binary


def _pack(weight: Tensor) -> np.ndarray:
    """``weight`` ``[N, K]`` as column tiles ``[tiles, K, TILE]``, zero-padded."""
    from spikelab.kernels.numba.sparse import TILE, pack

    n, k = weight.shape
    wp = torch.empty(_tiles(n), k, TILE, dtype=weight.dtype).numpy()
    pack(weight.detach().numpy(), wp)
    return wp


def _product(rows: tuple, weight: Tensor, bias: Optional[Tensor], nrows: int) -> Tensor:
    import numba

    from spikelab.kernels.numba.sparse import TILE, product

    n = weight.shape[0]
    bp = torch.zeros(_tiles(n) * TILE, dtype=weight.dtype)
    if bias is not None:
        bp[:n] = bias.detach()
    y = torch.empty(nrows, n, dtype=weight.dtype)
    product(*rows, _pack(weight), bp.view(-1, TILE).numpy(), y.numpy(), numba.get_num_threads())
    return y


def _weight_grad(rows: tuple, grad_y: Tensor, k: int) -> Tensor:
    from spikelab.kernels.numba.sparse import TILE, weight_grad

    n = grad_y.shape[1]
    tiles = _tiles(n)
    out = torch.zeros(tiles, k, TILE, dtype=grad_y.dtype)
    weight_grad(*rows, grad_y.numpy(), out.numpy())
    return out.transpose(1, 2).reshape(tiles * TILE, k)[:n].contiguous()


class SparseLinear(torch.autograd.Function):
    """``F.linear`` on a 2-D ``x`` given as its nonzero list; backward from the same list."""

    @staticmethod
    def forward(ctx, x2: Tensor, weight: Tensor, bias: Optional[Tensor], rows: tuple) -> Tensor:
        ctx.k, ctx.has_bias, ctx.binary = x2.shape[1], bias is not None, rows[3]
        ctx.save_for_backward(weight, *(torch.from_numpy(a) for a in rows[:3]))  # freed after backward
        return _product(rows, weight, bias, x2.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        weight, *rows = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        gx = grad_y @ weight if ctx.needs_input_grad[0] else None
        gw = (_weight_grad((*(a.numpy() for a in rows), ctx.binary), grad_y, ctx.k)
              if ctx.needs_input_grad[1] else None)
        gb = grad_y.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``, through the sparse kernels where ``x`` is sparse enough."""
    if not _eligible(x, weight, bias):
        return F.linear(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    rows = _nonzeros(x2, weight.shape[0])
    if rows is None:
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        y = SparseLinear.apply(x2, weight, bias, rows)
    else:
        y = _product(rows, weight, bias, x2.shape[0])
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], weight.shape[0])


__all__ = ["SparseLinear", "linear", "relative_cost"]
