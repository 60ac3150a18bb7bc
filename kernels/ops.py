"""The built-in families' fused kernels, with the reference backend's signatures.

Every family's kernels are generated from its step graph (``spikelab.kernels.families``) and
run through the one pair of custom ops in ``spikelab.kernels.generated``; these wrappers only
put the reference's arguments in the graph's order (parameters, then the threshold).
``backend="triton"`` on CPU tensors runs the Triton kernels in Triton's interpreter.
"""

from __future__ import annotations

from typing import Optional

_KEYS: dict[str, str] = {}


def _generated_keys() -> dict[str, str]:
    """The kernel key of each built-in family (registered once, outside any compiled region)."""
    if not _KEYS:
        from spikelab.kernels import families, generated

        _KEYS.update({name: generated.register(make()) for name, make in families.GENERATED.items()})
    return _KEYS


def _run(family: str, x, states, params, backend: str, trace: Optional[list], block=None, **options):
    from spikelab.kernels import generated

    if trace is not None:
        raise ValueError("membrane traces are recorded by the reference backend (backend='torch')")
    key = _generated_keys()[family]
    if backend == "triton" and x.device.type == "cpu":
        with generated.cpu_kernels("triton"):
            return generated.sequence(key, x, *states, *params, block=block, **options)
    return generated.sequence(key, x, *states, *params, block=block, **options)


def lif_sequence(x, v, beta, input_scale, threshold, *, surrogate, reset_mode="subtract", reset_value=0.0,
                 detach_reset=False, threshold_robust=False, trace=None, backend="numba", block=None):
    """Fused equivalent of :func:`spikelab.kernels.reference.lif_sequence`."""
    return _run("lif", x, (v,), (beta, input_scale, threshold), backend, trace, block, surrogate=surrogate,
                reset_mode=reset_mode, reset_value=reset_value, detach_reset=detach_reset,
                threshold_robust=threshold_robust)


def alif_sequence(x, v, a, beta, input_scale, threshold, rho, adaptation, *, surrogate, reset_mode="subtract",
                  reset_value=0.0, detach_reset=False, threshold_robust=False, trace=None, backend="numba", block=None):
    """Fused equivalent of :func:`spikelab.kernels.reference.alif_sequence`."""
    return _run("alif", x, (v, a), (beta, input_scale, rho, adaptation, threshold), backend, trace, block,
                surrogate=surrogate, reset_mode=reset_mode, reset_value=reset_value, detach_reset=detach_reset,
                threshold_robust=threshold_robust)


def cuba_sequence(x, v, i, alpha, beta, threshold, *, surrogate, reset_mode="subtract", reset_value=0.0,
                  detach_reset=False, threshold_robust=False, trace=None, backend="numba", block=None):
    """Fused equivalent of :func:`spikelab.kernels.reference.cuba_sequence`."""
    return _run("cuba", x, (v, i), (alpha, beta, threshold), backend, trace, block, surrogate=surrogate,
                reset_mode=reset_mode, reset_value=reset_value, detach_reset=detach_reset,
                threshold_robust=threshold_robust)


def probabilistic_sequence(x, v, beta, input_scale, threshold, temperature, noise_key, *, reset_mode="subtract",
                           reset_value=0.0, detach_reset=False, trace=None, backend="numba", block=None):
    """Fused equivalent of :func:`spikelab.kernels.reference.probabilistic_sequence`."""
    return _run("probabilistic", x, (v,), (beta, input_scale, temperature, threshold), backend, trace, block,
                noise_key=noise_key, reset_mode=reset_mode, reset_value=reset_value, detach_reset=detach_reset)


__all__ = ["lif_sequence", "alif_sequence", "cuba_sequence", "probabilistic_sequence"]
