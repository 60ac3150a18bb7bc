"""Fused LIF / IF / PLIF on CUDA (``kernels/reference.py:lif_sequence``).

One program owns ``BLOCK`` neurons and walks the time axis, the membrane in registers.
Forward saves ``h`` (float32) when a backward follows; backward walks time in reverse and
recomputes spikes and the previous membrane from it.
"""

from __future__ import annotations

import triton
import triton.language as tl

from spikelab.kernels.triton.common import (div, fire_backward, fires, grad_strides, launch, reset_after,
                                            reset_partials, spike_out, surrogate_arg, surrogate_grad)


@triton.jit
def _lif_forward(x_ptr, v0_ptr, beta_ptr, scale_ptr, thr_ptr, out_ptr, vout_ptr, h_ptr, T, M, reset_value,
                 RESET: tl.constexpr, ROBUST: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    sc = tl.load(scale_ptr + offs, mask=mask, other=0.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    row = offs.to(tl.int64)
    for t in range(T):
        x = tl.load(x_ptr + row, mask=mask, other=0.0).to(v.dtype)
        h = b * v + sc * x
        fired = fires(h, th, ROBUST)
        out = spike_out(fired, th, ROBUST)
        tl.store(out_ptr + row, out.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(h_ptr + row, h, mask=mask)
        v = reset_after(h, th, fired, reset_value, RESET)
        row += M
    tl.store(vout_ptr + offs, v, mask=mask)


@triton.jit
def _lif_backward(g_ptr, g_last, gs_t, gs_m, gv_ptr, h_ptr, v0_ptr, beta_ptr, scale_ptr, thr_ptr, dx_ptr, dv0_ptr,
                  dbeta_ptr, dscale_ptr, dthr_ptr, T, M, last_row, reset_value, sg_alpha, RESET: tl.constexpr,
                  DETACH: tl.constexpr, ROBUST: tl.constexpr, SG: tl.constexpr, NEED_SCALE: tl.constexpr,
                  BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    dv = tl.load(gv_ptr + offs, mask=mask, other=0.0)
    b = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    sc = tl.load(scale_ptr + offs, mask=mask, other=1.0)
    th = tl.load(thr_ptr + offs, mask=mask, other=1.0)
    v_first = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    acc_beta = dv * 0
    acc_scale = dv * 0
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
        tl.store(dx_ptr + row, (sc * dh).to(dx_ptr.dtype.element_ty), mask=mask)
        if t > 0:
            hp = tl.load(h_ptr + row - M, mask=mask, other=0.0)
            v_prev = reset_after(hp, th, fires(hp, th, ROBUST), reset_value, RESET)
        else:
            v_prev = v_first
        acc_beta += dh * v_prev
        if NEED_SCALE:
            acc_scale += dh * div(h - b * v_prev, sc)
        dv = b * dh
        row -= M
        g_off -= gs_t
    tl.store(dv0_ptr + offs, dv, mask=mask)
    tl.store(dbeta_ptr + offs, acc_beta, mask=mask)
    tl.store(dscale_ptr + offs, acc_scale, mask=mask)
    tl.store(dthr_ptr + offs, acc_thr, mask=mask)


def lif_forward_launch(x, v0, beta, scale, thr, reset_code, reset_value, robust, out, v_out, h_save, save):
    T, M = x.shape
    h = h_save if save else v_out  # never written when SAVE is off
    launch(_lif_forward, M, x, v0, beta, scale, thr, out, v_out, h, T, M, float(reset_value),
           RESET=reset_code, ROBUST=bool(robust), SAVE=bool(save))


def lif_backward_launch(g_out, g_v, h_save, v0, beta, scale, thr, reset_code, reset_value, detach, robust,
                        sg_code, sg_alpha, need_beta, need_scale, need_thr, dx, dv0, dbeta, dscale, dthr):
    T, M = h_save.shape
    gs_t, gs_m = grad_strides(g_out)
    launch(_lif_backward, M, g_out, (T - 1) * gs_t, gs_t, gs_m, g_v, h_save, v0, beta, scale, thr, dx, dv0, dbeta,
           dscale, dthr, T, M, (T - 1) * M, float(reset_value), float(sg_alpha), RESET=reset_code, DETACH=bool(detach), ROBUST=bool(robust),
           SG=sg_code, NEED_SCALE=bool(need_scale))
