"""The plain-PyTorch reference backend: each neuron family's update, written once.

These functions define the truth. Fused kernels (Numba, Triton) implement the same
equations with a hand-written backward and are tested against autograd through these.

Shapes: ``x`` is ``[T, *S]`` (time first); states and parameters broadcast to ``S``.
Each function returns ``(out, state)`` where ``out`` is ``[T, *S]`` and ``state`` is a
tuple of the final state tensors, in the order the function takes its initial states.

Common step (per time step ``t``)::

    h    = beta * v + input_scale * x[t]            (charge; IF: beta = 1)
    S    = H(h - theta)                              (fire; surrogate gradient backward)
    out  = S                 or theta * S            (threshold-robust firing, see below)
    v    = h - theta * S     ("subtract", soft reset)
         = h * (1 - S) + value * S   ("hard" reset to ``value``)
         = h                 ("none")

``detach_reset`` cuts the gradient through ``S`` in the reset term only.

Threshold-robust firing (TrSG, Kook et al., WACV 2026): the surrogate sees the relative
argument ``h / theta - 1`` and the output is ``theta * S``, so ``d out / d h`` does not
depend on the threshold's scale while the threshold learns.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

RESET_MODES = ("subtract", "hard", "none")


def fire(h: torch.Tensor, threshold: torch.Tensor, surrogate, threshold_robust: bool):
    """Return ``(out, S)``: the layer output and the unit spike used by the reset."""
    if threshold_robust:
        s = surrogate(h / threshold - 1.0)
        return threshold * s, s
    s = surrogate(h - threshold)
    return s, s


def reset_membrane(
    h: torch.Tensor, s: torch.Tensor, threshold: torch.Tensor, mode: str, value: float, detach_reset: bool
) -> torch.Tensor:
    """Membrane after the spike ``s`` of a step whose charged potential is ``h``."""
    if detach_reset:
        s = s.detach()
    if mode == "subtract":
        return h - threshold * s
    if mode == "hard":
        return h * (1.0 - s) + value * s
    if mode == "none":
        return h
    raise ValueError(f"reset: unknown mode {mode!r}; expected one of {RESET_MODES}")


def lif_sequence(
    x: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    input_scale: torch.Tensor,
    threshold: torch.Tensor,
    *,
    surrogate,
    reset_mode: str = "subtract",
    reset_value: float = 0.0,
    detach_reset: bool = False,
    threshold_robust: bool = False,
    trace: Optional[list] = None,
):
    """Leaky integrate-and-fire (IF when ``beta = 1``; PLIF when ``beta`` is learnable)."""
    outs = []
    for t in range(x.shape[0]):
        h = beta * v + input_scale * x[t]
        out, s = fire(h, threshold, surrogate, threshold_robust)
        v = reset_membrane(h, s, threshold, reset_mode, reset_value, detach_reset)
        if trace is not None:
            trace.append(h)
        outs.append(out)
    return torch.stack(outs), (v,)


def alif_sequence(
    x: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    beta: torch.Tensor,
    input_scale: torch.Tensor,
    threshold: torch.Tensor,
    rho: torch.Tensor,
    adaptation: torch.Tensor,
    *,
    surrogate,
    reset_mode: str = "subtract",
    reset_value: float = 0.0,
    detach_reset: bool = False,
    threshold_robust: bool = False,
    trace: Optional[list] = None,
):
    """Adaptive LIF (Bellec et al. 2018): ``theta_t = threshold + adaptation * a``.

    ``a`` is a spike trace, ``a <- rho * a + (1 - rho) * S`` after each step; the soft reset
    subtracts the effective threshold ``theta_t`` that the spike crossed.
    """
    outs = []
    for t in range(x.shape[0]):
        theta = threshold + adaptation * a
        h = beta * v + input_scale * x[t]
        out, s = fire(h, theta, surrogate, threshold_robust)
        v = reset_membrane(h, s, theta, reset_mode, reset_value, detach_reset)
        a = rho * a + (1.0 - rho) * s
        if trace is not None:
            trace.append(h)
        outs.append(out)
    return torch.stack(outs), (v, a)


def cuba_sequence(
    x: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    threshold: torch.Tensor,
    *,
    surrogate,
    reset_mode: str = "subtract",
    reset_value: float = 0.0,
    detach_reset: bool = False,
    threshold_robust: bool = False,
    trace: Optional[list] = None,
):
    """Current-based LIF: ``i <- alpha * i + x[t]``, then ``h = beta * v + i``."""
    outs = []
    for t in range(x.shape[0]):
        i = alpha * i + x[t]
        h = beta * v + i
        out, s = fire(h, threshold, surrogate, threshold_robust)
        v = reset_membrane(h, s, threshold, reset_mode, reset_value, detach_reset)
        if trace is not None:
            trace.append(h)
        outs.append(out)
    return torch.stack(outs), (v, i)


_M32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) on int64 tensors holding values < 2**32."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def counter_uniform(noise_key: torch.Tensor, steps: int, neurons: int, device) -> torch.Tensor:
    """Uniform numbers in [0, 1) for every (step, neuron), from a counter-based hash.

    ``noise_key`` is an int64 tensor ``(seed, first_step)``; with ``c = (first_step + t) * M + m``,
    ``u[t, m] = (hash(c, seed) >> 8) / 2**24``: the same numbers on every backend,
    recomputable in a backward pass instead of stored. The seed is drawn from torch's
    generator, so ``torch.manual_seed`` makes runs reproducible; ``first_step`` lets a
    stream of single steps reproduce a whole-sequence run.
    """
    key = noise_key.to(device=device, dtype=torch.int64)
    counter = torch.arange(steps * neurons, dtype=torch.int64, device=device) + key[1] * neurons
    key = mix32((counter >> 32) ^ key[0])
    bits = mix32((counter & _M32) ^ key)
    return ((bits >> 8).to(torch.float32) * 2.0**-24).view(steps, neurons)


def escape_spike(h: torch.Tensor, threshold: torch.Tensor, temperature: torch.Tensor,
                 noise: Optional[torch.Tensor]):
    """Stochastic spike ``S = [u < p]``, ``p = sigmoid((h - threshold) / temperature)``.

    Forward: a Bernoulli draw from the uniform ``noise`` ``u``. Backward: the derivative of
    the escape probability ``p`` (a straight-through estimator of ``E[S] = p``).
    Without noise the output is ``p`` itself (mean-field).
    """
    p = torch.sigmoid((h - threshold) / temperature)
    if noise is None:
        return p
    s = (noise < p).to(h.dtype)
    return s + (p - p.detach())


def probabilistic_sequence(
    x: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    input_scale: torch.Tensor,
    threshold: torch.Tensor,
    temperature: torch.Tensor,
    noise_key: Optional[torch.Tensor],
    *,
    reset_mode: str = "subtract",
    reset_value: float = 0.0,
    detach_reset: bool = False,
    trace: Optional[list] = None,
):
    """LIF with escape-noise firing. ``noise_key`` (int64 ``(seed, first_step)``) selects the
    noise of :func:`counter_uniform`; ``None`` outputs the firing probability (mean-field)."""
    steps, shape = x.shape[0], x.shape[1:]
    noise = None
    if noise_key is not None:
        noise = counter_uniform(noise_key, steps, math.prod(shape), x.device).to(x.dtype).view(x.shape)
    outs = []
    for t in range(steps):
        h = beta * v + input_scale * x[t]
        s = escape_spike(h, threshold, temperature, None if noise is None else noise[t])
        v = reset_membrane(h, s, threshold, reset_mode, reset_value, detach_reset)
        if trace is not None:
            trace.append(h)
        outs.append(s)
    return torch.stack(outs), (v,)


__all__ = ["fire", "reset_membrane", "lif_sequence", "alif_sequence", "cuba_sequence", "mix32",
           "counter_uniform", "escape_spike", "probabilistic_sequence"]
