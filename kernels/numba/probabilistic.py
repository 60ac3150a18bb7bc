"""Fused probabilistic (escape-noise) LIF on CPU (``kernels/reference.py:probabilistic_sequence``).

The uniform numbers are the counter-based hash of ``reference.counter_uniform`` computed in
the loop, so the backward recomputes each spike from the saved ``h`` and the hash instead
of storing noise or spikes: one float per neuron-step, as for every other neuron.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from spikelab.kernels.numba.common import CHUNK, grad_row, launch_args, typed

_M32 = np.uint64(0xFFFFFFFF)


@nb.njit(inline="always", cache=True)
def mix32(x):
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & _M32
    return x ^ (x >> np.uint64(16))


@nb.njit(inline="always", cache=True)
def uniform(seed, counter):
    """The same number as ``reference.counter_uniform`` for this (seed, counter)."""
    c = np.uint64(counter)
    key = mix32((c >> np.uint64(32)) ^ np.uint64(seed))
    bits = mix32((c & _M32) ^ key)
    return np.float32(bits >> np.uint64(8)) * np.float32(2.0**-24)


@nb.njit(parallel=True, cache=True, nogil=True)
def prob_forward(x, v0, beta, scale, thr, temp, seed, first_step, stochastic, reset_code, reset_value,
                 out, v_out, h_save, save):
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
        b, sc, th, tp = beta[lo:hi], scale[lo:hi], thr[lo:hi], temp[lo:hi]
        for t in range(T):
            xt = x[t, lo:hi]
            ot = out[t, lo:hi]
            ht = h_save[t, lo:hi] if save else scratch
            base = (first_step + t) * M + lo
            for k in range(n):
                h = b[k] * v[k] + sc[k] * xt[k]
                ht[k] = h
                p = one / (one + math.exp(-((h - th[k]) / tp[k])))
                if stochastic:
                    s = one if uniform(seed, base + k) < p else zero
                else:
                    s = p
                ot[k] = s
                if reset_code == 0:
                    v[k] = h - th[k] * s
                elif reset_code == 1:
                    v[k] = h * (one - s) + value * s
                else:
                    v[k] = h
        v_out[lo:hi] = v


@nb.njit(parallel=True, cache=True, nogil=True)
def prob_backward(g_out, g_v, h_save, v0, beta, scale, thr, temp, seed, first_step, stochastic, reset_code,
                  reset_value, detach, need_scale, dx, dv0, dbeta, dscale, dthr, dtemp):
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
        b, sc, th, tp = beta[lo:hi], scale[lo:hi], thr[lo:hi], temp[lo:hi]
        dv = g_v[lo:hi].copy()
        acc_beta = np.zeros(n, h_save.dtype)
        acc_scale = np.zeros(n, h_save.dtype)
        acc_thr = np.zeros(n, h_save.dtype)
        acc_temp = np.zeros(n, h_save.dtype)
        g_row = np.empty(n, h_save.dtype)
        v_first = v0[lo:hi]
        for t in range(T - 1, -1, -1):
            ht = h_save[t, lo:hi]
            gt = grad_row(g_out, t, lo, hi, g_row)
            dxt = dx[t, lo:hi]
            base = (first_step + t) * M + lo
            base_prev = base - M
            for k in range(n):
                h = ht[k]
                z = (h - th[k]) / tp[k]
                p = one / (one + math.exp(-z))
                if stochastic:
                    s = one if uniform(seed, base + k) < p else zero
                else:
                    s = p
                dvk = dv[k]
                dv_ds = keep * (sub * -th[k] + hard * (value - h))
                dp = (gt[k] + dvk * dv_ds) * p * (one - p)  # d/dz of p, times dL/dS
                dh = dp / tp[k] + dvk * (one - hard * s)
                dxt[k] = sc[k] * dh
                acc_thr[k] += -dp / tp[k] - dvk * sub * s
                acc_temp[k] += -dp * z / tp[k]
                if t > 0:
                    hp = h_save[t - 1, lo + k]
                    pp = one / (one + math.exp(-((hp - th[k]) / tp[k])))
                    if stochastic:
                        sp = one if uniform(seed, base_prev + k) < pp else zero
                    else:
                        sp = pp
                    if reset_code == 0:
                        v_prev = hp - th[k] * sp
                    elif reset_code == 1:
                        v_prev = hp * (one - sp) + value * sp
                    else:
                        v_prev = hp
                else:
                    v_prev = v_first[k]
                acc_beta[k] += dh * v_prev
                if need_scale:
                    acc_scale[k] += dh * (h - b[k] * v_prev) / sc[k]
                dv[k] = b[k] * dh
        dv0[lo:hi] = dv
        dbeta[lo:hi] = acc_beta
        dscale[lo:hi] = acc_scale
        dthr[lo:hi] = acc_thr
        dtemp[lo:hi] = acc_temp


def prob_forward_launch(x, v0, beta, scale, thr, temp, noise_key, stochastic, reset_code, reset_value,
                        out, v_out, h_save, save):
    if not save:
        h_save = x.new_empty((1, 1))
    seed, first_step = (int(v) for v in noise_key.tolist())
    prob_forward(*launch_args(x, v0, beta, scale, thr, temp), seed, first_step, stochastic, reset_code,
                 reset_value, *launch_args(out, v_out, h_save), save)


def prob_backward_launch(g_out, g_v, h_save, v0, beta, scale, thr, temp, noise_key, stochastic, reset_code,
                         reset_value, detach, need_scale, dx, dv0, dbeta, dscale, dthr, dtemp):
    seed, first_step = (int(v) for v in noise_key.tolist())
    prob_backward(*launch_args(g_out, g_v, h_save, v0, beta, scale, thr, temp), seed, first_step, stochastic,
                  reset_code, reset_value, detach, need_scale, *launch_args(dx, dv0, dbeta, dscale, dthr, dtemp))
