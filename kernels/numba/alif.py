"""Fused adaptive LIF on CPU (``kernels/reference.py:alif_sequence``).

Forward saves the charged potential ``h`` only. Backward first replays the adaptation
trace ``a`` of its chunk from the saved ``h`` (spikes are recomputed from ``h`` and the
effective threshold), then walks time in reverse.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from spikelab.kernels.numba.common import (CHUNK, fire_grad, fires, grad_row, launch_args, reset_row, spike_out,
                                           surrogate_row, typed)


@nb.njit(parallel=True, cache=True, nogil=True)
def alif_forward(x, v0, a0, beta, scale, thr, rho, adapt, reset_code, reset_value, robust,
                 out, v_out, a_out, h_save, save):
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
        a = a0[lo:hi].copy()
        scratch = np.empty(n, x.dtype)
        b, sc, th, r, ad = beta[lo:hi], scale[lo:hi], thr[lo:hi], rho[lo:hi], adapt[lo:hi]
        for t in range(T):
            xt = x[t, lo:hi]
            ot = out[t, lo:hi]
            ht = h_save[t, lo:hi] if save else scratch
            for k in range(n):
                theta = th[k] + ad[k] * a[k]
                h = b[k] * v[k] + sc[k] * xt[k]
                ht[k] = h
                fired = fires(h, theta, robust, one, zero)
                s = one if fired else zero
                ot[k] = spike_out(fired, theta, robust, one, zero)
                v[k] = reset_row(h, theta, fired, reset_code, value)
                a[k] = r[k] * a[k] + (one - r[k]) * s
        v_out[lo:hi] = v
        a_out[lo:hi] = a


@nb.njit(parallel=True, cache=True, nogil=True)
def alif_backward(g_out, g_v, g_a, h_save, v0, a0, beta, scale, thr, rho, adapt, reset_code, reset_value,
                  detach, robust, sg_code, sg_alpha, need_scale, dx, dv0, da0, dbeta, dscale, dthr, drho, dadapt):
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
        b, sc, th, r, ad = beta[lo:hi], scale[lo:hi], thr[lo:hi], rho[lo:hi], adapt[lo:hi]
        # replay the adaptation trace: a_hist[t] is the trace *before* step t
        a_hist = np.empty((T, n), h_save.dtype)
        a = a0[lo:hi].copy()
        for t in range(T):
            ht = h_save[t, lo:hi]
            for k in range(n):
                a_hist[t, k] = a[k]
                theta = th[k] + ad[k] * a[k]
                s = one if fires(ht[k], theta, robust, one, zero) else zero
                a[k] = r[k] * a[k] + (one - r[k]) * s
        dv = g_v[lo:hi].copy()
        da = g_a[lo:hi].copy()
        acc_beta = np.zeros(n, h_save.dtype)
        acc_scale = np.zeros(n, h_save.dtype)
        acc_thr = np.zeros(n, h_save.dtype)
        acc_rho = np.zeros(n, h_save.dtype)
        acc_adapt = np.zeros(n, h_save.dtype)
        z = np.empty(n, h_save.dtype)
        sg = np.empty(n, h_save.dtype)
        g_row = np.empty(n, h_save.dtype)
        v_first = v0[lo:hi]
        for t in range(T - 1, -1, -1):
            ht = h_save[t, lo:hi]
            gt = grad_row(g_out, t, lo, hi, g_row)
            dxt = dx[t, lo:hi]
            at = a_hist[t]
            for k in range(n):
                theta = th[k] + ad[k] * at[k]
                z[k] = ht[k] / theta - one if robust else ht[k] - theta
            surrogate_row(sg_code, sg_alpha, z, sg)
            for k in range(n):
                h = ht[k]
                theta = th[k] + ad[k] * at[k]
                s = one if z[k] >= zero else zero
                dak = da[k]
                dh, dtheta = fire_grad(gt[k], dv[k], h, theta, s, sg[k], value, sub, hard, keep, dak * (one - r[k]),
                                       robust, one)
                dxt[k] = sc[k] * dh
                acc_thr[k] += dtheta
                acc_adapt[k] += dtheta * at[k]
                acc_rho[k] += dak * (at[k] - s)
                if t > 0:
                    hp = h_save[t - 1, lo + k]
                    theta_p = th[k] + ad[k] * a_hist[t - 1, k]
                    v_prev = reset_row(hp, theta_p, fires(hp, theta_p, robust, one, zero), reset_code, value)
                else:
                    v_prev = v_first[k]
                acc_beta[k] += dh * v_prev
                if need_scale:
                    acc_scale[k] += dh * (h - b[k] * v_prev) / sc[k]
                dv[k] = b[k] * dh
                da[k] = r[k] * dak + ad[k] * dtheta
        dv0[lo:hi] = dv
        da0[lo:hi] = da
        dbeta[lo:hi] = acc_beta
        dscale[lo:hi] = acc_scale
        dthr[lo:hi] = acc_thr
        drho[lo:hi] = acc_rho
        dadapt[lo:hi] = acc_adapt


def alif_forward_launch(x, v0, a0, beta, scale, thr, rho, adapt, reset_code, reset_value, robust,
                        out, v_out, a_out, h_save, save):
    if not save:
        h_save = x.new_empty((1, 1))
    alif_forward(*launch_args(x, v0, a0, beta, scale, thr, rho, adapt), reset_code, reset_value, robust,
                 *launch_args(out, v_out, a_out, h_save), save)


def alif_backward_launch(g_out, g_v, g_a, h_save, v0, a0, beta, scale, thr, rho, adapt, reset_code, reset_value,
                         detach, robust, sg_code, sg_alpha, need_scale, dx, dv0, da0, dbeta, dscale, dthr, drho,
                         dadapt):
    alif_backward(*launch_args(g_out, g_v, g_a, h_save, v0, a0, beta, scale, thr, rho, adapt), reset_code,
                  reset_value, detach, robust, sg_code, sg_alpha, need_scale,
                  *launch_args(dx, dv0, da0, dbeta, dscale, dthr, drho, dadapt))
