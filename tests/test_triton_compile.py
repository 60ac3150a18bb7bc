"""Every Triton kernel compiles for a real GPU target (sm_90), without a GPU.

The interpreter (test_triton.py) checks the kernels' arithmetic; this checks what only the
compiler sees (types across branches, constexpr paths, pointer arithmetic), so a kernel that
works in the interpreter cannot fail to build on the first CUDA machine it meets.
"""

from __future__ import annotations

import itertools
import os

import pytest

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

INTS = {"T", "M", "last_row", "g_last", "gs_t", "gs_m", "seed", "first_row"}
FLOATS = {"reset_value", "sg_alpha"}
HALF_PTRS = {"x_ptr", "out_ptr", "g_ptr", "dx_ptr"}  # input-dtype tensors; the rest is float32 state


def _compile(fn, constexprs: dict, half: bool = False) -> None:
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*bf16" if (half and name in HALF_PTRS) else "*fp32"
        elif name in INTS:
            signature[name] = "i64"
        elif name in FLOATS:
            signature[name] = "fp32"
        else:
            raise AssertionError(f"{fn.__name__}: no type for argument {name!r}")
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 2, "enable_fp_fusion": False})


@pytest.fixture(scope="module")
def kernels():
    if os.environ.get("TRITON_INTERPRET") == "1":
        # the kernel modules may already be loaded as interpreter functions: load fresh ones
        import importlib
        import sys

        saved = os.environ.pop("TRITON_INTERPRET")
        names = [n for n in list(sys.modules) if n.startswith("spikelab.kernels.triton")]
        for n in names:
            del sys.modules[n]
        try:
            mods = {f: importlib.import_module(f"spikelab.kernels.triton.{f}")
                    for f in ("lif", "alif", "cuba", "probabilistic")}
        finally:
            os.environ["TRITON_INTERPRET"] = saved
            for n in [n for n in list(sys.modules) if n.startswith("spikelab.kernels.triton")]:
                del sys.modules[n]
        return mods
    import importlib

    return {f: importlib.import_module(f"spikelab.kernels.triton.{f}") for f in ("lif", "alif", "cuba", "probabilistic")}


FORWARD = list(itertools.product((0, 1, 2), (False, True)))


@pytest.mark.parametrize("reset, robust", FORWARD)
def test_forward_kernels_compile(kernels, reset, robust):
    for family, fn in (("lif", "_lif_forward"), ("alif", "_alif_forward"), ("cuba", "_cuba_forward")):
        _compile(getattr(kernels[family], fn), {"RESET": reset, "ROBUST": robust, "SAVE": True, "BLOCK": 256},
                 half=robust)
    _compile(kernels["probabilistic"]._prob_forward,
             {"STOCHASTIC": robust, "RESET": reset, "SAVE": False, "BLOCK": 128})


@pytest.mark.parametrize("reset, robust, detach", [(r, b, d) for r, b in FORWARD for d in (False, True)])
def test_backward_kernels_compile(kernels, reset, robust, detach):
    common = {"RESET": reset, "DETACH": detach, "ROBUST": robust, "SG": 0, "BLOCK": 256}
    _compile(kernels["lif"]._lif_backward, {**common, "NEED_SCALE": detach}, half=detach)
    _compile(kernels["alif"]._alif_backward, {**common, "NEED_SCALE": not detach})
    _compile(kernels["cuba"]._cuba_backward, common)
    _compile(kernels["probabilistic"]._prob_backward,
             {"STOCHASTIC": robust, "RESET": reset, "DETACH": detach, "NEED_SCALE": True, "BLOCK": 128})


@pytest.mark.parametrize("sg", range(7))
def test_every_surrogate_compiles(kernels, sg):
    _compile(kernels["lif"]._lif_backward,
             {"RESET": 0, "DETACH": False, "ROBUST": False, "SG": sg, "NEED_SCALE": False, "BLOCK": 256})
