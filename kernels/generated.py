"""Kernels generated from neuron specs: build, cache, dispatch and the ``torch.library`` binding.

One pair of custom ops serves every generated family: ``spikelab::spec_forward`` and
``spikelab::spec_backward`` take the family's key (the hash of its :class:`StepGraph`), the
input, the list of states and the list of parameters. The kernel is picked by the tensors'
device (Numba on CPU, Triton on CUDA); :func:`cpu_kernels` lets tests run the Triton kernels
on CPU tensors in Triton's interpreter. Generated sources are written once, atomically, to
``$SPIKELAB_CACHE_DIR/kernels`` (default ``~/.cache/spikelab/kernels``), named by the hash of
their text, so Numba's on-disk cache serves later processes (``$SPIKELAB_CACHE``, the root of
every spikelab cache, also moves them where it can hold a private folder: :func:`cache_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from spikelab.kernels import buffers
from spikelab.kernels.graph import StepGraph

RESET_CODES = {"subtract": 0, "hard": 1, "none": 2}

_GRAPHS: dict[str, StepGraph] = {}
_MODULES: dict[tuple[str, str], ModuleType] = {}
_LOCK = threading.Lock()
_CPU_KERNELS = {"name": "numba"}


def cache_dir() -> Path:
    """``<root>/kernels``: the root is ``$SPIKELAB_CACHE_DIR`` (kernels only), else ``$SPIKELAB_CACHE``
    (every spikelab cache: datasets too) when its ``kernels`` folder can be this user's private
    one, else ``~/.cache/spikelab``. A dataset cache may be read-only or shared with other users
    (spikelab.data.cache); compiled kernels then stay in the home cache, as without it."""
    explicit = os.environ.get("SPIKELAB_CACHE_DIR")
    if explicit:
        return Path(explicit) / "kernels"
    shared = os.environ.get("SPIKELAB_CACHE")
    if shared:
        folder = Path(shared) / "kernels"
        try:
            _private_dir(folder)
            return folder
        except (OSError, RuntimeError):
            pass
    return Path(os.path.expanduser("~")) / ".cache" / "spikelab" / "kernels"


def register(graph: StepGraph) -> str:
    """Make ``graph``'s kernels available under its key (built on first use); returns the key."""
    key = graph.key()
    _GRAPHS.setdefault(key, graph)
    return key


def graph(key: str) -> StepGraph:
    try:
        return _GRAPHS[key]
    except KeyError:
        raise RuntimeError(f"spikelab: no neuron spec registered under kernel key {key!r}") from None


@contextlib.contextmanager
def cpu_kernels(name: str) -> Iterator[None]:
    """Run generated kernels on CPU tensors with ``"numba"`` (default) or ``"triton"`` (Triton's
    interpreter, ``TRITON_INTERPRET=1``): for checking the Triton kernels without a GPU."""
    if name not in ("numba", "triton"):
        raise ValueError(f"cpu_kernels: expected 'numba' or 'triton', got {name!r}")
    if name == "triton" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise RuntimeError("cpu_kernels('triton') needs TRITON_INTERPRET=1 set before triton is imported")
    old = _CPU_KERNELS["name"]
    _CPU_KERNELS["name"] = name
    try:
        yield
    finally:
        _CPU_KERNELS["name"] = old


def _write_once(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically unless it is already there (safe across processes)."""
    _private_dir(path.parent)
    if path.exists() and path.read_text() == text:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _helpers_digest(dialect: str) -> str:
    """A hash of the helper modules a generated source inlines (Numba's cache does not see them)."""
    names = ("common.py", "fastmath.py", "noise.py", "blocks.py") if dialect == "numba" else ("common.py",)
    folder = Path(__file__).resolve().parent / dialect
    text = "".join((folder / n).read_text() for n in names) + (Path(__file__).parent / "codegen.py").read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source(key: str, dialect: str) -> str:
    from spikelab.kernels.codegen import numba_source, triton_source  # SymPy: only when generating

    g = graph(key)
    text = numba_source(g) if dialect == "numba" else triton_source(g)
    return f"# helpers {_helpers_digest(dialect)}\n{text}"


def _private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) and refuse one that another user owns or can write."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        raise RuntimeError(f"spikelab kernel cache {path}: owned by another user or writable by others; "
                           "set SPIKELAB_CACHE_DIR to a private folder")


def module(key: str, dialect: str) -> ModuleType:
    """The generated ``dialect`` module of family ``key``: generated, written and imported once."""
    with _LOCK:
        if (key, dialect) in _MODULES:
            return _MODULES[(key, dialect)]
        text = source(key, dialect)
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        name = f"spikelab_generated_{dialect}_{digest}"
        path = cache_dir() / f"{name}.py"
        _write_once(path, text)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        exec(compile(text, str(path), "exec"), mod.__dict__)  # the text generated here, not re-read
        _MODULES[(key, dialect)] = mod
        return mod


def _dialect(device: torch.device) -> str:
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu":
        return _CPU_KERNELS["name"]
    raise RuntimeError(f"spikelab generated kernels run on CPU or CUDA tensors, got {device}")


def _variant(robust: bool) -> str:
    return "robust" if robust else "plain"


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    if device.type == "cpu":
        return buffers.empty(shape, dtype)
    return torch.empty(shape, dtype=dtype, device=device)


def _numpy(*tensors: Tensor):
    return tuple(t.detach().numpy() if t.requires_grad else t.numpy() for t in tensors)


def backward_chunk(steps: int, num_states: int) -> int:
    """Neurons per Numba backward task: the replayed history of a chunk (states, charged values,
    spike arguments) stays within about 4 MiB (L2/L3), and rows stay long enough to amortise the
    per-step overhead (measured at T = 100 and 500: 512-1024 neurons beat 128-256)."""
    budget = 4 * 1024 * 1024 // (4 * max(1, steps) * (2 * num_states + 2))
    return int(min(1024, max(128, 1 << max(0, budget.bit_length() - 1))))


# ----- the ops ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """What a fused block adds around the neuron (kernels/numba/blocks.py): a per-neuron affine
    ``x * scale + shift`` on the input (batch norm; ``mean`` is the per-neuron batch mean the
    backward centres with) and non-overlapping pooling of the output, ``geo = (H, W, KH, KW,
    OH, OW, CI)`` (``KH = 0``: none; ``CI``: channels interleaved per plane, 1 unless the
    neurons are in channels-last order, Numba only), pooled sums times ``pool_scale``."""

    scale: Optional[Tensor] = None
    shift: Optional[Tensor] = None
    mean: Optional[Tensor] = None
    geo: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 1)
    pool_scale: float = 1.0

    @property
    def pooled(self) -> bool:
        return self.geo[2] > 0

    def chunk(self, size: int) -> int:
        """``size`` rounded to whole planes (a pooling window never straddles two chunks)."""
        if not self.pooled:
            return size
        plane = self.geo[0] * self.geo[1] * self.geo[6]
        return plane * max(1, round(size / plane))


NO_BLOCK = Block()


def run_forward(key: str, x: Tensor, states: list[Tensor], params: list[Tensor], noise_key: Tensor,
                stochastic: bool, reset_code: int, reset_value: float, robust: bool, out: Tensor,
                new: list[Tensor], block: Block = NO_BLOCK) -> None:
    """Run family ``key``'s forward kernel over ``x`` ``[T, M]`` into ``out`` and ``new``."""
    T, M = x.shape
    if T == 0 or M == 0:
        for n, s in zip(new, states):
            n.copy_(s)
        out.zero_()
        return
    dialect = _dialect(x.device)
    mod = module(key, dialect)
    name = f"forward_{_variant(robust)}{_suffix(dialect, block)}"
    seed, first_step = _noise(key, noise_key)
    if dialect == "numba":
        from spikelab.kernels.numba import tasks
        from spikelab.kernels.numba.common import CHUNK

        chunk = block.chunk(CHUNK)
        tasks.run(mod, name, -(-M // chunk), T * M, *_numpy(x, *states, *params), reset_code, float(reset_value), seed,
                  first_step, bool(stochastic), *_numpy(out, *new), chunk, *_block_arrays(x, block.scale, block.shift),
                  np.asarray(block.geo, np.int64), float(block.pool_scale))
    else:
        from spikelab.kernels.triton.common import launch, wide

        if block.pooled:  # every lane adds its spike to its cell
            out.zero_()
        launch(getattr(mod, name), M, x, *states, *params, out, *new, out, T, M, T * M, *wide(reset_value), seed,
               first_step * M, *_triton_block_args(x, block), RESET=reset_code, HIST=False, STOCHASTIC=bool(stochastic),
               F64=states[0].dtype == torch.float64, BN=block.scale is not None, POOL=block.pooled)


def _suffix(dialect: str, block: Block) -> str:
    """The name suffix of the kernel variant that fuses ``block`` (Numba: one function per variant)."""
    return block_suffix(block.scale is not None, block.pooled) if dialect == "numba" else ""


def block_suffix(bn: bool, pool: bool) -> str:
    return ("_bn" if bn else "") + ("_pool" if pool else "")


def _block_arrays(x: Tensor, *tensors: Optional[Tensor]) -> list[np.ndarray]:
    """The NumPy views of a block's per-neuron arrays (length-0 arrays for absent ones)."""
    none = np.empty(0, np.float64 if x.dtype == torch.float64 else np.float32)
    return [none if t is None else t.detach().numpy() for t in tensors]


def _triton_block_args(x: Tensor, block: Block) -> list:
    """A block's arguments of the Triton kernels (``x`` stands in for absent arrays)."""
    from spikelab.kernels.triton.common import wide

    if block.geo[6] != 1:
        raise ValueError("channels-last blocks run on the Numba kernels only")
    return [x if block.scale is None else block.scale, x if block.shift is None else block.shift, *block.geo[:6],
            *wide(block.pool_scale)]


@torch.library.custom_op("spikelab::spec_forward", mutates_args=(), device_types=("cpu", "cuda"))
def spec_forward(key: str, x: Tensor, states: list[Tensor], params: list[Tensor], noise_key: Tensor,
                 stochastic: bool, reset_code: int, reset_value: float, detach: bool, robust: bool, sg_code: int,
                 sg_alpha: float) -> list[Tensor]:
    return _forward_outputs(key, x, states, params, noise_key, stochastic, reset_code, reset_value, robust)


def _forward_outputs(key: str, x: Tensor, states: list[Tensor], params: list[Tensor], noise_key: Tensor,
                     stochastic: bool, reset_code: int, reset_value: float, robust: bool) -> list[Tensor]:
    """The forward op's body: ``[spikes, *new states]``."""
    out = _empty(x.shape, x.dtype, x.device)
    new = [torch.empty_like(s) for s in states]
    run_forward(key, x, states, params, noise_key, stochastic, reset_code, reset_value, robust, out, new)
    return [out, *new]


def _noise(key: str, noise_key: Tensor) -> tuple[int, int]:
    """``(seed, first_step)`` of an escape-noise family (read from the tensor: a host sync), else zeros."""
    if not graph(key).escape or noise_key.numel() == 0:
        return 0, 0
    seed, first_step = (int(v) for v in noise_key.tolist())
    return seed, first_step


@spec_forward.register_fake
def _(key, x, states, params, *args):
    return [torch.empty_like(x), *(torch.empty_like(s) for s in states)]


def run_backward(key: str, g_out: Tensor, g_states: list[Tensor], x: Tensor, states: list[Tensor],
                 params: list[Tensor], noise_key: Tensor, stochastic: bool, reset_code: int, reset_value: float,
                 detach: bool, robust: bool, sg_code: int, sg_alpha: float, need_params: bool, dx: Tensor,
                 d_states: list[Tensor], d_params: list[Tensor], block: Block = NO_BLOCK,
                 bn_sums: tuple[Optional[Tensor], Optional[Tensor]] = (None, None)) -> None:
    """Run family ``key``'s backward kernel: ``dx`` (of the normalised input times the block's
    scale when it has one), ``d_states``, ``d_params`` (written only when ``need_params``) and, with a
    block's batch norm, per-neuron sums over time of that gradient and of it times ``x - mean``."""
    T, M = x.shape
    if T == 0 or M == 0:
        dx.zero_()
        for d, g in zip(d_states, g_states):
            d.copy_(g)
        for t in (*d_params, *(b for b in bn_sums if b is not None)):
            t.zero_()
        return
    dialect = _dialect(x.device)
    mod = module(key, dialect)
    name = f"backward_{_variant(robust)}_{'full' if need_params else 'fast'}{_suffix(dialect, block)}"
    seed, first_step = _noise(key, noise_key)
    if dialect == "numba":
        from spikelab.kernels.numba import tasks

        chunk = block.chunk(backward_chunk(T, len(states)))
        tasks.run(mod, name, -(-M // chunk), T * M, *_numpy(g_out, *g_states, x, *states, *params), reset_code,
                  float(reset_value), seed, first_step, bool(stochastic), bool(detach), sg_code, float(sg_alpha), chunk,
                  *_numpy(dx, *d_states, *d_params), *_block_arrays(x, block.scale, block.shift, block.mean, *bn_sums),
                  np.asarray(block.geo, np.int64), float(block.pool_scale))
    else:
        from spikelab.kernels.triton.common import grad_strides, launch, wide

        # the forward kernel replays the sequence and records the states before each step
        hist = torch.empty((len(states), T, M), dtype=states[0].dtype, device=x.device)
        scratch = [torch.empty_like(s) for s in states]
        f64 = states[0].dtype == torch.float64
        bn, pool = block.scale is not None, block.pooled
        launch(getattr(mod, f"forward_{_variant(robust)}"), M, x, *states, *params, x, *scratch, hist, T, M, T * M,
               *wide(reset_value), seed, first_step * M, *_triton_block_args(x, block), RESET=reset_code, HIST=True,
               STOCHASTIC=bool(stochastic), F64=f64, BN=bn, POOL=False)
        stride_t, stride_m = grad_strides(g_out)
        sums = [x if t is None else t for t in (block.mean, *bn_sums)]
        launch(getattr(mod, name), M, g_out, (T - 1) * stride_t, stride_t, stride_m, *g_states, x, *params, hist, dx,
               *d_states, *d_params, T, M, T * M, (T - 1) * M, *wide(reset_value), float(reset_code == 0),
               float(reset_code == 1), *wide(reset_value), 0.0 if detach else 1.0, *wide(sg_alpha), seed, first_step * M,
               *_triton_block_args(x, block), *sums, RESET=reset_code, SG_CODE=sg_code, STOCHASTIC=bool(stochastic),
               F64=f64, BN=bn, POOL=pool)


@torch.library.custom_op("spikelab::spec_backward", mutates_args=(), device_types=("cpu", "cuda"))
def spec_backward(key: str, g_out: Tensor, g_states: list[Tensor], x: Tensor, states: list[Tensor],
                  params: list[Tensor], noise_key: Tensor, stochastic: bool, reset_code: int, reset_value: float,
                  detach: bool, robust: bool, sg_code: int, sg_alpha: float, need_params: bool) -> list[Tensor]:
    return _backward_outputs(key, g_out, g_states, x, states, params, noise_key, stochastic, reset_code, reset_value,
                             detach, robust, sg_code, sg_alpha, need_params)


def _backward_outputs(key: str, g_out: Tensor, g_states: list[Tensor], x: Tensor, states: list[Tensor],
                      params: list[Tensor], noise_key: Tensor, stochastic: bool, reset_code: int, reset_value: float,
                      detach: bool, robust: bool, sg_code: int, sg_alpha: float, need_params: bool) -> list[Tensor]:
    """The backward op's body: ``[dx, *d_states, *d_params]``."""
    dx = _empty(x.shape, x.dtype, x.device)
    d_states = [torch.empty_like(s) for s in states]
    d_params = [torch.empty_like(p) for p in params]  # written whole by the _full kernels; unread otherwise
    run_backward(key, g_out, g_states, x, states, params, noise_key, stochastic, reset_code, reset_value, detach,
                 robust, sg_code, sg_alpha, need_params, dx, d_states, d_params)
    return [dx, *d_states, *d_params]


@spec_backward.register_fake
def _(key, g_out, g_states, x, states, params, *args):
    return [torch.empty_like(x), *(torch.empty_like(s) for s in states), *(torch.empty_like(p) for p in params)]


def _setup(ctx, inputs, output):
    key, x, states, params, noise_key, stochastic, reset_code, reset_value, detach, robust, sg_code, sg_alpha = inputs
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, *states, *params, noise_key)
    ctx.counts = (len(states), len(params))
    ctx.config = (stochastic, reset_code, reset_value, detach, robust, sg_code, sg_alpha)
    ctx.key = key
    ctx.cpu_kernels = _CPU_KERNELS["name"]  # the backward runs on the kernels the forward ran on
    ctx.needs = (x.requires_grad, [s.requires_grad for s in states], [p.requires_grad for p in params])
    ctx.eager = False  # EagerSequence sets it: its backward calls the body, not the operator


def _autograd(ctx, grads):
    g_out, g_states = grads[0], grads[1:]
    ns, npar = ctx.counts
    saved = ctx.saved_tensors
    x, states, params, noise_key = saved[0], list(saved[1:1 + ns]), list(saved[1 + ns:-1]), saved[-1]
    need_x, need_states, need_params = ctx.needs
    g_states = [torch.zeros_like(s) if g is None else g.contiguous() for g, s in zip(g_states, states)]
    backward = _backward_outputs if ctx.eager else spec_backward
    with cpu_kernels(ctx.cpu_kernels):
        result = backward(ctx.key, _as_rows(g_out, x), g_states, x, states, params, noise_key, *ctx.config,
                          any(need_params))
    dx, d_states, d_params = result[0], result[1:1 + ns], result[1 + ns:]
    return (None, dx if need_x else None, [d if n else None for d, n in zip(d_states, need_states)],
            [d if n else None for d, n in zip(d_params, need_params)]) + (None,) * 8


def _as_rows(g: Optional[Tensor], like: Tensor) -> Tensor:
    """An incoming ``[T, M]`` gradient as a contiguous ``[T or 1, M or 1]`` tensor (broadcasts stay compact)."""
    if g is None:
        return like.new_zeros((1, 1))
    if g.shape[0] > 1 and g.stride(0) == 0:
        g = g[:1]
    if g.shape[1] > 1 and g.stride(1) == 0:
        g = g[:, :1]
    return g.contiguous()


spec_forward.register_autograd(_autograd, setup_context=_setup)


# ----- the wrapper with the reference's signature ------------------------------------------------

def _untraced(x: Tensor, tensors: list[Tensor]) -> bool:
    """Whether nobody traces or intercepts this call: plain CPU or CUDA tensors outside any
    compiler, tracer, function or dispatch mode, forward-mode AD level or functorch transform.
    Then the kernels may run without ``torch.ops``: the operator's dispatch (the custom-op
    wrappers, their pytree handling, Dynamo's guard) costs a few hundred microseconds a call on
    the host, more than a small layer's whole kernel and, on a GPU, the whole step of a small
    network. Tracers, compilers, tensor subclasses (fake, batched, functional), forward-mode AD
    and dispatch modes still see the operator."""
    if x.device.type not in ("cpu", "cuda") or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch._C._is_torch_function_mode_enabled() or torch.autograd.forward_ad._current_level >= 0:
        return False  # a function mode, or dual tensors whose tangents a direct call would drop
    if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in (x, *tensors)):
        return False
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is None and all(type(t) in _PLAIN for t in (x, *tensors))


_PLAIN = (Tensor, torch.nn.Parameter)  # tensor types with no behaviour of their own


def _needs_grad(x: Tensor, tensors: list[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in (x, *tensors))


def _plain_call(x: Tensor, tensors: list[Tensor]) -> bool:
    """Whether a forward may run its kernel directly: untraced (:func:`_untraced`) and nothing
    to differentiate (a stream of single steps pays the dispatch at every step)."""
    return not _needs_grad(x, tensors) and _untraced(x, tensors)


def _eager_autograd(x: Tensor, tensors: list[Tensor]) -> bool:
    """Whether a forward that autograd records may go through :class:`EagerSequence` (a plain
    ``autograd.Function`` around the same kernels and the same backward) instead of the operator."""
    return _needs_grad(x, tensors) and _untraced(x, tensors)


class EagerSequence(torch.autograd.Function):
    """``spikelab::spec_forward`` and its registered backward without the operator's dispatch, for
    eager training (:func:`_eager_autograd`); the operator stays the path of compilers and tracers."""

    @staticmethod
    def forward(ctx, key: str, ns: int, options: tuple, x: Tensor, *tensors: Tensor):
        states, params = list(tensors[:ns]), list(tensors[ns:])
        noise, stochastic, reset_code, reset_value, _, robust, _, _ = options
        outputs = _forward_outputs(key, x, states, params, noise, stochastic, reset_code, reset_value, robust)
        _setup(ctx, (key, x, states, params, *options), outputs)
        ctx.eager = True
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        _, dx, d_states, d_params = _autograd(ctx, grads)[:4]
        return (None, None, None, dx, *d_states, *d_params)


def channels_last(x: Tensor) -> bool:
    """Whether ``x`` ``[T, B, C, H, W]`` (C > 1) is laid out as ``[T, B, H, W, C]`` and not as itself."""
    return (x.ndim == 5 and x.shape[2] > 1 and not x.is_contiguous()
            and x.permute(0, 1, 3, 4, 2).is_contiguous())


def _as_neurons(t: Tensor, order: Optional[tuple[int, ...]]) -> Tensor:
    """A tensor of the per-step shape as one contiguous value per neuron, in ``order`` (a
    permutation of the per-step dimensions; ``None``: as it is)."""
    return t.contiguous() if order is None else t.permute(*order).contiguous()


_NO_NOISE_KEY = torch.empty(0, dtype=torch.int64)  # what families without escape noise pass (never written)


def _flat(t, shape: torch.Size, m: int, dtype: torch.dtype, device: torch.device,
          order: Optional[tuple[int, ...]]) -> Tensor:
    """A state or parameter as one contiguous value per neuron ``[m]`` (broadcast, converted);
    one already in that form (a stream's states and parameter copies) is only viewed flat."""
    if (order is None and type(t) is Tensor and t.shape == shape and t.dtype == dtype and t.device == device
            and t.is_contiguous()):
        return t.view(m)
    t = t if torch.is_tensor(t) else torch.tensor(t)
    return _as_neurons(t.to(device=device, dtype=dtype).expand(shape), order).view(m)


def sequence(key: str, x: Tensor, *states_and_params: Tensor, surrogate=None, reset_mode: str = "subtract",
             reset_value: float = 0.0, detach_reset: bool = False, threshold_robust: bool = False,
             noise_key: Optional[Tensor] = None, trace: Optional[list] = None, block=None):
    """Run family ``key`` fused over ``x`` ``[T, ...]``: ``(out, new_states)`` like the reference.

    ``states_and_params`` are the initial states, then the parameters (the threshold last),
    each broadcasting to ``x.shape[1:]``. Escape-noise families take ``noise_key`` (int64
    ``(seed, first_step)``; ``None`` fires the probability itself, mean-field) instead of a surrogate.
    With ``block`` (a :class:`spikelab.kernels.blocks.BlockArgs`), batch norm and pooling are
    fused around the neuron and a third value is returned: the batch statistics (or ``None``).
    """
    if trace is not None:
        raise ValueError("membrane traces are recorded by the reference backend (backend='torch')")
    g = graph(key)
    ns = len(g.states)
    given_dtype = x.dtype
    steps, shape = x.shape[0], x.shape[1:]
    m = math.prod(shape)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.device.type == "cpu" and x.dtype not in (torch.float32, torch.float64):
        x = x.to(dtype)
    # a fused block on channels-last memory ([T, B, C, H, W] laid out as [T, B, H, W, C], what a
    # convolution with channels-last weights writes) runs in that order, without a copy; not with
    # escape noise, whose random draws follow the neuron's index in [B, C, H, W] order
    cl = block is not None and noise_key is None and _dialect(x.device) == "numba" and channels_last(x)
    order = (0, 2, 3, 1) if cl else None
    xs = x.permute(0, 1, 3, 4, 2).reshape(steps, m) if cl else x.contiguous().view(steps, m)
    flat = [_flat(t, shape, m, dtype, x.device, order) for t in states_and_params]
    stochastic = noise_key is not None
    plain = block is None and _plain_call(xs, flat)
    # a call nobody traces shares one empty key; a traced one makes its own (a graph's input)
    key_tensor = noise_key if stochastic else _NO_NOISE_KEY if plain else torch.empty(0, dtype=torch.int64)
    if surrogate is not None and not surrogate.in_kernels:
        raise ValueError(f"fused kernels compute only the built-in surrogates, got {surrogate!r}: "
                         "run a surrogate of your own on backend='torch'")
    sg_code, sg_alpha = (surrogate.code, float(surrogate.alpha)) if surrogate is not None else (0, 1.0)
    options = (key_tensor, stochastic, RESET_CODES[reset_mode], float(reset_value), bool(detach_reset),
               bool(threshold_robust), sg_code, sg_alpha)
    if block is not None:
        from spikelab.kernels import blocks

        out, new, stats = blocks.run(key, xs, flat[:ns], flat[ns:], options, block, shape, cl)
        if cl:
            new = [s.view(shape[0], *shape[2:], shape[1]).permute(0, 3, 1, 2) for s in new]
        return out.to(given_dtype), tuple(s.view(shape).to(given_dtype) for s in new), stats
    if plain:
        noise, stochastic, reset_code, reset_value, _, robust, _, _ = options  # no surrogate without autograd
        outputs = _forward_outputs(key, xs, flat[:ns], flat[ns:], noise, stochastic, reset_code, reset_value, robust)
    elif _eager_autograd(xs, flat):
        outputs = EagerSequence.apply(key, ns, options, xs, *flat)
    else:
        outputs = torch.ops.spikelab.spec_forward(key, xs, flat[:ns], flat[ns:], *options)
    out = outputs[0].view(x.shape).to(given_dtype)
    return out, tuple(s.view(shape).to(given_dtype) for s in outputs[1:])


__all__ = ["register", "graph", "module", "source", "sequence", "cpu_kernels", "cache_dir", "backward_chunk",
           "Block", "run_forward", "run_backward"]
