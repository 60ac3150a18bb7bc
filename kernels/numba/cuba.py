"""Fused current-based LIF on CPU (``kernels/reference.py:cuba_sequence``).

Forward saves the charged potential ``h`` only. Backward recomputes the previous synaptic
current from it (``i[t] = h[t] - beta * v[t-1]``) and walks time in reverse.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from spikelab.kernels.numba.common import (CHUNK, fire_grad, fires, grad_row, launch_args, reset_row, spike_out,
                                           surrogate_row, typed)


@nb.njit(parallel=True, cache=True, nogil=True)
def cuba_forward(x, v0, i0, alpha, beta, thr, reset_code, reset_value, robust, out, v_out, i_out, h_save, save):
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
        cur = i0[lo:hi].copy()
        scratch = np.empty(n, x.dtype)
        al, b, th = alpha[lo:hi], beta[lo:hi], thr[lo:hi]
        for t in range(T):
            xt = x[t, lo:hi]
            ot = out[t, lo:hi]
            ht = h_save[t, lo:hi] if save else scratch
            for k in range(n):
                cur[k] = al[k] * cur[k] + xt[k]
                h = b[k] * v[k] + cur[k]
                ht[k] = h
                fired = fires(h, th[k], robust, one, zero)
                ot[k] = spike_out(fired, th[k], robust, one, zero)
                v[k] = reset_row(h, th[k], fired, reset_code, value)
        v_out[lo:hi] = v
        i_out[lo:hi] = cur


@nb.njit(inline="always", cache=True)
def _v_after(h, th, reset_code, value, robust, one, zero):
    return reset_row(h, th, fires(h, th, robust, one, zero), reset_code, value)


@nb.njit(parallel=True, cache=True, nogil=True)
def cuba_backward(g_out, g_v, g_i, h_save, v0, i0, alpha, beta, thr, reset_code, reset_value, detach, robust,
                  sg_code, sg_alpha, dx, dv0, di0, dalpha, dbeta, dthr):
    T, M = h_save.shape
    nchunks = (M + CHUNK - 1) // CHUNK
    value = typed(h_save, reset_value)
    one = typed(h_save, 1.0)
    zero = typed(h_save, 0.0)
    sub = typed(h_save, 1.0 if reset_code == 0 else 0.0)
    hard = typed(h_save, 1.0 if reset_code == 1 else 0.0)
    keep = typed(h_save, 0.0 if detach else 1.0)
    for c in prange(nchunks):
        lo = c * CHUNK
        hi = min(lo + CHUNK, M)
        n = hi - lo
        al, b, th = alpha[lo:hi], beta[lo:hi], thr[lo:hi]
        dv = g_v[lo:hi].copy()
        di = g_i[lo:hi].copy()
        acc_alpha = np.zeros(n, h_save.dtype)
        acc_beta = np.zeros(n, h_save.dtype)
        acc_thr = np.zeros(n, h_save.dtype)
        z = np.empty(n, h_save.dtype)
        sg = np.empty(n, h_save.dtype)
        g_row = np.empty(n, h_save.dtype)
        v_first = v0[lo:hi]
        i_first = i0[lo:hi]
        for t in range(T - 1, -1, -1):
            ht = h_save[t, lo:hi]
            gt = grad_row(g_out, t, lo, hi, g_row)
            dxt = dx[t, lo:hi]
            for k in range(n):
                z[k] = ht[k] / th[k] - one if robust else ht[k] - th[k]
            surrogate_row(sg_code, sg_alpha, z, sg)
            for k in range(n):
                h = ht[k]
                s = one if z[k] >= zero else zero
                dh, dth = fire_grad(gt[k], dv[k], h, th[k], s, sg[k], value, sub, hard, keep, zero, robust, one)
                acc_thr[k] += dth
                di_total = dh + di[k]
                dxt[k] = di_total
                # v[t-1] and i[t-1] from the saved h: i[t-1] = h[t-1] - beta * v[t-2]
                if t > 0:
                    hp = h_save[t - 1, lo + k]
                    v_prev = _v_after(hp, th[k], reset_code, value, robust, one, zero)
                    if t > 1:
                        v_prev2 = _v_after(h_save[t - 2, lo + k], th[k], reset_code, value, robust, one, zero)
                    else:
                        v_prev2 = v_first[k]
                    i_prev = hp - b[k] * v_prev2
                else:
                    v_prev = v_first[k]
                    i_prev = i_first[k]
                acc_beta[k] += dh * v_prev
                acc_alpha[k] += di_total * i_prev
                di[k] = al[k] * di_total
                dv[k] = b[k] * dh
        dv0[lo:hi] = dv
        di0[lo:hi] = di
        dalpha[lo:hi] = acc_alpha
        dbeta[lo:hi] = acc_beta
        dthr[lo:hi] = acc_thr


def cuba_forward_launch(x, v0, i0, alpha, beta, thr, reset_code, reset_value, robust, out, v_out, i_out,
                        h_save, save):
    if not save:
        h_save = x.new_empty((1, 1))
    cuba_forward(*launch_args(x, v0, i0, alpha, beta, thr), reset_code, reset_value, robust,
                 *launch_args(out, v_out, i_out, h_save), save)


def cuba_backward_launch(g_out, g_v, g_i, h_save, v0, i0, alpha, beta, thr, reset_code, reset_value, detach,
                         robust, sg_code, sg_alpha, dx, dv0, di0, dalpha, dbeta, dthr):
    cuba_backward(*launch_args(g_out, g_v, g_i, h_save, v0, i0, alpha, beta, thr), reset_code, reset_value,
                  detach, robust, sg_code, sg_alpha, *launch_args(dx, dv0, di0, dalpha, dbeta, dthr))
