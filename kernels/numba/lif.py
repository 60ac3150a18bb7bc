"""Fused LIF / IF / PLIF on CPU: forward and backward over ``[T, M]``, one pass each.

Forward keeps each chunk's membrane in a small local array across the time loop and
saves only the charged potential ``h`` (one float per neuron-step) when a backward will
follow. Backward walks time in reverse, recomputing spikes and the previous membrane
from ``h``. Equations: ``kernels/reference.py:lif_sequence``.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from spikelab.kernels.numba.common import (CHUNK, fire_grad, fires, grad_row, launch_args, reset_row, spike_out,
                                           surrogate_row, typed)


@nb.njit(parallel=True, cache=True, nogil=True)
def lif_forward(x, v0, beta, scale, thr, reset_code, reset_value, robust, out, v_out, h_save, save):
    T, M = x.shape
    nchunks = (M + CHUNK - 1) // CHUNK
    value = typed(x, reset_value)
    one = typed(x, 1.0)
    zero = typed(x, 0.0)
    for c in prange(nchunks):
        lo = c * CHUNK
        hi = min(lo + CHUNK, M)
        n = hi - lo
        v = v0[lo:hi].copy()
        scratch = np.empty(n, x.dtype)
        b = beta[lo:hi]
        sc = scale[lo:hi]
        th = thr[lo:hi]
        for t in range(T):
            xt = x[t, lo:hi]
            ot = out[t, lo:hi]
            ht = h_save[t, lo:hi] if save else scratch
            for k in range(n):
                h = b[k] * v[k] + sc[k] * xt[k]
                ht[k] = h
                fired = fires(h, th[k], robust, one, zero)
                ot[k] = spike_out(fired, th[k], robust, one, zero)
                v[k] = reset_row(h, th[k], fired, reset_code, value)
        v_out[lo:hi] = v


@nb.njit(parallel=True, cache=True, nogil=True)
def lif_backward(g_out, g_v, h_save, v0, beta, scale, thr, reset_code, reset_value, detach, robust,
                 sg_code, sg_alpha, need_params, need_scale, dx, dv0, dbeta, dscale, dthr):
    T, M = h_save.shape
    nchunks = (M + CHUNK - 1) // CHUNK
    value = typed(h_save, reset_value)
    one = typed(h_save, 1.0)
    zero = typed(h_save, 0.0)
    sub = typed(h_save, 1.0 if reset_code == 0 else 0.0)
    hard = typed(h_save, 1.0 if reset_code == 1 else 0.0)
    keep_reset_grad = typed(h_save, 0.0 if detach else 1.0)
    for c in prange(nchunks):
        lo = c * CHUNK
        hi = min(lo + CHUNK, M)
        n = hi - lo
        dv = g_v[lo:hi].copy()
        acc_beta = np.zeros(n, h_save.dtype)
        acc_scale = np.zeros(n, h_save.dtype)
        acc_thr = np.zeros(n, h_save.dtype)
        z = np.empty(n, h_save.dtype)
        sg = np.empty(n, h_save.dtype)
        g_row = np.empty(n, h_save.dtype)
        dh_row = np.empty(n, h_save.dtype)
        b = beta[lo:hi]
        sc = scale[lo:hi]
        th = thr[lo:hi]
        v_first = v0[lo:hi]
        for t in range(T - 1, -1, -1):
            ht = h_save[t, lo:hi]
            hp = h_save[t - 1, lo:hi] if t > 0 else h_save[t, lo:hi]
            gt = grad_row(g_out, t, lo, hi, g_row)
            dxt = dx[t, lo:hi]
            if robust:
                for k in range(n):
                    z[k] = ht[k] / th[k] - one
            else:
                for k in range(n):
                    z[k] = ht[k] - th[k]
            surrogate_row(sg_code, sg_alpha, z, sg)
            if not need_params and not robust:
                # the common case (fixed decay and threshold): input and state gradients only
                for k in range(n):
                    h = ht[k]
                    s = one if z[k] >= zero else zero
                    dv_ds = keep_reset_grad * (sub * -th[k] + hard * (value - h))
                    dvk = dv[k]
                    dh = (gt[k] + dvk * dv_ds) * sg[k] + dvk * (one - hard * s)
                    dxt[k] = sc[k] * dh
                    dv[k] = b[k] * dh
            else:
                for k in range(n):
                    h = ht[k]
                    s = one if z[k] >= zero else zero
                    dh, dth = fire_grad(gt[k], dv[k], h, th[k], s, sg[k], value, sub, hard, keep_reset_grad,
                                        zero, robust, one)
                    dxt[k] = sc[k] * dh
                    dh_row[k] = dh
                    acc_thr[k] += dth
                    if t > 0:
                        fired_prev = (hp[k] / th[k] - one >= zero) if robust else (hp[k] - th[k] >= zero)
                        v_prev = reset_row(hp[k], th[k], fired_prev, reset_code, value)
                    else:
                        v_prev = v_first[k]
                    acc_beta[k] += dh * v_prev
                    dv[k] = b[k] * dh
            if need_scale:
                # c x = h - beta v_prev: the input term's gradient, recomputed from h
                for k in range(n):
                    if t > 0:
                        fp = (hp[k] / th[k] - one >= zero) if robust else (hp[k] - th[k] >= zero)
                        v_prev = reset_row(hp[k], th[k], fp, reset_code, value)
                    else:
                        v_prev = v_first[k]
                    acc_scale[k] += dh_row[k] * (ht[k] - b[k] * v_prev) / sc[k]
        dv0[lo:hi] = dv
        dbeta[lo:hi] = acc_beta
        dscale[lo:hi] = acc_scale
        dthr[lo:hi] = acc_thr


def lif_forward_launch(x, v0, beta, scale, thr, reset_code, reset_value, robust, out, v_out, h_save, save):
    """Run :func:`lif_forward` on contiguous CPU tensors."""
    if not save:
        h_save = x.new_empty((1, 1))
    xa, v0a, ba, sa, ta, oa, va, ha = launch_args(x, v0, beta, scale, thr, out, v_out, h_save)
    lif_forward(xa, v0a, ba, sa, ta, reset_code, reset_value, robust, oa, va, ha, save)


def lif_backward_launch(g_out, g_v, h_save, v0, beta, scale, thr, reset_code, reset_value, detach, robust,
                        sg_code, sg_alpha, need_beta, need_scale, need_thr, dx, dv0, dbeta, dscale, dthr):
    arrays = launch_args(g_out, g_v, h_save, v0, beta, scale, thr)
    need_params = bool(need_beta or need_scale or need_thr)
    lif_backward(*arrays, reset_code, reset_value, detach, robust, sg_code, sg_alpha, need_params, need_scale,
                 *launch_args(dx, dv0, dbeta, dscale, dthr))
