"""Shared machinery of every spiking neuron: parameters, reset modes, state, step and sequence."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.utils._python_dispatch import _get_current_dispatch_mode

from spikelab import backends
from spikelab import surrogate as surrogates
from spikelab._checks import as_batch_index, check_float_tensor, check_number, check_time_steps, check_values

ResetLike = Union[str, float, int]
ParamLike = Union[float, int, Sequence[float], torch.Tensor]


def parse_reset(reset: ResetLike) -> tuple[str, float]:
    """``"subtract"`` / ``"zero"`` / a number (hard reset to it) / ``"none"`` -> (mode, value)."""
    if isinstance(reset, bool):
        raise TypeError("reset: expected 'subtract', 'zero', 'none' or a number, got a bool")
    if isinstance(reset, (int, float)):
        return "hard", check_number(reset, "reset")
    if isinstance(reset, str):
        key = reset.lower()
        if key in ("subtract", "soft"):
            return "subtract", 0.0
        if key in ("zero", "hard"):
            return "hard", 0.0
        if key == "none":
            return "none", 0.0
        raise ValueError(f"reset: unknown reset {reset!r}; expected 'subtract', 'zero', 'none' or a number")
    raise TypeError(f"reset: expected 'subtract', 'zero', 'none' or a number, got {type(reset).__name__}")


def param_tensor(value: ParamLike, name: str, num_channels: Optional[int], **bounds) -> torch.Tensor:
    """A scalar or per-channel parameter as a float32 tensor of shape ``[]`` or ``[C]``, checked."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a number or a 1-D tensor, got a bool")
    if isinstance(value, (int, float)):
        check_number(value, name, **bounds)
        t = torch.tensor(float(value), dtype=torch.float32)
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name}: expected a number or a 1-D tensor, got {type(value).__name__}") from err
        if t.ndim > 1:
            raise ValueError(f"{name}: expected a scalar or one value per channel (1-D), got shape {tuple(t.shape)}")
        if t.ndim == 1 and num_channels is not None and t.numel() != num_channels:
            raise ValueError(f"{name}: expected {num_channels} values (num_channels), got {t.numel()}")
        check_values(t, name, **bounds)
    if num_channels is not None and t.ndim == 0:
        t = t.expand(num_channels).clone()
    return t


def _as_parameter(t: torch.Tensor, learnable: bool, module: nn.Module, name: str) -> None:
    if learnable:
        setattr(module, name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)


class BaseNeuron(nn.Module):
    """A spiking neuron: parameters, reset rule, surrogate, state; runs on a chosen backend.

    * ``forward(x_seq)`` takes ``[T, B, ...]`` and runs the whole sequence from a fresh state,
      leaving the streaming state untouched.
    * ``step(x)`` takes ``[B, ...]``, advances one step and keeps the state until ``reset()``.
    * ``state`` reads the streaming state; ``select_batch(index)`` keeps only some samples.

    Per-channel parameters (``num_channels=C``) broadcast along dimension 1 of ``[T, B, C, ...]``
    (the channel of a convolution, the feature of a linear layer).

    Args:
        threshold: firing threshold (> 0), a number or one value per channel.
        reset: ``"subtract"`` (soft), ``"zero"`` or a number (hard reset to it), ``"none"``.
        surrogate: surrogate gradient by name or object (:mod:`spikelab.surrogate`).
        surrogate_alpha: the surrogate's sharpness when given by name.
        detach_reset: stop the gradient through the spike in the reset term.
        learn_threshold: make the threshold a learnable parameter.
        threshold_robust: threshold-robust surrogate gradient (TrSG); outputs ``threshold * S``.
        mp_init: start from a learned running mean of the final membrane (MP-Init).
        mp_init_momentum: the running mean's update weight.
        num_channels: one parameter value per channel instead of one per layer.
        backend: ``"auto"``, ``"torch"`` (reference), ``"numba"`` (CPU) or ``"triton"`` (CUDA).
    """

    family: str = ""
    _spikelab_stateful = True
    uses_surrogate = True
    state_names: tuple[str, ...] = ("v",)

    def __init__(
        self,
        threshold: ParamLike = 1.0,
        reset: ResetLike = "subtract",
        surrogate: surrogates.SurrogateLike = "atan",
        surrogate_alpha: Optional[float] = None,
        detach_reset: bool = False,
        learn_threshold: bool = False,
        threshold_robust: bool = False,
        mp_init: bool = False,
        mp_init_momentum: float = 0.1,
        num_channels: Optional[int] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if num_channels is not None and (isinstance(num_channels, bool) or not isinstance(num_channels, int)
                                         or num_channels < 1):
            raise ValueError(f"num_channels: expected a positive int or None, got {num_channels!r}")
        self.num_channels = num_channels
        self.reset_mode, self.reset_value = parse_reset(reset)
        self.surrogate = surrogates.get(surrogate, surrogate_alpha)
        self.detach_reset = bool(detach_reset)
        self.threshold_robust = bool(threshold_robust)
        self.backend = backends.check_backend_name(backend)
        _as_parameter(param_tensor(threshold, "threshold", num_channels, low=0.0, low_open=True),
                      bool(learn_threshold), self, "threshold")
        self.mp_init = bool(mp_init)
        self.mp_init_momentum = check_number(mp_init_momentum, "mp_init_momentum", low=0.0, high=1.0, low_open=True)
        # MP-Init: the initial membrane is a running mean of the final membrane (Kook et al. 2026).
        self.register_buffer("running_v", torch.zeros(()), persistent=True)
        self._state: Optional[tuple[torch.Tensor, ...]] = None
        self._active: Optional[torch.Tensor] = None
        self._membrane_trace: Optional[list[torch.Tensor]] = None  # set by spikelab.Monitor
        # set by the trainer: receives the mean firing rate of each forward (in the graph), also
        # from a fused block, where the neuron's own output is never materialised
        self.rate_sink: Optional[Callable[[torch.Tensor], None]] = None
        backends.prepare(type(self).family)

    # ----- subclass hooks -------------------------------------------------------------------
    def _kernel_args(self, ndim: int) -> tuple[tuple, dict]:
        """Positional parameter tensors (after the states) and keyword options for the kernel."""
        raise NotImplementedError

    def _fresh_state(self, shape: torch.Size, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v = torch.zeros(shape, dtype=like.dtype, device=like.device)
        if self.mp_init:
            v = v + self.running_v.to(like.dtype)
        return (v,) + tuple(torch.zeros(shape, dtype=like.dtype, device=like.device)
                            for _ in self.state_names[1:])

    def _check_kernel_input(self, x_seq: torch.Tensor) -> None:
        """Raise when the kernels cannot take ``x_seq`` with this neuron's parameters (specs:
        per-neuron parameter shapes)."""

    def _extra_inputs(self, x: torch.Tensor) -> tuple:
        """Inputs the kernel takes after the parameters (the noise of stochastic neurons)."""
        return ()

    # ----- helpers ----------------------------------------------------------------------------
    def _view(self, p: torch.Tensor, ndim: int) -> torch.Tensor:
        """Broadcast a ``[]`` or ``[C]`` parameter against a state of ``ndim`` dims ``[B, C, ...]``."""
        if p.ndim == 0:
            return p
        return p.view(p.shape[0], *([1] * (ndim - 2)))

    def _kwargs(self) -> dict:
        return dict(reset_mode=self.reset_mode, reset_value=self.reset_value, detach_reset=self.detach_reset)

    def _check_channels(self, shape: torch.Size, name: str) -> None:
        if self.num_channels is None:
            return
        if len(shape) < 2 or shape[1] != self.num_channels:
            raise ValueError(
                f"{name}: {type(self).__name__} has num_channels={self.num_channels}, which needs the channel "
                f"at dimension 1 of [B, C, ...] per step; got per-step shape {tuple(shape)}"
            )

    def _check_device(self, x: torch.Tensor, name: str) -> None:
        # the module's own tensors read directly: named_parameters' generators cost more than a
        # small layer's step, and every step pays this check
        for pname, p in (*self._parameters.items(), *self._buffers.items()):
            if p is not None and p.device != x.device:
                raise ValueError(
                    f"{name}: {type(self).__name__} got input on {x.device} but its {pname!r} is on {p.device}; "
                    f"move the model with .to({str(x.device)!r}) (or the input to {str(p.device)!r})"
                )

    def _run(self, x_seq: torch.Tensor, state: tuple[torch.Tensor, ...], record: bool = False):
        params, options = self._kernel_args(x_seq.ndim - 1)
        if getattr(self, "_in_step", False):  # set by step(): a stream keeps its parameter copies
            params = self._full_size(params, x_seq[0])
        if record and getattr(self, "_membrane_trace", None) is not None:
            # a Monitor records this neuron's membrane: the reference keeps it per step
            impl = backends.resolve(self.family, "torch", x_seq.device)
            steps: list[torch.Tensor] = []
            result = impl(x_seq, *state, *params, *self._extra_inputs(x_seq), trace=steps, **options)
            self._membrane_trace.append(torch.stack(steps).detach())
            return result
        impl = backends.resolve(self.family, self.backend, x_seq.device,
                                smooth=self._reference_only())
        return impl(x_seq, *state, *params, *self._extra_inputs(x_seq), **options)

    def _full_size(self, params: tuple, x: torch.Tensor) -> tuple:
        """``params`` as full-size contiguous tensors of ``x``'s shape, made once per stream.

        The kernels take one value per neuron, so a per-layer or per-channel parameter is
        expanded and copied on every call; a stream of single steps would copy every parameter
        at every step (an IF step of a converted CNN spent 40% of its time there). The copies
        are kept until :meth:`reset` and reused while the parameters keep their values and
        ``x`` its shape, dtype and device. CPU only (comparing values on a GPU would wait for it
        at every step), not while compiling or under forward-mode AD; parameters that take
        gradients here, or whose dtype differs from ``x``'s, are passed as they are."""
        if x.device.type != "cpu" or torch.compiler.is_compiling() or forward_ad._current_level >= 0:
            return params
        if torch.is_grad_enabled() and any(torch.is_tensor(p) and p.requires_grad for p in params):
            return params
        if any(not torch.is_tensor(p) or p.dtype != x.dtype or p.device != x.device for p in params):
            return params
        small = tuple(p.detach() for p in params)
        cached = getattr(self, "_full_params", None)  # absent on modules pickled by older versions
        where = (x.shape, x.dtype, x.device)
        if (cached is not None and cached[0] == where and len(cached[1]) == len(small)
                and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(cached[1], small))):
            return cached[2]
        full = tuple(p.expand(x.shape).contiguous() if p.numel() < x.numel() else p for p in small)
        self._full_params = (where, tuple(p.clone() for p in small), full)
        return full

    def _reference_only(self) -> bool:
        """Whether only the reference computes this neuron's surrogate: a smooth forward, or a
        surrogate the fused kernels do not know (a class of the user's own)."""
        return self.uses_surrogate and (self.surrogate.smooth_forward or not self.surrogate.in_kernels)

    @torch.no_grad()
    def _update_running_v(self, v: torch.Tensor, active: torch.Tensor) -> None:
        count = active.sum()
        if count == 0:
            return
        mean = (v.detach() * active).sum() / count
        m = self.mp_init_momentum
        self.running_v.mul_(1 - m).add_(m * mean.to(self.running_v.dtype))

    # ----- public API ---------------------------------------------------------------------------
    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Run ``x_seq`` ``[T, B, ...]`` from a fresh state; return the spikes ``[T, B, ...]``."""
        check_time_steps(check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]"))
        self._check_channels(x_seq.shape[1:], "x_seq")
        self._check_device(x_seq, "x_seq")
        out, state = self._run(x_seq, self._fresh_state(x_seq.shape[1:], x_seq), record=True)
        sink = getattr(self, "rate_sink", None)  # absent on modules pickled by older versions
        if sink is not None:
            sink(out.float().mean())
        if self.mp_init and self.training:
            self._update_running_v(state[0], (out.detach() != 0).any(0).to(state[0].dtype))
        return out

    def forward_block(self, x_seq: torch.Tensor, block) -> Optional[tuple[torch.Tensor, Optional[tuple]]]:
        """Run ``x_seq`` through batch norm, this neuron and pooling fused into its kernels
        (``block``: :class:`spikelab.kernels.blocks.BlockArgs`), from a fresh state.

        Returns ``(output, batch statistics or None)``, or ``None`` when this neuron cannot run
        the block here (reference backend, smooth surrogate, monitored membrane, MP-Init, or a
        device whose kernels have no blocks): the caller then runs the layers one by one.
        """
        if self._membrane_trace is not None or self.mp_init:
            return None
        impl = backends.resolve_block(self.family, self.backend, x_seq.device,
                                      smooth=self._reference_only())
        if impl is None:
            return None
        check_time_steps(check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]"))
        self._check_channels(x_seq.shape[1:], "x_seq")
        self._check_device(x_seq, "x_seq")
        self._check_kernel_input(x_seq)
        params, options = self._kernel_args(x_seq.ndim - 1)
        state = self._fresh_state(x_seq.shape[1:], x_seq)
        out, _, stats = impl(x_seq, *state, *params, *self._extra_inputs(x_seq), block=block, **options)
        return out, stats

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Advance one time step on ``x`` ``[B, ...]``; the state persists until :meth:`reset`."""
        check_float_tensor(x, "x", 1, "[B, ...]")
        self._check_channels(x.shape, "x")
        self._check_device(x, "x")
        self._streaming_state(x, "step", "x")
        if type(self).advance is not BaseNeuron.advance:  # a subclass's own functional step
            out, self._state = self.advance(x, self._state)
        else:
            # plain attributes written through __dict__: nn.Module.__setattr__ costs microseconds
            # a call, a sizeable share of a small layer's step
            self.__dict__["_in_step"] = True
            try:
                out, state = self._run(x.unsqueeze(0), self._state)
            finally:
                self.__dict__["_in_step"] = False
            self.__dict__["_state"] = state
            out = out[0]
        self._note_active(out)
        return out

    def steps(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Advance ``T`` steps on ``x_seq`` ``[T, B, ...]`` from the streaming state (fresh if
        none) in one kernel call: the same as ``T`` calls of :meth:`step`, the state persisting
        until :meth:`reset`, so a stream can go on in chunks."""
        check_time_steps(check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]"))
        self._check_channels(x_seq.shape[1:], "x_seq")
        self._check_device(x_seq, "x_seq")
        self._streaming_state(x_seq[0], "steps", "x_seq")
        out, self._state = self._run(x_seq, self._state)
        if self.mp_init and self.training:
            self._note_active(out.detach().ne(0).any(0))
        return out

    def _streaming_state(self, x: torch.Tensor, method: str, name: str) -> None:
        if self._state is None:
            self._state = self._fresh_state(x.shape, x)
        elif self._state[0].shape != x.shape:
            raise ValueError(
                f"{name}: {type(self).__name__}.{method} got a step of shape {tuple(x.shape)} but its state has shape "
                f"{tuple(self._state[0].shape)}; call reset() before feeding a differently shaped input"
            )
        elif self._state[0].dtype != x.dtype or self._state[0].device != x.device:
            raise ValueError(
                f"{name}: {type(self).__name__}.{method} got {x.dtype} on {x.device} but its state is "
                f"{self._state[0].dtype} on {self._state[0].device}; call reset() first or convert the input"
            )

    def _note_active(self, out: torch.Tensor) -> None:
        if self.mp_init and self.training:
            fired = (out.detach() != 0)
            self._active = fired if self._active is None else (self._active | fired)

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A fresh state for one step ``x`` ``[B, ...]`` (zeros, or the MP-Init membrane)."""
        return self._fresh_state(x.shape, x)

    def advance(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """Functional step: ``(out, new_state)`` for ``x`` ``[B, ...]``; the module keeps nothing."""
        out, state = self._run(x.unsqueeze(0), state)
        return out[0], state

    def reset(self) -> None:
        """Forget the streaming state (updating the MP-Init running mean first when training)."""
        if self.mp_init and self.training and self._state is not None and self._active is not None:
            self._update_running_v(self._state[0], self._active.to(self._state[0].dtype))
        self._state = None
        self._active = None
        self._full_params = None

    @property
    def state(self) -> dict[str, Optional[torch.Tensor]]:
        """The streaming state by name (``None`` before the first step)."""
        if self._state is None:
            return {name: None for name in self.state_names}
        return dict(zip(self.state_names, self._state))

    def set_state(self, **tensors: torch.Tensor) -> None:
        """Replace the streaming state, e.g. to start from a given membrane potential."""
        unknown = set(tensors) - set(self.state_names)
        if unknown:
            raise ValueError(f"set_state: unknown state {sorted(unknown)}; {type(self).__name__} has {self.state_names}")
        missing = set(self.state_names) - set(tensors)
        if missing and self._state is None:
            raise ValueError(f"set_state: no current state to complete; give all of {self.state_names}")
        current = self.state
        current.update(tensors)
        shapes = {tuple(t.shape) for t in current.values()}
        if len(shapes) != 1:
            raise ValueError(f"set_state: every state must have the same shape, got {sorted(shapes)}")
        self._state = tuple(current[name] for name in self.state_names)

    def select_batch(self, index: torch.Tensor) -> None:
        """Keep only the samples ``index`` (dimension 0) of the streaming state."""
        if self._state is None:
            return
        index = as_batch_index(index, self._state[0].device, self._state[0].shape[0])
        self._state = tuple(s.index_select(0, index) for s in self._state)
        if self._active is not None:
            self._active = self._active.index_select(0, index)

    def extra_repr(self) -> str:
        parts = [f"threshold={_fmt(self.threshold)}"]
        reset = self.reset_mode if self.reset_mode != "hard" else f"hard({self.reset_value:g})"
        parts.append(f"reset={reset}")
        if self.uses_surrogate:
            parts.append(f"surrogate={self.surrogate!r}")
        if self.detach_reset:
            parts.append("detach_reset=True")
        if isinstance(self.threshold, nn.Parameter):
            parts.append("learn_threshold=True")
        if self.threshold_robust:
            parts.append("threshold_robust=True")
        if self.mp_init:
            parts.append(f"mp_init=True, running_v={self.running_v.item():.4g}")
        if self.num_channels is not None:
            parts.append(f"num_channels={self.num_channels}")
        parts.append(f"backend={self.backend}")
        return ", ".join(parts)


def _fmt(t: torch.Tensor) -> str:
    t = t.detach()
    if t.numel() == 1:
        return f"{t.item():.4g}"
    return f"[{t.numel()} values, mean {t.mean().item():.4g}]"


def beta_from(beta: Optional[ParamLike], tau: Optional[ParamLike], num_channels: Optional[int],
              default_tau: float, what: str = "beta") -> torch.Tensor:
    """Decay factor from ``beta`` or from ``tau`` (``beta = 1 - 1/tau``, forward Euler with dt = 1)."""
    if beta is not None and tau is not None:
        raise ValueError(f"{what}: give the decay either as beta or as tau, not both")
    if beta is not None:
        return param_tensor(beta, what, num_channels, low=0.0, high=1.0)
    tau_t = param_tensor(default_tau if tau is None else tau, "tau" if what == "beta" else f"tau ({what})",
                         num_channels, low=1.0)
    return 1.0 - 1.0 / tau_t


_ONES: dict = {}


def one_like(t: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor holding 1 in ``t``'s dtype and device, made once per pair (a kernel
    argument of every step; creating it each time costs as much as a small step's kernel).
    Shared: never written to."""
    key = (t.dtype, t.device)
    one = _ONES.get(key)
    if one is None:
        with torch.inference_mode(False):  # one made in inference mode could not be saved for a backward
            one = torch.ones((), dtype=t.dtype, device=t.device)
        # a tensor made while compiling or under a dispatch mode may be fake: not kept
        if not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None and type(one) is torch.Tensor:
            _ONES[key] = one
    return one


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


__all__ = ["BaseNeuron", "parse_reset", "param_tensor", "beta_from", "logit"]
