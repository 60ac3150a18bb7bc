"""Fused adaptive LIF on CUDA (``kernels/reference.py:alif_sequence``).

Backward replays the adaptation trace from the saved ``h`` into a scratch buffer (freed
when the backward returns), then walks time in reverse.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spikelab.kernels.triton.common import (div, fire_backward, fires, grad_strides, launch, reset_after,
                                            reset_partials, spike_out, surrogate_arg, surrogate_grad)


@triton.jit
def _alif_forward(x_ptr, v0_ptr, a0_ptr, beta_ptr, scale_ptr, thr_ptr, rho_ptr, adapt_ptr, out_ptr, vout_ptr,
                  aout_ptr, h_ptr, T, M, reset_value, RESET: tl.constexpr, ROBUST: tl.constexpr,
                  SAVE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    a = tl.load(a0_ptr + offs, mask=mask, other=0.0)
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    sc = tl.load(scale_ptr + offs, mask=mask, other=0.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    r = tl.load(rho_ptr + offs, mask=mask, other=0.0)
    ad = tl.load(adapt_ptr + offs, mask=mask, other=0.0)
    row = offs.to(tl.int64)
    for t in range(T):
        theta = th + ad * a
        x = tl.load(x_ptr + row, mask=mask, other=0.0).to(v.dtype)
        h = b * v + sc * x
        fired = fires(h, theta, ROBUST)
        s = tl.where(fired, 1.0, 0.0)
        out = spike_out(fired, theta, ROBUST)
        tl.store(out_ptr + row, out.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(h_ptr + row, h, mask=mask)
        v = reset_after(h, theta, fired, reset_value, RESET)
        a = r * a + (1.0 - r) * s
        row += M
    tl.store(vout_ptr + offs, v, mask=mask)
    tl.store(aout_ptr + offs, a, mask=mask)


@triton.jit
def _alif_backward(g_ptr, g_last, gs_t, gs_m, gv_ptr, ga_ptr, h_ptr, ahist_ptr, v0_ptr, a0_ptr, beta_ptr,
                   scale_ptr, thr_ptr, rho_ptr, adapt_ptr, dx_ptr, dv0_ptr, da0_ptr, dbeta_ptr, dscale_ptr,
                   dthr_ptr, drho_ptr, dadapt_ptr, T, M, last_row, reset_value, sg_alpha, RESET: tl.constexpr,
                   DETACH: tl.constexpr, ROBUST: tl.constexpr, SG: tl.constexpr, NEED_SCALE: tl.constexpr,
                   BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    sc = tl.load(scale_ptr + offs, mask=mask, other=1.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    r = tl.load(rho_ptr + offs, mask=mask, other=0.0)
    ad = tl.load(adapt_ptr + offs, mask=mask, other=0.0)
    # replay: ahist[t] = the trace before step t
    a = tl.load(a0_ptr + offs, mask=mask, other=0.0)
    row = offs.to(tl.int64)
    for t in range(T):
        tl.store(ahist_ptr + row, a, mask=mask)
        h = tl.load(h_ptr + row, mask=mask, other=0.0)
        s = tl.where(fires(h, th + ad * a, ROBUST), 1.0, 0.0)
        a = r * a + (1.0 - r) * s
        row += M
    dv = tl.load(gv_ptr + offs, mask=mask, other=0.0)
    da = tl.load(ga_ptr + offs, mask=mask, other=0.0)
    v_first = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    acc_beta = dv * 0
    acc_scale = dv * 0
    acc_thr = dv * 0
    acc_rho = dv * 0
    acc_adapt = dv * 0
    row = offs.to(tl.int64) + last_row
    g_off = offs.to(tl.int64) * gs_m + g_last
    for i in range(T):
        t = T - 1 - i
        h = tl.load(h_ptr + row, mask=mask, other=0.0)
        a_prev = tl.load(ahist_ptr + row, mask=mask, other=0.0)
        g = tl.load(g_ptr + g_off, mask=mask, other=0.0).to(h.dtype)
        theta = th + ad * a_prev
        z = surrogate_arg(h, theta, ROBUST)
        s = tl.where(z >= 0.0, 1.0, 0.0)
        dv_ds, dv_dh, dv_dth = reset_partials(h, theta, s, reset_value, RESET, DETACH)
        dh, dtheta = fire_backward(g, dv, h, theta, s, surrogate_grad(z, sg_alpha, SG), dv_ds, dv_dh, dv_dth,
                                   da * (1.0 - r), ROBUST)
        tl.store(dx_ptr + row, (sc * dh).to(dx_ptr.dtype.element_ty), mask=mask)
        acc_thr += dtheta
        acc_adapt += dtheta * a_prev
        acc_rho += da * (a_prev - s)
        if t > 0:
            hp = tl.load(h_ptr + row - M, mask=mask, other=0.0)
            theta_p = th + ad * tl.load(ahist_ptr + row - M, mask=mask, other=0.0)
            v_prev = reset_after(hp, theta_p, fires(hp, theta_p, ROBUST), reset_value, RESET)
        else:
            v_prev = v_first
        acc_beta += dh * v_prev
        if NEED_SCALE:
            acc_scale += dh * div(h - b * v_prev, sc)
        dv = b * dh
        da = r * da + ad * dtheta
        row -= M
        g_off -= gs_t
    tl.store(dv0_ptr + offs, dv, mask=mask)
    tl.store(da0_ptr + offs, da, mask=mask)
    tl.store(dbeta_ptr + offs, acc_beta, mask=mask)
    tl.store(dscale_ptr + offs, acc_scale, mask=mask)
    tl.store(dthr_ptr + offs, acc_thr, mask=mask)
    tl.store(drho_ptr + offs, acc_rho, mask=mask)
    tl.store(dadapt_ptr + offs, acc_adapt, mask=mask)


def alif_forward_launch(x, v0, a0, beta, scale, thr, rho, adapt, reset_code, reset_value, robust,
                        out, v_out, a_out, h_save, save):
    T, M = x.shape
    h = h_save if save else v_out
    launch(_alif_forward, M, x, v0, a0, beta, scale, thr, rho, adapt, out, v_out, a_out, h, T, M,
           float(reset_value), RESET=reset_code, ROBUST=bool(robust), SAVE=bool(save))


def alif_backward_launch(g_out, g_v, g_a, h_save, v0, a0, beta, scale, thr, rho, adapt, reset_code, reset_value,
                         detach, robust, sg_code, sg_alpha, need_scale, dx, dv0, da0, dbeta, dscale, dthr, drho,
                         dadapt):
    T, M = h_save.shape
    gs_t, gs_m = grad_strides(g_out)
    a_hist = torch.empty_like(h_save)
    launch(_alif_backward, M, g_out, (T - 1) * gs_t, gs_t, gs_m, g_v, g_a, h_save, a_hist, v0, a0, beta, scale, thr,
           rho, adapt, dx, dv0, da0, dbeta, dscale, dthr, drho, dadapt, T, M, (T - 1) * M, float(reset_value),
           float(sg_alpha), RESET=reset_code, DETACH=bool(detach), ROBUST=bool(robust), SG=sg_code,
           NEED_SCALE=bool(need_scale))
