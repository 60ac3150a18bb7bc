"""Every Triton kernel compiles for a real GPU target (sm_90), without a GPU.

The interpreter (test_triton.py) checks the kernels' arithmetic; this checks what only the
compiler sees (types across branches, constexpr paths, pointer arithmetic), so a kernel that
works in the interpreter cannot fail to build on the first CUDA machine it meets.
"""

from __future__ import annotations

import itertools
import os

import pytest
from tests.needs import peer

triton = peer("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

# Every family's kernels are generated (hand-written ones are gone): the built-in step graphs and
# the library's spec neurons, each in every variant.

# ----- kernels generated from neuron specs --------------------------------------------------------

GEN_INTS = {"T", "M", "TM", "last_row", "g_last", "gstride_t", "gstride_m", "seed", "first_row", "H", "W", "KH", "KW",
            "OH", "OW"}
# float arguments; the wide ones (codegen.WIDE_SCALARS) arrive as three float32 parts
GEN_FLOATS = {"SUB", "HARD", "KEEP"} | {f"{n}_{part}" for n in ("reset_value", "VALUE", "sg_alpha", "pool_scale")
                                        for part in ("hi", "mid", "lo")}
NO_BLOCK = {"BN": False, "POOL": False}
GEN_HALF = {"x", "out", "g_out", "dx"}


def _generated_graphs():
    import spikelab as sl
    from spikelab.kernels import families

    graphs = {name: make() for name, make in families.GENERATED.items()}
    return {**graphs, "EIF": sl.EIF._class_graph, "MPRLIF": sl.MPRLIF._class_graph}


def _load_generated(graph):
    """The generated Triton module of ``graph``, loaded as compilable (not interpreted) kernels."""
    import importlib.util
    import sys
    import tempfile

    from spikelab.kernels.codegen import triton_source

    saved = os.environ.pop("TRITON_INTERPRET", None)
    # the shared helpers must be compiled functions here, and stay interpreted ones elsewhere
    shared = {n: sys.modules.pop(n) for n in list(sys.modules) if n.startswith("spikelab.kernels.triton")}
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
        for n in [n for n in list(sys.modules) if n.startswith("spikelab.kernels.triton")]:
            del sys.modules[n]
        sys.modules.update(shared)


def _compile_generated(fn, constexprs: dict, half: bool) -> None:
    signature = {}
    state = "*fp64" if constexprs.get("F64") else "*fp32"
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in GEN_INTS:
            signature[name] = "i64"
        elif name in GEN_FLOATS:
            signature[name] = "fp32"
        else:
            signature[name] = "*bf16" if (half and name in GEN_HALF) else state
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 2, "enable_fp_fusion": False})


@pytest.mark.parametrize("family", ["lif", "alif", "cuba", "probabilistic", "EIF", "MPRLIF"])
def test_generated_kernels_compile(family):
    graph = _generated_graphs()[family]
    mod = _load_generated(graph)
    for robust in (False, True) if not graph.escape else (False,):
        variant = "robust" if robust else "plain"
        for hist, stochastic in itertools.product((False, True), (False, True) if graph.escape else (False,)):
            _compile_generated(getattr(mod, f"forward_{variant}"), {"RESET": 0, "HIST": hist, "F64": False,
                                                                    "STOCHASTIC": stochastic, "BLOCK": 256, **NO_BLOCK},
                               half=robust or hist)
        for grads in ("fast", "full"):
            _compile_generated(getattr(mod, f"backward_{variant}_{grads}"),
                               {"RESET": 1, "SG_CODE": 0, "STOCHASTIC": graph.escape, "F64": False, "BLOCK": 256,
                                **NO_BLOCK},
                               half=grads == "fast")


def test_float64_kernels_with_inexact_literals_compile():
    """The F64 path's own code (literals built in float64, wide scalars rebuilt from their parts) for
    a spec whose equation holds a literal float32 cannot represent, in both precisions."""
    from spikelab.kernels import codegen
    from spikelab.neurons.spec import Neuron

    assert GEN_FLOATS - {"SUB", "HARD", "KEEP"} == {f"{n}_{p}" for n in codegen.WIDE_SCALARS for p in codegen.WIDE_PARTS}

    class Decimal(Neuron):
        parameters = dict(tau=10.0)

        def charge(self, v, x, tau):
            return v + 0.1 * (x - v) / tau

    mod = _load_generated(Decimal._class_graph)
    for f64 in (False, True):
        _compile_generated(mod.forward_plain, {"RESET": 1, "HIST": False, "STOCHASTIC": False, "F64": f64,
                                               "BLOCK": 128, **NO_BLOCK}, half=False)
        _compile_generated(mod.backward_plain_full, {"RESET": 1, "SG_CODE": 0, "STOCHASTIC": False, "F64": f64,
                                                     "BLOCK": 128, **NO_BLOCK}, half=False)


@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("sg", range(7))
def test_every_reset_and_surrogate_compiles(reset, sg):
    mod = _load_generated(_generated_graphs()["lif"])
    _compile_generated(mod.backward_plain_full, {"RESET": reset, "SG_CODE": sg, "STOCHASTIC": False, "F64": False,
                                                 "BLOCK": 128, **NO_BLOCK}, half=False)
    if sg == 0:
        _compile_generated(mod.forward_plain, {"RESET": reset, "HIST": False, "STOCHASTIC": False, "F64": False,
                                               "BLOCK": 128, **NO_BLOCK}, half=False)


@pytest.mark.parametrize("family", ["lif", "EIF", "MPRLIF"])
def test_float64_kernels_compile(family):
    mod = _load_generated(_generated_graphs()[family])
    _compile_generated(mod.forward_plain, {"RESET": 1, "HIST": True, "STOCHASTIC": False, "F64": True,
                                           "BLOCK": 128, **NO_BLOCK}, half=False)
    _compile_generated(mod.backward_plain_full, {"RESET": 1, "SG_CODE": 1, "STOCHASTIC": False, "F64": True,
                                                 "BLOCK": 128, **NO_BLOCK}, half=False)


@pytest.mark.parametrize("family", ["lif", "cuba", "probabilistic", "EIF"])
@pytest.mark.parametrize("bn,pool", [(True, True), (True, False), (False, True)])
def test_block_kernels_compile(family, bn, pool):
    """Fused batch norm / pooling (kernels/blocks.py): the constexpr paths the GPU takes."""
    graph = _generated_graphs()[family]
    mod = _load_generated(graph)
    for hist in (False, True):
        _compile_generated(mod.forward_plain, {"RESET": 0, "HIST": hist, "F64": False, "STOCHASTIC": graph.escape,
                                               "BLOCK": 256, "BN": bn, "POOL": pool and not hist}, half=False)
    _compile_generated(mod.backward_plain_full, {"RESET": 1, "SG_CODE": 0, "STOCHASTIC": graph.escape, "F64": False,
                                                 "BLOCK": 256, "BN": bn, "POOL": pool}, half=False)
    if family == "lif":  # threshold-robust firing and float64 (atomic adds of fp64)
        _compile_generated(mod.forward_robust, {"RESET": 0, "HIST": False, "F64": True, "STOCHASTIC": False,
                                                "BLOCK": 128, "BN": bn, "POOL": pool}, half=False)
        _compile_generated(mod.backward_robust_fast, {"RESET": 0, "SG_CODE": 1, "STOCHASTIC": False, "F64": True,
                                                      "BLOCK": 128, "BN": bn, "POOL": pool}, half=False)
