"""Neuron specs: every spec in the library through the same generated checks, multi-state specs
against the hand-written families, the issue's EIF example as written, and bad specs refused."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab.neurons import Neuron, NeuronSpecError, exp, sqrt
from spikelab.testing import check_neuron


def library_specs() -> list[type]:
    """Every Neuron subclass the library defines (a new one-file neuron is picked up here)."""
    found, stack = [], list(Neuron.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("spikelab."):
            found.append(cls)
    return sorted(set(found), key=lambda c: c.__name__)


def test_library_specs_found():
    names = {c.__name__ for c in library_specs()}
    assert {"EIF", "MPRLIF"} <= names


# Triton's interpreter walks the time axis in Python: the Triton kernels are checked on short
# sequences (one step; several steps over a 4-D input; two programs of neurons, the second
# masked), the Numba kernels on the default shapes too (long sequences, time chunks).
TRITON_SHAPES = ((1, 3, 5), (9, 2, 3, 4), (4, 2, 130))


def check_both(neuron, shapes=None, **options):
    """``check_neuron`` on Numba (``shapes``, else the defaults; never skipped) and on Triton
    (TRITON_SHAPES; skipped, as check_neuron says, without Triton): the cases of both."""
    numba = check_neuron(neuron, backends_to_check=("numba",), **({"shapes": shapes} if shapes else {}), **options)
    triton = check_neuron(neuron, backends_to_check=("triton",), shapes=TRITON_SHAPES, **options)
    assert not numba.skipped, numba.skipped
    return numba.cases + triton.cases


@pytest.mark.parametrize("cls", library_specs(), ids=lambda c: c.__name__)
def test_library_spec_matches_reference(cls):
    cases = check_both(cls, **getattr(cls, "check_options", {}))
    assert len(cases) > 20


# ----- the example, as written -----------------------------------------------------------

class EIF(Neuron):
    """Exponential integrate-and-fire."""
    parameters = dict(tau=10.0, delta=0.5, v_rheo=0.8)      # per layer, per channel or per neuron

    def charge(self, v, x, tau, delta, v_rheo):            # elementwise: + - * /, exp, ...
        return v + (-v + delta * exp((v - v_rheo) / delta) + x) / tau


def test_eif_example_fused_equals_reference():
    x = torch.randn(100, 16, 64) * 2 + 1.5
    results = {}
    for backend in ("auto", "torch"):
        layer = EIF(threshold=1.0, reset="subtract", surrogate="atan", backend=backend, learn=True)
        xx = x.clone().requires_grad_(True)
        spikes = layer(xx)
        (spikes * torch.linspace(-1, 1, 64)).sum().backward()
        results[backend] = (spikes.detach(), xx.grad, layer.tau.grad, layer.delta.grad, layer.v_rheo.grad)
    fused, ref = results["auto"], results["torch"]
    assert torch.equal(fused[0], ref[0])
    assert 0.05 < ref[0].mean() < 0.95, "the example must fire, but not always"
    for a, b in zip(fused[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5 * max(1.0, b.abs().max().item()))


def test_spec_parameters_per_layer_channel_neuron_and_learnable():
    layer = EIF(tau=torch.tensor([5.0, 10.0, 20.0]), num_channels=3, learn=("tau",))
    assert isinstance(layer.tau, nn.Parameter) and not isinstance(layer.delta, nn.Parameter)
    assert [n for n, _ in layer.named_parameters()] == ["tau"]  # parameters() is still nn.Module's
    x = torch.rand(20, 2, 3, 4) * 3
    ref = EIF(tau=torch.tensor([5.0, 10.0, 20.0]), num_channels=3, backend="torch")(x)
    torch.testing.assert_close(layer(x), ref, rtol=0, atol=0)
    per_neuron = EIF(v_rheo=torch.full((3, 4), 0.8), backend="auto")
    torch.testing.assert_close(per_neuron(x), EIF(backend="auto")(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"EIF.tau: expected every value > 0"):
        sl.EIF(tau=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="learn: EIF has no parameter"):
        EIF(learn=("gain",))


def test_spec_step_equals_forward_and_compiles(fresh_dynamo):
    layer = sl.EIF(backend="auto")
    x = torch.rand(12, 3, 5) * 3
    whole = layer(x)
    steps = torch.stack([layer.step(x[t]) for t in range(12)])
    assert torch.equal(whole, steps)
    compiled = torch.compile(layer, fullgraph=True)
    assert torch.equal(compiled(x), whole)


# ----- several states: against the hand-written families ----------------------------------------

class SpecCurrentLIF(Neuron):
    """snnTorch's Synaptic as a spec: the current decays, the membrane integrates it."""
    parameters = dict(alpha=0.6, beta=0.8)
    states = ("v", "i")

    def charge(self, v, i, x, alpha, beta):
        i_new = alpha * i + x
        return {"i": i_new, "v": beta * v + i_new}


class SpecAdaptiveLIF(Neuron):
    """Bellec's adaptive LIF as a spec: the threshold rises with a spike trace."""
    parameters = dict(beta=0.8, rho=0.9, adaptation=1.8)
    states = ("v", "a")

    def charge(self, v, x, beta):
        return beta * v + x

    def effective_threshold(self, threshold, a, adaptation):
        return threshold + adaptation * a

    def after_spike(self, spike, a, rho):
        return {"a": rho * a + (1.0 - rho) * spike}


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_multi_state_specs_equal_built_in_families(reset):
    x = torch.randn(40, 3, 50) * 0.8 + 0.5
    pairs = [(SpecCurrentLIF(reset=reset), sl.CurrentLIF(alpha=0.6, beta=0.8, reset=reset)),
             (SpecAdaptiveLIF(reset=reset), sl.AdaptiveLIF(beta=0.8, rho=0.9, adaptation=1.8, reset=reset))]
    for spec, built_in in pairs:
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out_spec, out_built = spec(a), built_in(b)
        assert torch.equal(out_spec, out_built), type(spec).__name__
        out_spec.sum().backward()
        out_built.sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("cls", [SpecCurrentLIF, SpecAdaptiveLIF], ids=lambda c: c.__name__)
def test_multi_state_specs_pass_check_neuron(cls):
    assert len(check_both(cls, shapes=((1, 2, 3), (17, 3, 20)))) > 20


def test_check_neuron_catches_a_kernel_that_differs_from_the_reference():
    class Drifting(Neuron):
        """The kernels are traced from the first call; the reference reads the flag each step."""
        parameters = dict(beta=0.9)

        def charge(self, v, x, beta):
            return beta * v + x * self.gain

    Drifting.gain = 1.0
    layer_check = check_neuron(Drifting, resets=("subtract",), shapes=((8, 2, 30),), float64=False)
    assert layer_check.cases
    original = Drifting.__init__

    def drifting_init(self, **kw):
        original(self, **kw)
        self.step_graph()        # traced with gain 1 ...
        self.gain = 1.5          # ... and the reference now scales the input by 1.5
    Drifting.__init__ = drifting_init
    with pytest.raises(AssertionError, match="outputs differ from the reference"):
        check_neuron(Drifting, resets=("subtract",), shapes=((8, 2, 30),), float64=False)


# ----- bad specs ---------------------------------------------------------------------------------

def test_unsupported_operation_refused_at_class_definition():
    with pytest.raises(NeuronSpecError, match=r"Sine: charge: torch.sin cannot be compiled"):
        class Sine(Neuron):
            def charge(self, v, x):
                return torch.sin(v) + x


def test_python_if_refused_with_the_replacement():
    with pytest.raises(NeuronSpecError, match=r"Branchy: charge: .*use where\(condition, a, b\)"):
        class Branchy(Neuron):
            def charge(self, v, x):
                return v + x if v > 0 else x


def test_undeclared_parameter_refused():
    with pytest.raises(NeuronSpecError, match=r"Leaky: charge reads 'tau', which is not declared"):
        class Leaky(Neuron):
            def charge(self, v, x, tau):
                return v + x / tau


def test_wrong_number_of_state_values_refused():
    with pytest.raises(NeuronSpecError, match=r"TwoState: charge returns 3 values for 2 states"):
        class TwoState(Neuron):
            states = ("v", "i")

            def charge(self, v, i, x):
                return v, i, x


def test_tensor_in_equations_and_bad_after_spike_refused():
    class Gain(Neuron):
        def charge(self, v, x):
            return v + x * self.gain

    layer = Gain()
    layer.gain = torch.ones(3)
    with pytest.raises(NeuronSpecError, match=r"Gain: charge: a tensor inside a neuron's equations"):
        layer(torch.rand(4, 2, 3))
    with pytest.raises(NeuronSpecError, match=r"Resetting: after_spike returns the firing state 'v'"):
        class Resetting(Neuron):
            def charge(self, v, x):
                return v + x

            def after_spike(self, spike, v):
                return {"v": v * (1 - spike)}


def test_wrong_shape_found_at_first_call():
    layer = sl.EIF(v_rheo=torch.full((3, 7), 0.8), backend="torch")
    with pytest.raises(ValueError, match=r"EIF: parameter 'v_rheo' has one value per neuron of shape \(3, 7\), "
                                         r"which does not fit the per-sample shape \(4,\)"):
        layer(torch.rand(5, 2, 4))


def test_comparison_outside_where_and_clashing_names_refused():
    with pytest.raises(NeuronSpecError, match=r"Gate: charge: a comparison .* where\(condition, a, b\)"):
        class Gate(Neuron):
            def charge(self, v, x):
                return v + x * (v > 0.5)
    with pytest.raises(NeuronSpecError, match=r"Clash: 'reset_value' clashes with a neuron attribute"):
        class Clash(Neuron):
            parameters = dict(reset_value=1.0)

            def charge(self, v, x, reset_value):
                return v + x
    with pytest.raises(NeuronSpecError, match=r"Thr: 'thr' is reserved"):
        class Thr(Neuron):
            parameters = dict(thr=1.0)

            def charge(self, v, x, thr):
                return v + x
    with pytest.raises(NeuronSpecError, match=r"Root: backward: .*Abs|Root: backward: .*sign"):
        class Root(Neuron):
            def charge(self, v, x):
                return v + sqrt(x * x)


class Tangled(Neuron):
    """State names that look like the generated code's own names (strides, recorded values)."""
    parameters = dict(k=0.5)
    states = ("t", "f1")

    def charge(self, t, f1, x, k):
        return {"t": k * t + exp(-f1 * f1), "f1": 0.9 * f1 + x}


def test_state_names_like_generated_names_work():
    report = check_neuron(Tangled, shapes=((6, 2, 9),), resets=("subtract", "zero"))
    assert len(report.cases) == 9


# ----- export ----------------------------------------------------------------------------------

def test_unknown_neuron_types_refused_by_to_nir():
    class Halving(sl.BaseNeuron):  # a hand-made neuron the exporter does not know
        family = "lif"

        def _kernel_args(self, ndim):
            return (torch.tensor(0.5), torch.tensor(1.0), self.threshold), dict(
                self._kwargs(), surrogate=self.surrogate, threshold_robust=False)

    for neuron in (Halving(reset="zero"), sl.EIF(reset="zero")):
        net = sl.layers.Sequential(nn.Linear(4, 3), neuron)
        with pytest.raises(sl.export.NIRExportError, match=rf"{type(neuron).__name__} has no NIR mapping"):
            sl.export.to_nir(net, dt=1e-3, input_shape=(4,))


def test_spec_declares_its_nir_mapping():
    import nir
    import numpy as np

    class LeakyToNIR(Neuron):
        parameters = dict(beta=0.5)

        def charge(self, v, x, beta):
            return beta * v + x

        def to_nir(self, shape, dt):
            tau = np.full(shape, dt / (1 - float(self.beta)), np.float32)
            return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(shape), v_threshold=np.ones(shape),
                           v_reset=np.zeros(shape))

    net = sl.layers.Sequential(nn.Linear(4, 3), LeakyToNIR(reset="zero"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = sl.export.to_nir(net, dt=1e-3, input_shape=(4,))
    assert isinstance(graph.nodes["1"], nir.LIF)
