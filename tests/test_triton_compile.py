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
                    for f in ("lif", "probabilistic")}
        finally:
            os.environ["TRITON_INTERPRET"] = saved
            for n in [n for n in list(sys.modules) if n.startswith("spikelab.kernels.triton")]:
                del sys.modules[n]
        return mods
    import importlib

    return {f: importlib.import_module(f"spikelab.kernels.triton.{f}") for f in ("lif", "probabilistic")}


FORWARD = list(itertools.product((0, 1, 2), (False, True)))


@pytest.mark.parametrize("reset, robust", FORWARD)
def test_forward_kernels_compile(kernels, reset, robust):
    _compile(kernels["lif"]._lif_forward, {"RESET": reset, "ROBUST": robust, "SAVE": True, "BLOCK": 256},
             half=robust)
    _compile(kernels["probabilistic"]._prob_forward,
             {"STOCHASTIC": robust, "RESET": reset, "SAVE": False, "BLOCK": 128})


@pytest.mark.parametrize("reset, robust, detach", [(r, b, d) for r, b in FORWARD for d in (False, True)])
def test_backward_kernels_compile(kernels, reset, robust, detach):
    common = {"RESET": reset, "DETACH": detach, "ROBUST": robust, "SG": 0, "BLOCK": 256}
    _compile(kernels["lif"]._lif_backward, {**common, "NEED_SCALE": detach}, half=detach)
    _compile(kernels["probabilistic"]._prob_backward,
             {"STOCHASTIC": robust, "RESET": reset, "DETACH": detach, "NEED_SCALE": True, "BLOCK": 128})


@pytest.mark.parametrize("sg", range(7))
def test_every_surrogate_compiles(kernels, sg):
    _compile(kernels["lif"]._lif_backward,
             {"RESET": 0, "DETACH": False, "ROBUST": False, "SG": sg, "NEED_SCALE": False, "BLOCK": 256})


# ----- kernels generated from neuron specs --------------------------------------------------------

GEN_INTS = {"T", "M", "TM", "last_row", "g_last", "gs_t", "gs_m"}
GEN_FLOATS = {"reset_value", "SUB", "HARD", "VALUE", "KEEP", "sg_alpha"}
GEN_HALF = {"x", "out", "g_out", "dx"}


def _generated_graphs():
    import spikelab as sl
    from spikelab.kernels import families

    return {"alif": families.adaptive_lif(), "cuba": families.current_lif(),
            "EIF": sl.EIF._class_graph, "MPRLIF": sl.MPRLIF._class_graph}


def _load_generated(graph):
    """The generated Triton module of ``graph``, loaded as compilable (not interpreted) kernels."""
    import importlib.util
    import sys
    import tempfile

    from spikelab.kernels.codegen import triton_source

    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        path = os.path.join(tempfile.mkdtemp(), f"compile_{graph.key()}.py")
        with open(path, "w") as f:
            f.write(triton_source(graph))
        spec = importlib.util.spec_from_file_location(f"compile_{graph.key()}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def _compile_generated(fn, constexprs: dict, half: bool) -> None:
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in GEN_INTS:
            signature[name] = "i64"
        elif name in GEN_FLOATS:
            signature[name] = "fp32"
        else:
            signature[name] = "*bf16" if (half and name in GEN_HALF) else "*fp32"
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 2, "enable_fp_fusion": False})


@pytest.mark.parametrize("family", ["alif", "cuba", "EIF", "MPRLIF"])
def test_generated_kernels_compile(family):
    mod = _load_generated(_generated_graphs()[family])
    for robust in (False, True):
        variant = "robust" if robust else "plain"
        for hist in (False, True):
            _compile_generated(getattr(mod, f"forward_{variant}"), {"RESET": 0, "HIST": hist, "F64": False,
                                                                    "BLOCK": 256}, half=robust)
        for grads in ("fast", "full"):
            _compile_generated(getattr(mod, f"backward_{variant}_{grads}"),
                               {"RESET": 1, "SG_CODE": 0, "F64": False, "BLOCK": 256}, half=grads == "fast")
