"""Fused probabilistic (escape-noise) LIF on CUDA (``kernels/reference.py:probabilistic_sequence``).

The uniform numbers are the counter-based hash of ``reference.counter_uniform``, computed in
the kernel; backward recomputes each spike from the saved ``h`` and the hash.
"""

from __future__ import annotations

import triton
import triton.language as tl

from spikelab.kernels.triton.common import grad_strides, launch, reset_partials


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


@triton.jit
def _uniform(seed, counter):
    """``counter`` int64; the same number as ``reference.counter_uniform``."""
    key = _mix32((counter >> 32) ^ seed)
    bits = _mix32((counter & 0xFFFFFFFF) ^ key)
    return (bits >> 8).to(tl.float32) * 5.960464477539063e-08


@triton.jit
def _spike(h, th, tp, seed, counter, STOCHASTIC: tl.constexpr):
    p = 1.0 / (1.0 + tl.exp(-((h - th) / tp)))
    if STOCHASTIC:
        s = tl.where(_uniform(seed, counter) < p, 1.0, 0.0)
    else:
        s = p
    return s, p


@triton.jit
def _reset(h, s, th, reset_value, RESET: tl.constexpr):
    if RESET == 0:
        return h - th * s
    elif RESET == 1:
        return h * (1.0 - s) + reset_value * s
    else:
        return h


@triton.jit
def _prob_forward(x_ptr, v0_ptr, beta_ptr, scale_ptr, thr_ptr, temp_ptr, out_ptr, vout_ptr, h_ptr, seed, first_row,
                  T, M, reset_value, STOCHASTIC: tl.constexpr, RESET: tl.constexpr, SAVE: tl.constexpr,
                  BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    sc = tl.load(scale_ptr + offs, mask=mask, other=0.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    tp = tl.load(temp_ptr + offs, mask=mask, other=1.0)
    row = offs.to(tl.int64)
    counter = offs.to(tl.int64) + first_row
    for t in range(T):
        x = tl.load(x_ptr + row, mask=mask, other=0.0).to(v.dtype)
        h = b * v + sc * x
        s, p = _spike(h, th, tp, seed, counter, STOCHASTIC)
        tl.store(out_ptr + row, s.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(h_ptr + row, h, mask=mask)
        v = _reset(h, s, th, reset_value, RESET)
        row += M
        counter += M
    tl.store(vout_ptr + offs, v, mask=mask)


@triton.jit
def _prob_backward(g_ptr, g_last, gs_t, gs_m, gv_ptr, h_ptr, v0_ptr, beta_ptr, scale_ptr, thr_ptr, temp_ptr,
                   dx_ptr, dv0_ptr, dbeta_ptr, dscale_ptr, dthr_ptr, dtemp_ptr, seed, first_row, T, M, last_row,
                   reset_value, STOCHASTIC: tl.constexpr, RESET: tl.constexpr, DETACH: tl.constexpr,
                   NEED_SCALE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    sc = tl.load(scale_ptr + offs, mask=mask, other=1.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    tp = tl.load(temp_ptr + offs, mask=mask, other=1.0)
    dv = tl.load(gv_ptr + offs, mask=mask, other=0.0)
    v_first = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    acc_beta = dv * 0
    acc_scale = dv * 0
    acc_thr = dv * 0
    acc_temp = dv * 0
    row = offs.to(tl.int64) + last_row
    counter = offs.to(tl.int64) + first_row + last_row
    g_off = offs.to(tl.int64) * gs_m + g_last
    for i in range(T):
        t = T - 1 - i
        h = tl.load(h_ptr + row, mask=mask, other=0.0)
        g = tl.load(g_ptr + g_off, mask=mask, other=0.0).to(h.dtype)
        s, p = _spike(h, th, tp, seed, counter, STOCHASTIC)
        z = (h - th) / tp
        dv_ds, dv_dh, dv_dth = reset_partials(h, th, s, reset_value, RESET, DETACH)
        dp = (g + dv * dv_ds) * p * (1.0 - p)
        dh = dp / tp + dv * dv_dh
        tl.store(dx_ptr + row, (sc * dh).to(dx_ptr.dtype.element_ty), mask=mask)
        acc_thr += -dp / tp + dv * dv_dth
        acc_temp += -dp * z / tp
        if t > 0:
            hp = tl.load(h_ptr + row - M, mask=mask, other=0.0)
            sp, pp = _spike(hp, th, tp, seed, counter - M, STOCHASTIC)
            v_prev = _reset(hp, sp, th, reset_value, RESET)
        else:
            v_prev = v_first
        acc_beta += dh * v_prev
        if NEED_SCALE:
            acc_scale += dh * (h - b * v_prev) / sc
        dv = b * dh
        row -= M
        counter -= M
        g_off -= gs_t
    tl.store(dv0_ptr + offs, dv, mask=mask)
    tl.store(dbeta_ptr + offs, acc_beta, mask=mask)
    tl.store(dscale_ptr + offs, acc_scale, mask=mask)
    tl.store(dthr_ptr + offs, acc_thr, mask=mask)
    tl.store(dtemp_ptr + offs, acc_temp, mask=mask)


def prob_forward_launch(x, v0, beta, scale, thr, temp, noise_key, stochastic, reset_code, reset_value,
                        out, v_out, h_save, save):
    T, M = x.shape
    seed, first_step = (int(v) for v in noise_key.tolist())
    h = h_save if save else v_out
    launch(_prob_forward, M, x, v0, beta, scale, thr, temp, out, v_out, h, seed, first_step * M, T, M,
           float(reset_value), STOCHASTIC=bool(stochastic), RESET=reset_code, SAVE=bool(save))


def prob_backward_launch(g_out, g_v, h_save, v0, beta, scale, thr, temp, noise_key, stochastic, reset_code,
                         reset_value, detach, need_scale, dx, dv0, dbeta, dscale, dthr, dtemp):
    T, M = h_save.shape
    seed, first_step = (int(v) for v in noise_key.tolist())
    gs_t, gs_m = grad_strides(g_out)
    launch(_prob_backward, M, g_out, (T - 1) * gs_t, gs_t, gs_m, g_v, h_save, v0, beta, scale, thr, temp, dx, dv0,
           dbeta, dscale, dthr, dtemp, seed, first_step * M, T, M, (T - 1) * M, float(reset_value),
           STOCHASTIC=bool(stochastic), RESET=reset_code, DETACH=bool(detach), NEED_SCALE=bool(need_scale))
