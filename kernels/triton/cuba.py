"""Fused current-based LIF on CUDA (``kernels/reference.py:cuba_sequence``).

Backward recomputes the previous synaptic current from the saved ``h``
(``i[t] = h[t] - beta * v[t-1]``) and walks time in reverse.
"""

from __future__ import annotations

import triton
import triton.language as tl

from spikelab.kernels.triton.common import (fire_backward, fires, grad_strides, launch, reset_after, reset_partials,
                                            spike_out, surrogate_arg, surrogate_grad)


@triton.jit
def _cuba_forward(x_ptr, v0_ptr, i0_ptr, alpha_ptr, beta_ptr, thr_ptr, out_ptr, vout_ptr, iout_ptr, h_ptr, T, M,
                  reset_value, RESET: tl.constexpr, ROBUST: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    cur = tl.load(i0_ptr + offs, mask=mask, other=0.0)
    al = tl.load(alpha_ptr + offs, mask=mask, other=0.0)
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    row = offs.to(tl.int64)
    for t in range(T):
        x = tl.load(x_ptr + row, mask=mask, other=0.0).to(v.dtype)
        cur = al * cur + x
        h = b * v + cur
        fired = fires(h, th, ROBUST)
        out = spike_out(fired, th, ROBUST)
        tl.store(out_ptr + row, out.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(h_ptr + row, h, mask=mask)
        v = reset_after(h, th, fired, reset_value, RESET)
        row += M
    tl.store(vout_ptr + offs, v, mask=mask)
    tl.store(iout_ptr + offs, cur, mask=mask)


@triton.jit
def _v_after(h_ptr, row, mask, th, reset_value, RESET: tl.constexpr, ROBUST: tl.constexpr):
    h = tl.load(h_ptr + row, mask=mask, other=0.0)
    return reset_after(h, th, fires(h, th, ROBUST), reset_value, RESET)


@triton.jit
def _cuba_backward(g_ptr, g_last, gs_t, gs_m, gv_ptr, gi_ptr, h_ptr, v0_ptr, i0_ptr, alpha_ptr, beta_ptr, thr_ptr,
                   dx_ptr, dv0_ptr, di0_ptr, dalpha_ptr, dbeta_ptr, dthr_ptr, T, M, last_row, reset_value, sg_alpha,
                   RESET: tl.constexpr, DETACH: tl.constexpr, ROBUST: tl.constexpr, SG: tl.constexpr,
                   BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    al = tl.load(alpha_ptr + offs, mask=mask, other=0.0)
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    dv = tl.load(gv_ptr + offs, mask=mask, other=0.0)
    di = tl.load(gi_ptr + offs, mask=mask, other=0.0)
    v_first = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    i_first = tl.load(i0_ptr + offs, mask=mask, other=0.0)
    acc_alpha = dv * 0
    acc_beta = dv * 0
    acc_thr = dv * 0
    row = offs.to(tl.int64) + last_row
    g_off = offs.to(tl.int64) * gs_m + g_last
    for i in range(T):
        t = T - 1 - i
        h = tl.load(h_ptr + row, mask=mask, other=0.0)
        g = tl.load(g_ptr + g_off, mask=mask, other=0.0).to(h.dtype)
        z = surrogate_arg(h, th, ROBUST)
        s = tl.where(z >= 0.0, 1.0, 0.0)
        dv_ds, dv_dh, dv_dth = reset_partials(h, th, s, reset_value, RESET, DETACH)
        dh, dth = fire_backward(g, dv, h, th, s, surrogate_grad(z, sg_alpha, SG), dv_ds, dv_dh, dv_dth, 0.0, ROBUST)
        acc_thr += dth
        di_total = dh + di
        tl.store(dx_ptr + row, di_total.to(dx_ptr.dtype.element_ty), mask=mask)
        if t > 0:
            v_prev = _v_after(h_ptr, row - M, mask, th, reset_value, RESET, ROBUST)
            if t > 1:
                v_prev2 = _v_after(h_ptr, row - 2 * M, mask, th, reset_value, RESET, ROBUST)
            else:
                v_prev2 = v_first
            i_prev = tl.load(h_ptr + row - M, mask=mask, other=0.0) - b * v_prev2
        else:
            v_prev = v_first
            i_prev = i_first
        acc_beta += dh * v_prev
        acc_alpha += di_total * i_prev
        di = al * di_total
        dv = b * dh
        row -= M
        g_off -= gs_t
    tl.store(dv0_ptr + offs, dv, mask=mask)
    tl.store(di0_ptr + offs, di, mask=mask)
    tl.store(dalpha_ptr + offs, acc_alpha, mask=mask)
    tl.store(dbeta_ptr + offs, acc_beta, mask=mask)
    tl.store(dthr_ptr + offs, acc_thr, mask=mask)


def cuba_forward_launch(x, v0, i0, alpha, beta, thr, reset_code, reset_value, robust, out, v_out, i_out,
                        h_save, save):
    T, M = x.shape
    h = h_save if save else v_out
    launch(_cuba_forward, M, x, v0, i0, alpha, beta, thr, out, v_out, i_out, h, T, M, float(reset_value),
           RESET=reset_code, ROBUST=bool(robust), SAVE=bool(save))


def cuba_backward_launch(g_out, g_v, g_i, h_save, v0, i0, alpha, beta, thr, reset_code, reset_value, detach,
                         robust, sg_code, sg_alpha, dx, dv0, di0, dalpha, dbeta, dthr):
    T, M = h_save.shape
    gs_t, gs_m = grad_strides(g_out)
    launch(_cuba_backward, M, g_out, (T - 1) * gs_t, gs_t, gs_m, g_v, g_i, h_save, v0, i0, alpha, beta, thr, dx, dv0,
           di0, dalpha, dbeta, dthr, T, M, (T - 1) * M, float(reset_value), float(sg_alpha), RESET=reset_code,
           DETACH=bool(detach), ROBUST=bool(robust), SG=sg_code)
