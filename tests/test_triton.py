"""Triton kernels against the reference: on a GPU when there is one, else in Triton's
interpreter on CPU tensors (``TRITON_INTERPRET=1``, set in conftest.py).

The comparisons of test_kernels.py (its ``compare``): every family, reset mode and
``detach_reset`` setting in both gradient regimes (``"all"``: the ``backward_*_full`` kernels;
``"x"``: only the input requires gradients, the ``backward_*_fast`` kernels; the variant that
ran is asserted), float64 at float64 tolerance with dtypes asserted. The interpreter is slow:
shapes are small, and the firing variant (threshold-robust, or stochastic firing) alternates
over the cases instead of doubling them.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikelab as sl
from test_kernels import (REGIMES, RESETS, SURROGATES, alif_case, case_id, compare, compare_prob, cuba_case,
                          float64_case, lif_case, matrix, prob_case)
from spikelab.surrogate import ATan, Sigmoid

import triton  # noqa: F401  (a test dependency: CI must check the Triton kernels)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)

SHAPES = [(1, 3, 5), (6, 2, 3, 4), (4, 1, 300)]
# reset x detach_reset x gradient regime; the firing variant alternates; shapes in turn
CASES = matrix(RESETS, [False, True], REGIMES, shapes=SHAPES, flag=True)


def tri(family, tensors, kwargs, **kw):
    return compare(family, tensors, kwargs, backend="triton", device=DEVICE, **kw)


@pytest.mark.parametrize("reset,detach,grads,robust,shape", CASES, ids=case_id)
def test_lif(reset, detach, grads, robust, shape):
    tri("lif", *lif_case(shape, 1, reset, ATan(), robust=robust, detach=detach), grads=grads)


@pytest.mark.parametrize("sg", SURROGATES, ids=lambda s: s.name)
def test_lif_surrogates(sg):
    tri("lif", *lif_case((5, 2, 33), 2, ("subtract", 0.0), sg))


@pytest.mark.parametrize("detach,grads", [(False, "x"), (True, "all")])
def test_lif_options(detach, grads):
    tri("lif", *lif_case((7, 2, 3, 5), 3, ("subtract", 0.0), Sigmoid(), detach=detach, decay_input=True,
                         per_neuron=True), grads=grads)
    tri("lif", *lif_case((7, 3, 6), 4, ("hard", 0.0), ATan(), contiguous=False), grads=grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_float32_state(dtype):
    # spikes equal the float32 reference on the same (rounded) input values
    tri("lif", *lif_case((8, 2, 40), 5, ("subtract", 0.0), ATan()), dtype=dtype, tol=2e-2)
    tri("cuba", *cuba_case((8, 2, 40), 5, ("hard", 0.0)), dtype=dtype, tol=2e-2, grads="x")


@pytest.mark.parametrize("reset,detach,grads,robust,shape", CASES, ids=case_id)
def test_alif(reset, detach, grads, robust, shape):
    tri("alif", *alif_case(shape, 6, reset, robust=robust, detach=detach), grads=grads)


@pytest.mark.parametrize("reset,detach,grads,robust,shape", CASES, ids=case_id)
def test_cuba(reset, detach, grads, robust, shape):
    tri("cuba", *cuba_case(shape, 7, reset, robust=robust, detach=detach), grads=grads)


@pytest.mark.parametrize("reset,detach,grads,stochastic,shape", CASES, ids=case_id)
def test_probabilistic(reset, detach, grads, stochastic, shape):
    compare_prob(*prob_case(shape, 8, reset, stochastic=stochastic, detach=detach, first_step=5), backend="triton",
                 device=DEVICE, grads=grads)


@pytest.mark.parametrize("grads", REGIMES)
def test_float64(grads):
    """The kernels' F64 path against the float64 reference at float64 tolerance, dtypes asserted."""
    for i, reset in enumerate(RESETS[:3]):
        tensors, kwargs, _ = float64_case("lif", reset, detach=i == 2, robust=i == 0, shape=(5, 2, 7))
        tri("lif", tensors, kwargs, grads=grads, seed=i)


def test_float64_with_launch_floats_typed_as_on_a_gpu(monkeypatch):
    """A compiled kernel receives every Python float launch argument as float32; the interpreter
    passes it as a double, so on CPU the F64 path looked exact while a GPU lost precision in
    ``sg_alpha`` and the reset value. Here each float argument is rounded to float32 as a GPU
    would: the F64 path must still meet the float64 reference at float64 tolerance."""
    import numpy as np

    from spikelab.kernels.triton import common

    launch = common.launch

    def launch_as_gpu(kernel, m, *args, **constexprs):
        return launch(kernel, m, *(float(np.float32(a)) if isinstance(a, float) else a for a in args), **constexprs)

    monkeypatch.setattr(common, "launch", launch_as_gpu)
    tensors, kwargs = lif_case((5, 2, 7), 11, ("hard", -0.3), ATan(alpha=1.7), per_neuron=True)
    tri("lif", {k: v.double() for k, v in tensors.items()}, kwargs, grads="all")


def test_wide_launch_floats_rebuild_exactly():
    """``wide`` splits a float into float32-exact parts whose float64 sum, in the kernel's order
    ``(hi + mid) + lo``, is the float itself, and whose first part is the float32 value a
    float32 kernel used before (round to nearest)."""
    import math

    import numpy as np

    from spikelab.kernels.triton.common import wide

    for v in (-0.3, 1.7, 1 / 3, math.pi, -2.5e-20, 7e30, 0.0, 1.0, 123456.789, -1e-5, -2.5e-30):
        hi, mid, lo = wide(v)
        assert all(float(np.float32(p)) == p for p in (hi, mid, lo)), v
        assert hi == float(np.float32(v)), v
        # exact while the lower parts stay normal float32 numbers (|v| above about 1e-22)
        assert (hi + mid) + lo == v if abs(v) > 1e-22 else abs((hi + mid) + lo - v) < 1e-44, v
    assert wide(math.inf) == (math.inf, 0.0, 0.0) and math.isnan(wide(math.nan)[0])


def test_generated_literals_survive_float64_compilation():
    """Each literal of the generated Triton source (and the shared helpers) is float32-exact or
    built in the step's dtype: a compiled kernel types a literal as float32 when it meets a
    scalar or a float32 operand first (``pi / 2 * alpha``), which the interpreter never does."""
    import inspect
    import re

    import numpy as np

    from spikelab.kernels import families
    from spikelab.kernels.codegen import triton_source
    from spikelab.kernels.triton import common
    from spikelab.neurons.spec import Neuron

    class Decimal(Neuron):
        parameters = dict(tau=10.0)

        def charge(self, v, x, tau):
            return v + 0.1 * (x - v) / tau + 0.7

    graphs = [make() for make in families.GENERATED.values()] + [sl.EIF._class_graph, Decimal._class_graph]
    texts = [triton_source(g) for g in graphs] + [inspect.getsource(common)]
    texts = [re.sub(r"#.*", "", re.sub(r'"""[\s\S]*?"""', "", t)) for t in texts]  # code, not prose
    built = re.compile(r"\(tl\.full\(\[\], \S+, tl\.float64\) if F64 else \S+\)|tl\.full\([^()]*\)")
    literal = re.compile(r"(?<![\w.])\d+\.\d*(?:e[-+]?\d+)?|(?<![\w.])\d+e[-+]?\d+")
    wide = [m.group(0) for t in texts for m in built.finditer(t)]
    assert any("0.1, tl.float64" in w for w in wide), "the spec's 0.1 was not built in float64"
    stray = sorted({v for t in texts for v in literal.findall(built.sub("", t)) if float(np.float32(v)) != float(v)})
    assert not stray, f"float literals that a compiled float64 kernel would round: {stray}"


@settings(max_examples=4, deadline=None)
@given(steps=st.integers(1, 6), features=st.integers(1, 20), reset=st.sampled_from(RESETS),
       sg=st.sampled_from(SURROGATES), robust=st.booleans(), detach=st.booleans(), grads=st.sampled_from(REGIMES),
       seed=st.integers(0, 2**16))
def test_lif_hypothesis(steps, features, reset, sg, robust, detach, grads, seed):
    tri("lif", *lif_case((steps, 2, features), seed, reset, sg, robust=robust, detach=detach), grads=grads,
        seed=seed)


def test_neuron_module_on_triton_backend():
    neuron = sl.AdaptiveLIF(beta=0.9, tau_adapt=5.0, adaptation=0.3, backend="triton").to(DEVICE)
    x = (torch.rand(6, 2, 10, device=DEVICE) * 1.5).requires_grad_(True)
    out = neuron(x)
    ref = sl.AdaptiveLIF(beta=0.9, tau_adapt=5.0, adaptation=0.3, backend="torch").to(DEVICE)(x)
    assert torch.equal(out, ref)


@pytest.mark.skipif(CUDA, reason="the interpreter shim: CPU only")
def test_interpreter_patches_the_language_once_per_kernel_launch(monkeypatch):
    """kernels/triton/common.py keeps the interpreter from re-patching triton.language on every
    call of a device function (reset_after and surrogate_grad run once per step): one patch
    per launch, with results still the reference's (the comparisons above)."""
    from triton.runtime import interpreter

    patched = []
    original = interpreter._patch_lang
    monkeypatch.setattr(interpreter, "_patch_lang", lambda fn: patched.append(fn.__name__) or original(fn))
    x = (torch.rand(7, 2, 9) * 1.5).requires_grad_(True)
    layer = sl.LIF(beta=0.9, surrogate="atan", backend="triton")
    layer(x).sum().backward()
    assert "backward_plain_fast" in patched, patched  # (without the shim: reset_after, surrogate_grad, ... every step)
    assert all(name.startswith(("forward_", "backward_")) for name in patched), patched
    import triton.language as tl

    assert tl.core.is_builtin(tl.where)  # after the launch, triton.language holds Triton's own builtins again
