"""Check a neuron's fused kernels against its reference: ``check_neuron(MyNeuron)``.

The same function checks every built-in spec and any user's: for each reset mode and
``detach_reset`` setting, in two gradient regimes (everything requiring gradients: input,
initial states, every parameter and the threshold; and only the input, the kernels' fast
path), on random inputs of several shapes, the fused backends must give the reference's
spikes exactly and its final states and gradients within float32 tolerance. A float64 run is
compared at float64 tolerance with the output dtype asserted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import torch

from spikelab import backends

DEFAULT_SHAPES = ((1, 3, 5), (9, 2, 3, 4), (33, 4, 70))


@dataclass
class NeuronCheck:
    """What :func:`check_neuron` compared: one line per case, and the cases it skipped (with why)."""

    cases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{len(self.cases)} cases agree"] + [f"  {c}" for c in self.cases]
        lines += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


def check_neuron(neuron: Union[type, Callable[..., torch.nn.Module]], *,
                 backends_to_check: Sequence[str] = ("numba", "triton"),
                 resets: Sequence[Union[str, float]] = ("subtract", "zero", "none"),
                 shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES, input_mean: float = 0.45,
                 input_std: float = 0.8, state_std: float = 0.2, tol: float = 2e-4, seed: int = 0,
                 float64: bool = True, **options) -> NeuronCheck:
    """Compare ``neuron``'s fused kernels with its reference; raise ``AssertionError`` on a difference.

    Args:
        neuron: a :class:`~spikelab.neurons.Neuron` subclass (or a built-in neuron class), or a
            function ``f(**options) -> module``. It is built with ``reset``, ``detach_reset``,
            ``learn`` and ``learn_threshold`` set per case, plus ``options``.
        backends_to_check: ``"numba"`` (CPU), ``"triton"`` (a GPU, or Triton's interpreter on CPU
            when ``TRITON_INTERPRET=1``; skipped otherwise, and said so in the result).
        resets: the reset modes to check.
        shapes: input shapes ``[T, B, ...]``.
        input_mean: the random input's mean (choose it and ``input_std`` so the neuron fires).
        input_std: the random input's standard deviation.
        state_std: the spread of the random initial states.
        tol: relative float32 tolerance of states and gradients.
        seed: random seed.
        float64: also compare in float64 at ``tol * 1e-6``, every output, state and gradient
            asserted to be float64.
    """
    report = NeuronCheck()
    available = _available(backends_to_check, report)
    gen = torch.Generator().manual_seed(seed)
    for reset in resets:
        for detach in (False, True):
            for regime in ("all", "x"):
                module = _build(neuron, reset=reset, detach_reset=detach, learn=regime == "all",
                                learn_threshold=regime == "all", **options)
                for shape in shapes:
                    case = f"reset={reset!r} detach_reset={detach} grads={regime} shape={shape}"
                    x = torch.randn(shape, generator=gen) * input_std + input_mean
                    states = [torch.randn(shape[1:], generator=gen) * state_std for _ in module.state_names]
                    w = torch.randn(shape, generator=gen)
                    ws = [torch.randn(shape[1:], generator=gen) for _ in module.state_names]
                    ref = _run(module, "torch", x, states, w, ws, regime)
                    for b in available:
                        got = _run(module, b, x, states, w, ws, regime)
                        _compare(got, ref, tol, f"{type(module).__name__} {b} {case}")
                    report.cases.append(case)
    if float64:
        module = _build(neuron, reset=resets[0], learn=True, learn_threshold=True, **options).double()
        shape = shapes[-1]
        x = (torch.randn(shape, generator=gen) * input_std + input_mean).double()
        states = [torch.randn(shape[1:], generator=gen).double() * state_std for _ in module.state_names]
        w = torch.randn(shape, generator=gen).double()
        ws = [torch.randn(shape[1:], generator=gen).double() for _ in module.state_names]
        ref = _run(module, "torch", x, states, w, ws, "all")
        for b in available:
            got = _run(module, b, x, states, w, ws, "all")
            # every output, state and gradient must be float64 like the reference's (_compare)
            _compare(got, ref, tol * 1e-6, f"{type(module).__name__} {b} float64 shape={shape}")
        report.cases.append(f"float64 shape={shape}")
    return report


def _available(names: Sequence[str], report: NeuronCheck) -> list[str]:
    out = []
    for b in names:
        if b == "triton" and not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            report.skipped.append("triton: no GPU and TRITON_INTERPRET is not 1")
            continue
        if not backends._installed(b):
            report.skipped.append(f"{b}: not installed")
            continue
        out.append(b)
    return out


def _build(neuron, **options) -> torch.nn.Module:
    from spikelab.neurons.spec import Neuron

    if isinstance(neuron, type) and not issubclass(neuron, Neuron):
        options.pop("learn")  # built-in families take learn_threshold only
    return neuron(**options)


def _run(module, backend: str, x, states, w, ws, regime: str) -> dict:
    """Outputs and gradients of ``module``'s implementation on ``backend`` from the given states."""
    device = torch.device("cuda") if backend == "triton" and torch.cuda.is_available() else torch.device("cpu")
    module = module.to(device)
    params, options = module._kernel_args(x.ndim - 1)
    impl = backends.resolve(module.family, backend, device,
                            smooth=module._reference_only())
    leaf_x = x.to(device).clone().requires_grad_(True)
    leaf_states = [s.to(device).clone().requires_grad_(regime == "all") for s in states]
    with _interpreter(backend, device):
        out, final = impl(leaf_x, *leaf_states, *params, *module._extra_inputs(x), **options)
        loss = (out * w.to(device)).sum() + sum((s * wi.to(device)).sum() for s, wi in zip(final, ws))
        inputs = [leaf_x] + [s for s in leaf_states if s.requires_grad]
        named = [p for p in module.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, inputs + named, allow_unused=True)
    result = {"out": out.detach().cpu(), **{f"state {i}": s.detach().cpu() for i, s in enumerate(final)}}
    result["grad x"] = grads[0]
    for i, g in enumerate(grads[1:len(inputs)]):
        result[f"grad initial state {i}"] = g
    for (name, _), g in zip([(n, p) for n, p in module.named_parameters() if p.requires_grad], grads[len(inputs):]):
        result[f"grad {name}"] = g
    return result


class _interpreter:
    """Run spec kernels through Triton's interpreter on CPU tensors for ``backend="triton"``."""

    def __init__(self, backend: str, device: torch.device) -> None:
        self.ctx = None
        if backend == "triton" and device.type == "cpu":
            from spikelab.kernels.generated import cpu_kernels

            self.ctx = cpu_kernels("triton")

    def __enter__(self):
        return self.ctx.__enter__() if self.ctx is not None else None

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc) if self.ctx is not None else None


def _compare(got: dict, ref: dict, tol: float, where: str) -> None:
    """``got`` against the reference's ``ref`` in the reference's dtype, which every output,
    state and gradient of ``got`` must have (nothing is cast: a float32 result of a float64
    run, or a float64 one of a float32 run, is an error, not a rounding)."""
    for key, b in ref.items():
        a = got.get(key)
        if a is not None and b is not None and a.dtype != b.dtype:
            raise AssertionError(f"{where}: {key}: the fused backend gave {a.dtype}, the reference {b.dtype}")
    if not torch.equal(got["out"], ref["out"]):
        n = (got["out"] != ref["out"]).sum().item()
        raise AssertionError(f"{where}: {n} of {ref['out'].numel()} outputs differ from the reference")
    for key, b in ref.items():
        if key == "out":
            continue
        a = got.get(key)
        if (a is None) != (b is None):
            raise AssertionError(f"{where}: {key}: {'missing' if a is None else 'unexpected'} on the fused backend")
        if a is None:
            continue
        a, b = a.detach().cpu(), b.detach().cpu()
        if not torch.isfinite(b).all():
            raise AssertionError(f"{where}: {key}: the reference itself is not finite; choose inputs or "
                                 "resets where the neuron stays bounded")
        scale = max(1.0, b.abs().max().item())
        try:
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * 0.1 * scale)
        except AssertionError as err:
            raise AssertionError(f"{where}: {key}: {err}") from None


__all__ = ["check_neuron", "NeuronCheck"]
