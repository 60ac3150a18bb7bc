"""Numba pieces of the fused layer blocks (batch norm -> neuron -> pooling).

A block's kernels see the neuron layout ``[T, M]`` with ``M = B * C * plane`` (``plane`` =
``H * W``, 1 after a linear layer). Batch norm enters the generated loops as a per-neuron
affine ``x * scale + shift`` applied as the input is loaded (kernels/codegen.py); pooling (non-overlapping windows, no
padding) turns each chunk's output row into its pooled cells, and the pooled gradient back
into a row. Chunks hold whole planes, so every window lies inside one chunk and no two
parallel tasks write the same cell. ``geo`` is ``[H, W, KH, KW, OH, OW, CI]`` (``KH = 0``: no
pooling). ``CI`` is the number of channels interleaved in a plane: 1 for ``[B, C, H, W]`` memory
(a plane is one channel of one sample), ``C`` for channels-last memory ``[B, H, W, C]`` (a
plane is a band of ``KH`` rows of one sample with every channel, innermost; or a whole sample
where the windows leave rows uncovered; kernels/blocks.py picks).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from spikelab.kernels.numba.common import CHUNK, NoAliasCompiler, typed


@nb.njit(inline="always", cache=True)
def _unsigned(geo, p0, p1):
    """The geometry and plane range as uint64 (index arithmetic that cannot be negative)."""
    u = np.uint64
    return u(geo[0]), u(geo[1]), u(geo[2]), u(geo[3]), u(geo[4]), u(geo[5]), u(geo[6]), u(p0), u(p1)


@nb.njit(inline="always", cache=True)
def _pool_interleaved(row, dst, q0, q1, H, W, KH, KW, OH, OW, CI, scale, out):
    """:func:`pool_row` for channels-last planes: ``CI`` channels side by side at every pixel,
    the channel loop innermost (contiguous in both ``row`` and ``dst``)."""
    u2 = np.uint64(2)
    WC = W * CI
    for p in range(q0, q1):
        base = (p - q0) * H * WC
        cell = p * OH * OW * CI
        for oy in range(OH):
            top = base + oy * KH * WC
            o = cell + oy * OW * CI
            for ox in range(OW):
                i = top + ox * KW * CI
                d = o + ox * CI
                if KH == u2 and KW == u2:
                    for c in range(CI):
                        dst[d + c] = (row[i + c] + row[i + CI + c] + row[i + WC + c] + row[i + WC + CI + c]) * scale
                else:
                    for c in range(CI):
                        acc = typed(row, 0.0)
                        for dy in range(KH):
                            for dx in range(KW):
                                acc += row[i + dy * WC + dx * CI + c]
                        dst[d + c] = acc * scale
    return out


@nb.njit(inline="always", cache=True)
def _unpool_interleaved(src, q0, q1, H, W, KH, KW, OH, OW, CI, scale, row):
    """:func:`unpool_row` for channels-last planes (see :func:`_pool_interleaved`)."""
    u2 = np.uint64(2)
    WC = W * CI
    for p in range(q0, q1):
        base = (p - q0) * H * WC
        cell = p * OH * OW * CI
        for oy in range(OH):
            top = base + oy * KH * WC
            o = cell + oy * OW * CI
            for ox in range(OW):
                i = top + ox * KW * CI
                d = o + ox * CI
                if KH == u2 and KW == u2:
                    for c in range(CI):
                        v = src[d + c] * scale
                        row[i + c] = v
                        row[i + CI + c] = v
                        row[i + WC + c] = v
                        row[i + WC + CI + c] = v
                else:
                    for c in range(CI):
                        v = src[d + c] * scale
                        for dy in range(KH):
                            for dx in range(KW):
                                row[i + dy * WC + dx * CI + c] = v
    return row


@nb.njit(cache=True, pipeline_class=NoAliasCompiler)
def pool_row(row, out, t, p0, p1, geo, scale):
    """Pool planes ``p0:p1`` held in ``row`` into ``out[t]`` (window sums times ``scale``).
    2x2 windows (the common case) have their own loop: with the window size known, LLVM
    unrolls it; unsigned indices spare the negative-index checks (together 4-5x faster than
    the general loop, measured). A function of its own, not inlined: its arguments carry
    ``noalias`` (``row`` is the kernel's scratch row, never ``out``), so LLVM vectorises the
    loop; inlined into the serial kernel, ``row`` was a local allocation LLVM could not tell
    apart from ``out`` (the pooled forward ran 2x slower)."""
    H, W, KH, KW, OH, OW, CI, q0, q1 = _unsigned(geo, p0, p1)
    dst = out[t]
    u1, u2 = np.uint64(1), np.uint64(2)
    if CI != u1:
        return _pool_interleaved(row, dst, q0, q1, H, W, KH, KW, OH, OW, CI, scale, out)
    for p in range(q0, q1):
        base = (p - q0) * H * W
        cell = p * OH * OW
        for oy in range(OH):
            top = base + oy * KH * W
            o = cell + oy * OW
            if KH == u2 and KW == u2:
                for ox in range(OW):
                    i = top + u2 * ox
                    dst[o + ox] = (row[i] + row[i + u1] + row[i + W] + row[i + W + u1]) * scale
            else:
                for ox in range(OW):
                    acc = typed(row, 0.0)
                    for dy in range(KH):
                        for dx in range(KW):
                            acc += row[top + dy * W + ox * KW + dx]
                    dst[o + ox] = acc * scale
    return out


@nb.njit(cache=True, pipeline_class=NoAliasCompiler)
def unpool_row(g, t, p0, p1, geo, scale, row):
    """The gradient of each neuron of planes ``p0:p1`` from the pooled gradient ``g[t]``
    (neurons outside every window, at a cropped border, get 0); not inlined, for ``noalias``
    as :func:`pool_row`."""
    H, W, KH, KW, OH, OW, CI, q0, q1 = _unsigned(geo, p0, p1)
    src = g[t]
    u1, u2 = np.uint64(1), np.uint64(2)
    if KH * OH != H or KW * OW != W:
        row[:] = 0
    if CI != u1:
        return _unpool_interleaved(src, q0, q1, H, W, KH, KW, OH, OW, CI, scale, row)
    for p in range(q0, q1):
        base = (p - q0) * H * W
        cell = p * OH * OW
        for oy in range(OH):
            top = base + oy * KH * W
            o = cell + oy * OW
            if KH == u2 and KW == u2:
                for ox in range(OW):
                    v = src[o + ox] * scale
                    i = top + u2 * ox
                    row[i] = v
                    row[i + u1] = v
                    row[i + W] = v
                    row[i + W + u1] = v
            else:
                for ox in range(OW):
                    v = src[o + ox] * scale
                    for dy in range(KH):
                        for dx in range(KW):
                            row[top + dy * W + ox * KW + dx] = v
    return row


@nb.njit(parallel=True, cache=True, nogil=True)
def moments(x, s1, s2):
    """Per-neuron sums over time of ``x`` and ``x**2`` (float64: the batch statistics of
    batch norm come from these without cancellation trouble)."""
    T, M = x.shape
    nchunks = (M + CHUNK - 1) // CHUNK
    for c in prange(nchunks):
        lo = c * CHUNK
        hi = min(lo + CHUNK, M)
        a = np.zeros(hi - lo, np.float64)
        b = np.zeros(hi - lo, np.float64)
        for t in range(T):
            row = x[t, lo:hi]
            for k in range(hi - lo):
                v = np.float64(row[k])
                a[k] += v
                b[k] += v * v
        s1[lo:hi] = a
        s2[lo:hi] = b


@nb.njit(parallel=True, cache=True, nogil=True)
def add_affine(dx, x, a, b):
    """``dx += a * x + b`` per neuron (batch norm's statistics term of the input gradient)."""
    T, M = x.shape
    nchunks = (M + CHUNK - 1) // CHUNK
    for c in prange(nchunks * T):
        t = c // nchunks
        lo = (c % nchunks) * CHUNK
        hi = min(lo + CHUNK, M)
        d = dx[t, lo:hi]
        r = x[t, lo:hi]
        for k in range(hi - lo):
            d[k] += a[lo + k] * r[k] + b[lo + k]


__all__ = ["pool_row", "unpool_row", "moments", "add_affine"]
