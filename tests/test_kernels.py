"""Fused kernels against the reference: spikes equal, states and gradients within tolerance.

Every family, reset mode, ``detach_reset`` setting and option, on random inputs over several
shapes (T=1 and non-contiguous inputs included), with hypothesis-generated parameters, in two
gradient regimes:

- ``"all"``: the input, the initial states and every parameter require gradients, so the
  backward runs the kernels' ``backward_*_full`` variant (parameter gradients accumulated);
- ``"x"``: only the input does and the parameters are plain tensors, so it runs
  ``backward_*_fast`` (no parameter gradients), what every model with a fixed beta and
  threshold trains with.

Which variant ran is observed (:func:`backward_variants`) and asserted. float32 kernels are
compared with the float32 reference at float32 tolerance, float64 kernels with the float64
reference at float64 tolerance; every output's, state's and gradient's dtype is asserted. The
Triton kernels run the same comparisons under TRITON_INTERPRET=1 (see test_triton.py); this
file covers the Numba ones.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikelab.kernels import generated, ops, reference
from spikelab.surrogate import ATan, Erf, FastSigmoid, Rectangle, Sigmoid, StraightThrough, Triangle

SURROGATES = [ATan(), Sigmoid(), FastSigmoid(), Triangle(), Rectangle(), Erf(), StraightThrough()]
RESETS = [("subtract", 0.0), ("hard", 0.0), ("hard", -0.3), ("none", 0.0)]
SHAPES = [(1, 3, 5), (7, 2, 3, 4), (33, 4, 130), (5, 1, 1)]
REGIMES = ("all", "x")
HALF = (torch.float16, torch.bfloat16)
# relative tolerance of states and gradients by the dtype the comparison runs in (the absolute
# one is a tenth of it times the largest reference value, at least 1). float64: the kernels and
# the reference round differently (fused multiply-adds, SymPy's reordered gradient expressions,
# accumulation order), about 1e-15 relative per operation over up to 33 steps; rounding one
# intermediate to float32 is 1e-8 off, far outside.
TOL = {torch.float32: 2e-4, torch.float64: 1e-10}


def matrix(*axes, shapes=SHAPES, flag=False):
    """Every combination of ``axes``, each with one shape of ``shapes`` in turn: every shape meets
    every value of every axis (the shape index is the sum of the value indices, modulo the count)
    while the case count stays that of the option product. ``flag``: a boolean added before the
    shape, the parity of that sum, so that it takes both values with every value of every axis
    (given two axes of two or more values) without doubling the cases."""
    cases = []
    for picks in itertools.product(*(list(enumerate(a)) for a in axes)):
        total = sum(i for i, _ in picks)
        extra = (total % 2 == 1,) if flag else ()
        cases.append(tuple(v for _, v in picks) + extra + (shapes[total % len(shapes)],))
    return cases


def case_id(value):
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        return f"{value[0]}{value[1]:g}"
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return None


def make_input(shape, seed, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 0.8 + 0.45
    if not contiguous:
        x = (torch.randn((shape[0], shape[1] * 2) + tuple(shape[2:]), generator=g) * 0.8 + 0.45)[:, ::2]
        assert not x.is_contiguous()
    return x


def param(value, shape, per_neuron, seed, low=None, high=None):
    """A scalar parameter, or one value per neuron (random around ``value``)."""
    if not per_neuron:
        return torch.tensor(float(value))
    g = torch.Generator().manual_seed(seed + 99)
    t = value + 0.1 * torch.randn(shape[1:], generator=g)
    return t.clamp(low if low is not None else -1e9, high if high is not None else 1e9)


def run(fn, tensors: dict, kwargs: dict, grads, g_seed: int):
    """Outputs and, with ``grads``, gradients under a random output weighting: ``grads="all"`` makes
    every tensor in ``tensors`` a leaf requiring gradients, ``"x"`` only ``x`` (the others stay
    plain tensors, as fixed parameters are), ``None`` none."""
    assert grads in (None, *REGIMES), grads
    leaves = {k: v.detach().clone().requires_grad_(grads == "all" or (grads == "x" and k == "x"))
              for k, v in tensors.items()}
    out, state = fn(*leaves.values(), **kwargs)
    result = {"out": out.detach(), **{f"state{i}": s.detach() for i, s in enumerate(state)}}
    if grads:
        g = torch.Generator().manual_seed(g_seed)
        w = torch.randn(out.shape, generator=g).to(out.device)
        ws = [torch.randn(s.shape, generator=g).to(s.device) for s in state]
        loss = (out * w).sum() + sum((s * wi).sum() for s, wi in zip(state, ws))
        loss.backward()
        result.update({f"d_{k}": v.grad for k, v in leaves.items() if v.requires_grad})
        assert all(v.grad is None for v in leaves.values() if not v.requires_grad)
    return result


@contextlib.contextmanager
def backward_variants():
    """Collect the names of the generated backward kernels run inside the block.

    ``generated.run_backward`` takes its kernel by name (``backward_{plain,robust}_{fast,full}``
    plus a block suffix) from the module ``generated.module`` returns, choosing ``_full`` when
    any parameter requires a gradient; a proxy over that module records the names it is asked
    for, so a test can assert the variant that really ran.
    """
    names: list[str] = []
    real = generated.module

    class Spy:
        def __init__(self, mod):
            self._mod = mod

        def __getattr__(self, name):
            if name.startswith("backward_"):
                names.append(name)
            return getattr(self._mod, name)

    generated.module = lambda key, dialect: Spy(real(key, dialect))
    try:
        yield names
    finally:
        generated.module = real


def expect_variant(names: list[str], grads: str) -> None:
    want = "full" if grads == "all" else "fast"
    assert names and all(n.split("_")[2] == want for n in names), \
        f"grads={grads!r} ran backward kernels {names}, expected backward_*_{want}"


def on(tensors: dict, device, dtype=None) -> dict:
    """The case's tensors on ``device``; ``x`` cast to ``dtype`` when given."""
    moved = {k: v.to(device) for k, v in tensors.items()}
    if dtype is not None:
        moved["x"] = moved["x"].to(dtype)
    return moved


def assert_matches(fused: dict, ref: dict, fused_in: dict, tol=None, atol_ratio=0.1, spike_flips=False,
                   spikes=True):
    """``fused`` against ``ref`` (both from :func:`run`), compared in the reference's dtype.

    Dtypes are asserted first: the fused spikes and final states come back in the input ``x``'s
    dtype, each gradient in its leaf's, and both equal the reference's unless the input is in
    half precision (whose reference runs in float32 on the same values). Spikes must be equal
    (``spike_flips``: a GPU's ``exp`` may flip a stochastic spike where ``u ~ p``, at most 1e-3 of
    them); states and gradients within ``tol`` (default by dtype, :data:`TOL`). ``spikes=False``:
    the output is a value (a mean-field firing probability), compared like the states.
    """
    assert fused.keys() == ref.keys(), (sorted(fused), sorted(ref))
    x_dtype = fused_in["x"].dtype
    for key, b in ref.items():
        a = fused[key]
        assert a is not None and b is not None, key
        want = fused_in[key[2:]].dtype if key.startswith("d_") else x_dtype
        assert a.dtype == want, f"{key}: fused dtype {a.dtype}, expected {want}"
        if x_dtype not in HALF:
            assert b.dtype == a.dtype, f"{key}: fused dtype {a.dtype}, reference {b.dtype}"
        a = a.to(b.dtype)
        if key == "out" and spikes:
            differ = a != b
            if spike_flips and differ.any():
                assert differ.float().mean() < 1e-3, "spikes differ"
            else:
                assert not differ.any(), f"spikes differ at {differ.sum().item()} of {b.numel()}"
            continue
        rtol = TOL[b.dtype] if tol is None else tol
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * atol_ratio * scale, msg=lambda m: f"{key}: {m}")


def compare(family: str, tensors: dict, kwargs: dict, backend: str = "numba", grads="all", seed: int = 0,
            device="cpu", dtype=None, tol=None, noise_key=None, atol_ratio=0.1):
    """Fused ``backend`` on ``device`` (input cast to ``dtype`` when given) against the reference on
    the same input values, in the inputs' dtype (float32 for half-precision inputs): see
    :func:`assert_matches`. ``grads``: the gradient regime of :func:`run`; the backward variant
    it selects is asserted. ``noise_key``: the escape-noise key of the probabilistic family."""
    fused_in = on(tensors, device, dtype)
    ref_in = dict(fused_in, x=fused_in["x"].float()) if fused_in["x"].dtype in HALF else fused_in
    extra = {} if family != "probabilistic" else {"noise_key": noise_key}
    ref_fn = functools.partial(getattr(reference, f"{family}_sequence"), **extra)
    fused_fn = functools.partial(getattr(ops, f"{family}_sequence"), backend=backend, **extra)
    ref = run(ref_fn, ref_in, kwargs, grads, seed)
    with backward_variants() as names:
        fused = run(fused_fn, fused_in, kwargs, grads, seed)
    if grads:
        expect_variant(names, grads)
    mean_field = family == "probabilistic" and noise_key is None
    assert_matches(fused, ref, fused_in, tol, atol_ratio, spikes=not mean_field,
                   spike_flips=family == "probabilistic" and not mean_field and device != "cpu")
    return ref


def lif_case(shape, seed, reset, sg, robust=False, detach=False, decay_input=False, per_neuron=False,
             contiguous=True, beta=0.8):
    x = make_input(shape, seed, contiguous)
    b = param(beta, shape, per_neuron, seed, 0.05, 0.99)
    tensors = dict(x=x, v=torch.zeros(shape[1:]) + 0.1, beta=b, input_scale=(1 - b) if decay_input else torch.tensor(1.0),
                   threshold=param(1.0, shape, per_neuron, seed + 1, 0.3))
    kwargs = dict(surrogate=sg, reset_mode=reset[0], reset_value=reset[1], detach_reset=detach,
                  threshold_robust=robust)
    return tensors, kwargs


@pytest.mark.parametrize("reset,detach,grads,robust,shape", matrix(RESETS, [False, True], REGIMES, [False, True]),
                         ids=case_id)
def test_lif_matches_reference(reset, detach, grads, robust, shape):
    tensors, kwargs = lif_case(shape, 1, reset, ATan(), robust=robust, detach=detach)
    ref = compare("lif", tensors, kwargs, grads=grads)
    if shape[0] > 5:
        assert ref["out"].sum() > 0


def test_noise_counters_past_two_to_the_32_match_the_reference():
    """A long stream: (first_step + t) * neurons + m passes 2**32, where the hash takes the
    counter's high word; kernel and reference must draw the same noise there too."""
    shape = (3, 2, 50)
    first = 2 ** 32 // 100 - 1  # the counter crosses 2**32 during these steps
    tensors, kwargs, key = prob_case(shape, 2, RESETS[0], first_step=first)
    ref = compare_prob(tensors, kwargs, key)
    low = reference.counter_uniform(torch.tensor([key[0], 0]), 3, 100, "cpu")
    high = reference.counter_uniform(key, 3, 100, "cpu")
    assert not torch.equal(low, high) and 0 < ref["out"].sum() < ref["out"].numel()


MANY = (4, 2, 1100)  # 2200 neurons: more than one Numba task (1024 neurons), the last one partial


@pytest.mark.parametrize("family", ["lif", "lif-trsg", "alif", "cuba", "probabilistic"])
@pytest.mark.parametrize("grads", REGIMES)
def test_neurons_split_over_several_tasks(family, grads):
    """Every task works on its own neurons: per-neuron parameters (an input scale 1 - beta where
    the family has one), a hard reset and both gradient regimes on more neurons than one task
    takes (the other shapes fit in one)."""
    reset = ("hard", -0.3) if grads == "all" else ("subtract", 0.0)
    if family == "probabilistic":
        tensors, kwargs, key = prob_case(MANY, 4, reset, per_neuron=True)
        compare_prob(tensors, kwargs, key, grads=grads)
        return
    case = {"lif": lif_case, "lif-trsg": functools.partial(lif_case, robust=True), "alif": alif_case,
            "cuba": cuba_case}[family]
    scaled = {"decay_input": True} if family != "cuba" else {}
    tensors, kwargs = case(MANY, 4, reset, ATan(), per_neuron=True, **scaled)
    ref = compare(family.split("-")[0], tensors, kwargs, grads=grads)
    assert ref["out"][:, :, :1024].sum() > 0 and ref["out"][:, :, 1024:].sum() > 0


@pytest.mark.parametrize("sg", SURROGATES, ids=lambda s: s.name)
def test_lif_every_surrogate(sg):
    compare("lif", *lif_case((9, 3, 40), 2, ("subtract", 0.0), sg))


@pytest.mark.parametrize("grads", REGIMES)
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("decay_input", [False, True])
def test_lif_options_and_per_neuron_parameters(detach, decay_input, grads):
    compare("lif", *lif_case((12, 2, 3, 5), 3, ("hard", -0.3) if detach else ("subtract", 0.0), Sigmoid(),
                             detach=detach, decay_input=decay_input, per_neuron=True), grads=grads)


@pytest.mark.parametrize("grads", REGIMES)
def test_lif_non_contiguous_input_and_if(grads):
    compare("lif", *lif_case((10, 3, 6), 4, ("hard", 0.0), ATan(), contiguous=False), grads=grads)
    compare("lif", *lif_case((10, 3, 6), 5, ("subtract", 0.0), ATan(), beta=1.0), grads=grads)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.integers(1, 12), batch=st.integers(1, 3), features=st.integers(1, 40),
    beta=st.floats(0.0, 1.0), threshold=st.floats(0.2, 2.0), reset=st.sampled_from(RESETS),
    sg=st.sampled_from(SURROGATES), robust=st.booleans(), detach=st.booleans(), grads=st.sampled_from(REGIMES),
    seed=st.integers(0, 2**16),
)
def test_lif_hypothesis(steps, batch, features, beta, threshold, reset, sg, robust, detach, grads, seed):
    tensors, kwargs = lif_case((steps, batch, features), seed, reset, sg, robust=robust, detach=detach, beta=beta)
    tensors["threshold"] = torch.tensor(threshold)
    compare("lif", tensors, kwargs, grads=grads, seed=seed)


def alif_case(shape, seed, reset, sg=ATan(), robust=False, detach=False, per_neuron=False, decay_input=False):
    tensors, kwargs = lif_case(shape, seed, reset, sg, robust=robust, detach=detach, per_neuron=per_neuron,
                               decay_input=decay_input)
    v = tensors.pop("v")
    ordered = dict(x=tensors["x"], v=v, a=torch.rand(shape[1:]) * 0.2, beta=tensors["beta"],
                   input_scale=tensors["input_scale"], threshold=tensors["threshold"],
                   rho=param(0.9, shape, per_neuron, seed + 2, 0.0, 0.999),
                   adaptation=param(0.6, shape, per_neuron, seed + 3, 0.0))
    return ordered, kwargs


@pytest.mark.parametrize("reset,detach,grads,robust,shape", matrix(RESETS, [False, True], REGIMES, [False, True]),
                         ids=case_id)
def test_alif_matches_reference(reset, detach, grads, robust, shape):
    compare("alif", *alif_case(shape, 6, reset, robust=robust, detach=detach), grads=grads)


@settings(max_examples=16, deadline=None)
@given(steps=st.integers(1, 10), features=st.integers(1, 30), reset=st.sampled_from(RESETS),
       sg=st.sampled_from(SURROGATES), detach=st.booleans(), per_neuron=st.booleans(),
       grads=st.sampled_from(REGIMES), seed=st.integers(0, 2**16))
def test_alif_hypothesis(steps, features, reset, sg, detach, per_neuron, grads, seed):
    compare("alif", *alif_case((steps, 2, features), seed, reset, sg, detach=detach, per_neuron=per_neuron),
            grads=grads, seed=seed)


def cuba_case(shape, seed, reset, sg=ATan(), robust=False, detach=False, per_neuron=False, contiguous=True):
    x = make_input(shape, seed, contiguous)
    x = x.mul_(0.5) if not contiguous else x * 0.5
    tensors = dict(x=x, v=torch.zeros(shape[1:]) + 0.05, i=torch.rand(shape[1:]) * 0.1,
                   alpha=param(0.6, shape, per_neuron, seed, 0.0, 0.99), beta=param(0.8, shape, per_neuron, seed + 1,
                                                                                  0.05, 0.99),
                   threshold=param(1.0, shape, per_neuron, seed + 2, 0.3))
    kwargs = dict(surrogate=sg, reset_mode=reset[0], reset_value=reset[1], detach_reset=detach,
                  threshold_robust=robust)
    return tensors, kwargs


@pytest.mark.parametrize("reset,detach,grads,robust,shape", matrix(RESETS, [False, True], REGIMES, [False, True]),
                         ids=case_id)
def test_cuba_matches_reference(reset, detach, grads, robust, shape):
    compare("cuba", *cuba_case(shape, 7, reset, robust=robust, detach=detach), grads=grads)


@settings(max_examples=16, deadline=None)
@given(steps=st.integers(1, 10), features=st.integers(1, 30), reset=st.sampled_from(RESETS),
       sg=st.sampled_from(SURROGATES), detach=st.booleans(), per_neuron=st.booleans(),
       contiguous=st.booleans(), grads=st.sampled_from(REGIMES), seed=st.integers(0, 2**16))
def test_cuba_hypothesis(steps, features, reset, sg, detach, per_neuron, contiguous, grads, seed):
    compare("cuba", *cuba_case((steps, 2, features), seed, reset, sg, detach=detach, per_neuron=per_neuron,
                               contiguous=contiguous), grads=grads, seed=seed)


def prob_case(shape, seed, reset, stochastic=True, detach=False, per_neuron=False, first_step=0):
    x = make_input(shape, seed)
    b = param(0.7, shape, per_neuron, seed, 0.05, 0.95)
    tensors = dict(x=x, v=torch.zeros(shape[1:]), beta=b, input_scale=torch.tensor(1.0),
                   threshold=param(1.0, shape, per_neuron, seed + 1, 0.3),
                   temperature=param(0.3, shape, per_neuron, seed + 2, 0.05))
    kwargs = dict(reset_mode=reset[0], reset_value=reset[1], detach_reset=detach)
    key = torch.tensor([seed * 7919 + 13, first_step]) if stochastic else None
    return tensors, kwargs, key


def compare_prob(tensors, kwargs, key, seed=0, backend="numba", device="cpu", grads="all", dtype=None):
    """:func:`compare` for the probabilistic family (escape noise keyed by ``key``; ``None``: mean field)."""
    return compare("probabilistic", tensors, kwargs, backend=backend, grads=grads, seed=seed, device=device,
                   dtype=dtype, noise_key=key, atol_ratio=0.25)


@pytest.mark.parametrize("reset,detach,grads,stochastic,shape",
                         matrix(RESETS, [False, True], REGIMES, [True, False]), ids=case_id)
def test_probabilistic_matches_reference(reset, detach, grads, stochastic, shape):
    compare_prob(*prob_case(shape, 8, reset, stochastic=stochastic, detach=detach), grads=grads)


@settings(max_examples=16, deadline=None)
@given(steps=st.integers(1, 10), features=st.integers(1, 30), reset=st.sampled_from(RESETS),
       detach=st.booleans(), per_neuron=st.booleans(), first_step=st.integers(0, 1000),
       grads=st.sampled_from(REGIMES), seed=st.integers(0, 2**16))
def test_probabilistic_hypothesis(steps, features, reset, detach, per_neuron, first_step, grads, seed):
    compare_prob(*prob_case((steps, 2, features), seed, reset, detach=detach, per_neuron=per_neuron,
                            first_step=first_step), seed=seed, grads=grads)


def test_counter_noise_is_uniform_and_offsets_compose():
    key = torch.tensor([1234, 0])
    u = reference.counter_uniform(key, 200, 500, "cpu")
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.003
    later = reference.counter_uniform(torch.tensor([1234, 50]), 150, 500, "cpu")
    assert torch.equal(u[50:], later)
    assert not torch.equal(u, reference.counter_uniform(torch.tensor([1235, 0]), 200, 500, "cpu"))


def test_no_grad_saves_nothing_and_matches():
    tensors, kwargs = lif_case((20, 4, 64), 9, ("subtract", 0.0), ATan())
    with torch.no_grad():
        out, _ = ops.lif_sequence(*tensors.values(), **kwargs)
        ref, _ = reference.lif_sequence(*tensors.values(), **kwargs)
    assert torch.equal(out, ref)
    assert not out.requires_grad


def float64_case(family, reset, detach, robust, shape=(8, 3, 10)):
    """A case of ``family`` with every tensor in float64 (and the probabilistic family's key)."""
    if family == "probabilistic":
        tensors, kwargs, key = prob_case(shape, 10, reset, stochastic=robust, detach=detach, per_neuron=True)
    else:
        make = {"lif": lif_case, "alif": alif_case, "cuba": cuba_case}[family]
        tensors, kwargs = make(shape, 10, reset, ATan(), robust=robust, detach=detach, per_neuron=True)
        key = None
    return {k: v.double() for k, v in tensors.items()}, kwargs, key


@pytest.mark.parametrize("grads", REGIMES)
@pytest.mark.parametrize("family", ["lif", "alif", "cuba", "probabilistic"])
def test_float64_kernels(family, grads):
    """float64 kernels against the float64 reference at float64 tolerance, dtypes asserted (a
    float32 rounding anywhere inside, or a float32 result, fails); a soft and a hard reset (the
    matrix tests cover every mode in float32). The robust firing variant only for LIF: each
    float64 variant is one more Numba compilation on a fresh cache (the probabilistic family's
    ``robust`` here is stochastic firing)."""
    for i, reset in enumerate([RESETS[0], RESETS[2]]):
        robust = i == 0 if family in ("lif", "probabilistic") else False
        tensors, kwargs, key = float64_case(family, reset, detach=i % 2 == 1, robust=robust)
        compare(family, tensors, kwargs, grads=grads, noise_key=key, seed=i)


def test_kernel_calls_take_the_parallel_twin_only_when_it_pays(monkeypatch):
    """kernels/numba/tasks.py: a kernel's ``_tasks`` twin (the one Numba's parallel compiler
    builds) runs only with several Numba threads, several chunks and at least
    ``MIN_PARALLEL_WORK`` neuron-steps; otherwise the serial kernel runs every chunk itself, so a
    process on one Numba thread (each xdist worker) never compiles the twin."""
    from types import SimpleNamespace

    from spikelab.kernels.numba import tasks

    calls = []
    module = SimpleNamespace(k=lambda lo, hi, *args: calls.append(("serial", lo, hi, args)),
                             k_tasks=lambda nchunks, *args: calls.append(("tasks", nchunks, args)))
    big = tasks.MIN_PARALLEL_WORK
    cases = [(2, 3, big, ("tasks", 3, ("a", 1.5))), (2, 2, big, ("tasks", 2, ("a", 1.5))),
             (2, 3, big - 1, ("serial", 0, 3, ("a", 1.5))), (2, 1, 4 * big, ("serial", 0, 1, ("a", 1.5))),
             (1, 3, 4 * big, ("serial", 0, 3, ("a", 1.5)))]
    for threads, nchunks, work, expected in cases:
        monkeypatch.setattr(tasks.numba, "get_num_threads", lambda: threads)
        calls.clear()
        tasks.run(module, "k", nchunks, work, "a", 1.5)
        assert calls == [expected], (threads, nchunks, work, calls)


@pytest.mark.heavy(12)
def test_tasks_on_several_threads_match_the_reference():
    """The suite's xdist workers run Numba on one thread each (tests/conftest.py), so the kernels
    take their serial path there (kernels/numba/tasks.py); this reruns the tests of every parallel
    loop (neuron kernels on more neurons than one task, fused blocks, event frames) on two threads
    with the parallel path forced, in a process of its own, where tasks sharing memory by mistake
    would show."""
    tests = Path(__file__).resolve().parent
    selected = [f"{tests / 'test_kernels.py'}::test_neurons_split_over_several_tasks",
                f"{tests / 'test_blocks.py'}::test_bn_neuron_pool_matches_unfused_for_every_family",
                f"{tests / 'test_event_transforms.py'}::test_large_inputs_take_the_parallel_path_and_agree"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}
    env.update(NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="1")
    # every call takes the parallel path (the tests' layers are small), and the calls that did are counted
    check = ("import sys, numba, pytest\n"
             "from spikelab.kernels.numba import tasks\n"
             "assert numba.get_num_threads() == 2, numba.get_num_threads()\n"
             "tasks.MIN_PARALLEL_WORK = 0\n"
             "decided, real = [], tasks.parallel\n"
             "tasks.parallel = lambda nchunks, work: decided.append(real(nchunks, work)) or decided[-1]\n"
             f"code = pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:xdist', *{selected!r}])\n"
             "print('parallel kernel calls:', sum(decided))\n"
             "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tests.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = lines[-2]
    passed = re.match(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 20 and "skipped" not in summary, summary  # 10 + 9 + 1, none skipped
    calls = re.fullmatch(r"parallel kernel calls: (\d+)", lines[-1])
    assert calls and int(calls.group(1)) >= 20, lines[-1]  # forward and backward of every case


def test_kernel_cache_moves_with_spikelab_cache(monkeypatch, tmp_path):
    """``SPIKELAB_CACHE`` moves every spikelab cache (datasets and kernels, unless its kernels folder
    cannot be private); ``SPIKELAB_CACHE_DIR`` moves the kernels alone."""
    from spikelab.data.cache import default_cache_root
    from spikelab.kernels.generated import cache_dir

    monkeypatch.delenv("SPIKELAB_CACHE", raising=False)
    monkeypatch.delenv("SPIKELAB_CACHE_DIR", raising=False)
    assert cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "spikelab" / "kernels"
    monkeypatch.setenv("SPIKELAB_CACHE", str(tmp_path / "all"))
    assert cache_dir() == tmp_path / "all" / "kernels" and default_cache_root() == tmp_path / "all"
    monkeypatch.setenv("SPIKELAB_CACHE_DIR", str(tmp_path / "only-kernels"))
    assert cache_dir() == tmp_path / "only-kernels" / "kernels" and default_cache_root() == tmp_path / "all"
    # a dataset cache shared with others (its kernels folder writable by them): kernels stay at home
    monkeypatch.delenv("SPIKELAB_CACHE_DIR")
    shared = tmp_path / "shared"
    (shared / "kernels").mkdir(parents=True)
    (shared / "kernels").chmod(0o777)
    monkeypatch.setenv("SPIKELAB_CACHE", str(shared))
    assert cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "spikelab" / "kernels"
