"""Triton kernels against the reference: on a GPU when there is one, else in Triton's
interpreter on CPU tensors (``TRITON_INTERPRET=1``, set in conftest.py)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikelab as sl
from test_kernels import (RESETS, SURROGATES, alif_case, compare, compare_prob, cuba_case, lif_case,
                          prob_case)
from spikelab.surrogate import ATan, Sigmoid

import triton  # noqa: F401  (a test dependency: CI must check the Triton kernels)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)

SHAPES = [(1, 3, 5), (6, 2, 3, 4), (4, 1, 300)]


def tri(family, tensors, kwargs, **kw):
    return compare(family, tensors, kwargs, backend="triton", device=DEVICE, **kw)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("robust", [False, True])
def test_lif(shape, reset, robust):
    tri("lif", *lif_case(shape, 1, reset, ATan(), robust=robust))


@pytest.mark.parametrize("sg", SURROGATES, ids=lambda s: s.name)
def test_lif_surrogates(sg):
    tri("lif", *lif_case((5, 2, 33), 2, ("subtract", 0.0), sg))


@pytest.mark.parametrize("detach", [False, True])
def test_lif_options(detach):
    tri("lif", *lif_case((7, 2, 3, 5), 3, ("subtract", 0.0), Sigmoid(), detach=detach, decay_input=True,
                         per_neuron=True))
    tri("lif", *lif_case((7, 3, 6), 4, ("hard", 0.0), ATan(), contiguous=False))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_float32_state(dtype):
    # spikes equal the float32 reference on the same (rounded) input values
    tri("lif", *lif_case((8, 2, 40), 5, ("subtract", 0.0), ATan()), dtype=dtype, tol=2e-2)
    tri("cuba", *cuba_case((8, 2, 40), 5, ("hard", 0.0)), dtype=dtype, tol=2e-2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset", RESETS)
def test_alif(shape, reset):
    tri("alif", *alif_case(shape, 6, reset, robust=reset[0] == "subtract"))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset", RESETS)
def test_cuba(shape, reset):
    tri("cuba", *cuba_case(shape, 7, reset, robust=reset[0] == "hard"))


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("stochastic", [True, False])
def test_probabilistic(reset, stochastic):
    compare_prob(*prob_case((6, 2, 3, 4), 8, reset, stochastic=stochastic, first_step=5), backend="triton",
                 device=DEVICE)


@settings(max_examples=8, deadline=None)
@given(steps=st.integers(1, 6), features=st.integers(1, 20), reset=st.sampled_from(RESETS),
       sg=st.sampled_from(SURROGATES), robust=st.booleans(), detach=st.booleans(), seed=st.integers(0, 2**16))
def test_lif_hypothesis(steps, features, reset, sg, robust, detach, seed):
    tri("lif", *lif_case((steps, 2, features), seed, reset, sg, robust=robust, detach=detach), seed=seed)


def test_neuron_module_on_triton_backend():
    neuron = sl.AdaptiveLIF(beta=0.9, tau_adapt=5.0, adaptation=0.3, backend="triton").to(DEVICE)
    x = (torch.rand(6, 2, 10, device=DEVICE) * 1.5).requires_grad_(True)
    out = neuron(x)
    ref = sl.AdaptiveLIF(beta=0.9, tau_adapt=5.0, adaptation=0.3, backend="torch").to(DEVICE)(x)
    assert torch.equal(out, ref)
