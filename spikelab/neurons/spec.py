"""Neurons written as one spec: equations in Python, fused kernels generated from them.

A subclass of :class:`Neuron` declares its parameters and states and writes its per-step
equations as methods whose argument names say what they read::

    class EIF(Neuron):
        parameters = dict(tau=10.0, delta=0.5, v_rheo=0.8)
        def charge(self, v, x, tau, delta, v_rheo):
            return v + (-v + delta * exp((v - v_rheo) / delta) + x) / tau

One step, in this order (the reference and the generated kernels alike):

1. ``charge(...)``: reads the previous states, ``x`` and parameters; returns the charged value
   of the firing state, a tuple with one value per state, or a dict ``{state: value}``.
2. ``effective_threshold(threshold, ...)`` (optional): the threshold this step, from the
   charged states and parameters (an adaptive threshold).
3. ``spike_argument(...)`` (optional): what the Heaviside step and the surrogate see; the
   neuron fires when it is ``>= 0``. Default ``h - threshold``.
4. The firing state is reset by the ``reset`` option (subtract the threshold, to a value, none).
5. ``after_spike(spike, ...)`` (optional): ``{state: value}`` for the other states after the
   spike (an adaptation trace, a recovery variable's jump).

Arguments are bound by name from: the states (previous values in ``charge``, charged values
after it), ``x``, the declared parameters, ``threshold`` and ``spike``. The reference backend
evaluates these methods on tensors (autograd is the truth); the fused backends trace them
once into an expression graph and generate Numba and Triton kernels, forward and backward.
"""

from __future__ import annotations

import inspect
import keyword
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import nn

from spikelab._checks import check_number, check_values
from spikelab.kernels import reference
from spikelab.kernels.expr import Expr, TraceError
from spikelab.kernels.graph import StepGraph
from spikelab.neurons.base import BaseNeuron, _fmt

HOOKS = ("charge", "effective_threshold", "spike_argument", "after_spike")
RESERVED = ("x", "threshold", "spike", "self", "thr")


class NeuronSpecError(TypeError):
    """A neuron spec that cannot be compiled or run; the message names the neuron and the reason."""


class _NeedsInstance(Exception):
    """The equations read the module (``self``): trace them on first call instead."""


class _Placeholder:
    def __getattr__(self, name: str) -> Any:
        raise _NeedsInstance(name)


class SpecFamily:
    """What the dispatch needs of a spec neuron: its kernel key and its reference implementation."""

    def __init__(self, key: str, reference_fn: Callable) -> None:
        self.key = key
        self.reference = reference_fn

    def __repr__(self) -> str:
        return f"SpecFamily({self.key})"


class Neuron(BaseNeuron):
    """Base class of neurons defined by their equations (see the module docstring).

    Class attributes:
        parameters: ``{name: default}``; each becomes a constructor argument taking a number
            (one per layer), a 1-D tensor (one per channel) or a tensor of the per-sample
            feature shape (one per neuron).
        states: state names; the first fires unless ``fires`` names another.
        positive: parameters that must be > 0 (checked when given).

    Constructor: the parameters by name, ``learn=True`` or ``learn=("tau", ...)`` to make them
    learnable, and every :class:`BaseNeuron` option (threshold, reset, surrogate, ...).
    """

    spec_parameters: dict[str, float] = {}
    states: tuple[str, ...] = ("v",)
    fires: Optional[str] = None
    positive: tuple[str, ...] = ()
    effective_threshold: Optional[Callable] = None
    spike_argument: Optional[Callable] = None
    after_spike: Optional[Callable] = None
    _class_graph: Optional[StepGraph] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("parameters", cls.spec_parameters)
        if not isinstance(declared, dict):
            raise _spec_error(cls, f"parameters must be a dict {{name: default}}, got {type(declared).__name__}")
        # the declaration moves aside: `parameters()` stays nn.Module's method (optimisers call it)
        cls.spec_parameters = dict(declared)
        cls.parameters = nn.Module.parameters
        _check_declaration(cls)
        cls.state_names = tuple(cls.states)
        try:
            cls._class_graph = trace(cls, _Placeholder())
        except _NeedsInstance:
            cls._class_graph = None  # traced per instance on first use
        else:
            if not cls.__module__.startswith("spikelab."):  # the library's own are checked by its tests
                check_differentiable(cls._class_graph, cls)

    def charge(self, *args, **kwargs):  # pragma: no cover - every spec defines it
        raise NotImplementedError

    def __init__(self, *, learn: Union[bool, Iterable[str]] = False, **kwargs) -> None:
        if type(self) is Neuron:
            raise TypeError("Neuron is a base class: subclass it with `parameters` and a `charge` method")
        values = {name: kwargs.pop(name, default) for name, default in self.spec_parameters.items()}
        super().__init__(**kwargs)
        learned = set(self.spec_parameters) if learn is True else set() if learn is False else set(learn)
        unknown = learned - set(self.spec_parameters)
        if unknown:
            raise ValueError(f"learn: {type(self).__name__} has no parameter {sorted(unknown)}; "
                             f"its parameters are {list(self.spec_parameters)}")
        for name, value in values.items():
            t = _param_value(value, f"{type(self).__name__}.{name}", self.num_channels, name in self.positive)
            if name in learned:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        if self.mp_init and self.state_names.index(self.fires or self.states[0]) != 0:
            raise ValueError(f"{type(self).__name__}: mp_init starts the first state, but this neuron fires on "
                             f"{self.fires!r}; list the firing state first in `states`")
        if self.threshold_robust and type(self).spike_argument is not None:
            raise ValueError(f"{type(self).__name__}: threshold_robust replaces the spike argument, and this neuron "
                             "defines its own spike_argument")
        self._graph: Optional[StepGraph] = None
        self._kernel_key: Optional[str] = None
        if type(self)._class_graph is not None:
            self.family  # register now: hashing the graph inside torch.compile would break the graph

    # ----- the spec as data --------------------------------------------------------------------
    def step_graph(self) -> StepGraph:
        """The traced step (the class's, or this instance's when the equations read ``self``: the
        values read from ``self`` become constants of the kernels at the first call)."""
        if self._graph is None:
            graph = type(self)._class_graph
            if graph is None:
                graph = trace(type(self), self)
                check_differentiable(graph, type(self))
            self._graph = graph
        return self._graph

    @property
    def family(self) -> SpecFamily:  # type: ignore[override]
        """The kernel key (registered once) and this module's reference (a fresh pair: a copy of
        the module never calls the original's methods)."""
        if self._kernel_key is None:
            from spikelab.kernels import generated

            self._kernel_key = generated.register(self.step_graph())
        return SpecFamily(self._kernel_key, self._reference)

    def _kernel_args(self, ndim: int):
        params = tuple(self._view(getattr(self, p), ndim) for p in self.spec_parameters)
        params += (self._view(self.threshold, ndim),)
        options = dict(self._kwargs(), surrogate=self.surrogate, threshold_robust=self.threshold_robust)
        return params, options

    def _run(self, x_seq: torch.Tensor, state, record: bool = False):
        self._check_kernel_input(x_seq)
        return super()._run(x_seq, state, record)

    def _check_kernel_input(self, x_seq: torch.Tensor) -> None:
        features = tuple(x_seq.shape[2:])
        for name in self.spec_parameters:
            p = getattr(self, name)
            if p.ndim > 1 and (len(p.shape) > len(features) or
                               any(a not in (1, b) for a, b in zip(p.shape[::-1], features[::-1]))):
                raise ValueError(f"{type(self).__name__}: parameter {name!r} has one value per neuron of shape "
                                 f"{tuple(p.shape)}, which does not fit the per-sample shape {features}")

    def _view(self, p: torch.Tensor, ndim: int) -> torch.Tensor:
        if p.ndim <= 1:
            return super()._view(p, ndim)
        return p  # one value per neuron: the per-sample feature shape

    # ----- the reference: the methods themselves, on tensors -----------------------------------
    def _reference(self, x: torch.Tensor, *tensors: torch.Tensor, surrogate, reset_mode: str = "subtract",
                   reset_value: float = 0.0, detach_reset: bool = False, threshold_robust: bool = False,
                   trace: Optional[list] = None):
        ns = len(self.states)
        states = list(tensors[:ns])
        params = dict(zip(self.spec_parameters, tensors[ns:-1]))
        threshold = tensors[-1]
        f = self.state_names.index(self.fires or self.states[0])
        outs = []
        for t in range(x.shape[0]):
            charged = _charged(type(self), self, states, x[t], params)
            named = dict(zip(self.states, charged))
            theta = threshold
            if type(self).effective_threshold is not None:
                theta = _call(type(self), self, "effective_threshold", dict(named, x=x[t], threshold=threshold, **params))
            h = charged[f]
            if threshold_robust:
                out, s = reference.fire(h, theta, surrogate, True)
            else:
                z = h - theta if type(self).spike_argument is None else \
                    _call(type(self), self, "spike_argument", dict(named, x=x[t], threshold=theta, **params))
                s = surrogate(z)
                out = s
            new = list(charged)
            new[f] = reference.reset_membrane(h, s, theta, reset_mode, reset_value, detach_reset)
            if type(self).after_spike is not None:
                updates = _call(type(self), self, "after_spike", dict(named, x=x[t], threshold=theta, spike=s, **params))
                for name, value in _after_dict(type(self), updates).items():
                    new[self.states.index(name)] = _full(value, x[t], type(self), "after_spike")
            states = new
            if trace is not None:
                trace.append(h)
            outs.append(out)
        return torch.stack(outs), tuple(states)

    def extra_repr(self) -> str:
        values = ", ".join(f"{p}={_fmt(getattr(self, p))}" for p in self.spec_parameters)
        return (values + ", " if values else "") + super().extra_repr()


# ----- declaration checks and tracing ---------------------------------------------------------------

def _spec_error(cls: type, message: str) -> NeuronSpecError:
    return NeuronSpecError(f"{cls.__name__}: {message}")


def _check_declaration(cls: type) -> None:
    if not callable(cls.__dict__.get("charge")) and cls.charge is Neuron.charge:
        raise _spec_error(cls, "a neuron spec needs a charge(self, <states>, x, <parameters>) method")
    if isinstance(cls.states, str) or not cls.states:
        raise _spec_error(cls, "states must be a non-empty tuple of names, e.g. ('v',) or ('v', 'a')")
    names = list(cls.states) + list(cls.spec_parameters)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise _spec_error(cls, f"{name!r} is not a valid state or parameter name")
        if name in RESERVED:
            raise _spec_error(cls, f"{name!r} is reserved: {', '.join(RESERVED)} (x is the input, threshold and "
                                   "spike are given)")
        if name.startswith("_") or hasattr(BaseNeuron, name) or name in _instance_attributes():
            raise _spec_error(cls, f"{name!r} clashes with a neuron attribute (or starts with '_'); rename it")
    if len(set(names)) != len(names):
        raise _spec_error(cls, f"state and parameter names must be distinct, got {names}")
    for name, default in cls.spec_parameters.items():
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise _spec_error(cls, f"parameter {name!r}: the default must be a number, got {default!r}")
    if cls.fires is not None and cls.fires not in cls.states:
        raise _spec_error(cls, f"fires={cls.fires!r} is not one of the states {tuple(cls.states)}")
    bad = set(cls.positive) - set(cls.spec_parameters)
    if bad:
        raise _spec_error(cls, f"positive names {sorted(bad)}, which are not parameters")
    allowed = {
        "charge": set(cls.states) | {"x"} | set(cls.spec_parameters),
        "effective_threshold": set(cls.states) | {"x", "threshold"} | set(cls.spec_parameters),
        "spike_argument": set(cls.states) | {"x", "threshold"} | set(cls.spec_parameters),
        "after_spike": set(cls.states) | {"x", "threshold", "spike"} | set(cls.spec_parameters),
    }
    for hook in HOOKS:
        fn = getattr(cls, hook)
        if fn is None:
            continue
        for p in list(inspect.signature(fn).parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise _spec_error(cls, f"{hook}: name each argument (no *args / **kwargs)")
            if p.name not in allowed[hook]:
                raise _spec_error(cls, f"{hook} reads {p.name!r}, which is not declared; it may read "
                                       f"{sorted(allowed[hook])} (declare parameters in `parameters`)")


_ATTRIBUTES: set[str] = set()


def _instance_attributes() -> set[str]:
    """Names a neuron instance already uses (options, buffers, nn.Module's own)."""
    if not _ATTRIBUTES:
        probe = BaseNeuron()
        _ATTRIBUTES.update(vars(probe), dict(probe.named_buffers()), dict(probe.named_parameters()))
    return _ATTRIBUTES


def _call(cls: type, obj: Any, hook: str, pool: dict[str, Any]):
    fn = getattr(cls, hook)
    names = list(inspect.signature(fn).parameters)[1:]
    return fn(obj, **{n: pool[n] for n in names})


def _after_dict(cls: type, updates: Any) -> dict:
    fires = cls.fires or cls.states[0]
    if not isinstance(updates, dict):
        raise _spec_error(cls, f"after_spike must return a dict {{state: new value}}, got {type(updates).__name__}")
    for name in updates:
        if name not in cls.states:
            raise _spec_error(cls, f"after_spike returns {name!r}, which is not a state {tuple(cls.states)}")
        if name == fires:
            raise _spec_error(cls, f"after_spike returns the firing state {fires!r}, which the reset option resets")
    return updates


def _charged(cls: type, obj: Any, states: list, x: Any, params: dict) -> list:
    """The charged value of every state (``charge``'s result made one per state)."""
    pool = dict(zip(cls.states, states), x=x, **params)
    result = _call(cls, obj, "charge", pool)
    if isinstance(result, dict):
        unknown = set(result) - set(cls.states)
        if unknown:
            raise _spec_error(cls, f"charge returns {sorted(unknown)}, which are not states {tuple(cls.states)}")
        charged = [result.get(s, states[j]) for j, s in enumerate(cls.states)]
    elif isinstance(result, (tuple, list)):
        if len(result) != len(cls.states):
            raise _spec_error(cls, f"charge returns {len(result)} values for {len(cls.states)} states "
                                   f"{tuple(cls.states)}")
        charged = list(result)
    else:
        f = cls.states.index(cls.fires or cls.states[0])
        charged = list(states)
        charged[f] = result
    return [_full(c, x, cls, "charge") for c in charged]


def _full(value: Any, x: Any, cls: type, hook: str):
    """A hook's value checked (tensors: broadcast to the step's shape)."""
    if isinstance(x, Expr):
        if isinstance(value, Expr):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _spec_error(cls, f"{hook} returns {type(value).__name__}; expected a neuron value or a number")
        return Expr("const", (), float(value))
    if not torch.is_tensor(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _spec_error(cls, f"{hook} returns {type(value).__name__}; expected a tensor or a number")
        return torch.full_like(x, float(value))
    if value.shape != x.shape:
        try:
            shape = torch.broadcast_shapes(value.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise _spec_error(cls, f"{hook} returns shape {tuple(value.shape)} for a step of shape {tuple(x.shape)}")
        value = value.expand(x.shape)
    return value


def trace(cls: type, obj: Any) -> StepGraph:
    """Trace ``cls``'s equations (with ``obj`` as ``self``) into a :class:`StepGraph`."""
    sym = lambda name: Expr("sym", (), name)  # noqa: E731
    states = [sym(f"s_{s}") for s in cls.states]
    params = {p: sym(f"p_{p}") for p in cls.spec_parameters}
    x, thr, spike = sym("x_"), sym("thr_"), sym("spike_")
    f = list(cls.states).index(cls.fires or cls.states[0])
    hook = "charge"
    try:
        charged = _charged(cls, obj, states, x, params)
        named = dict(zip(cls.states, charged))
        theta = thr
        if cls.effective_threshold is not None:
            hook = "effective_threshold"
            theta = _full(_call(cls, obj, hook, dict(named, x=x, threshold=thr, **params)), x, cls, hook)
        argument = None
        if cls.spike_argument is not None:
            hook = "spike_argument"
            argument = _full(_call(cls, obj, hook, dict(named, x=x, threshold=theta, **params)), x, cls, hook)
        after: list[Optional[Expr]] = [None] * len(cls.states)
        if cls.after_spike is not None:
            hook = "after_spike"
            updates = _call(cls, obj, hook, dict(named, x=x, threshold=theta, spike=spike, **params))
            for name, value in _after_dict(cls, updates).items():
                after[cls.states.index(name)] = _full(value, x, cls, hook)
    except _NeedsInstance:
        raise
    except NeuronSpecError:
        raise
    except TraceError as err:
        raise _spec_error(cls, f"{hook}: {err}") from None
    except (TypeError, AttributeError) as err:
        raise _spec_error(cls, f"{hook}: unsupported operation ({err}); neuron equations may use + - * / ** "
                               "and spikelab.neurons' exp, log, tanh, sigmoid, sqrt, clamp, minimum, maximum, "
                               "where") from None
    for name, e in [("charge", c) for c in charged] + [("effective_threshold", theta), ("spike_argument", argument)]:
        if e is not None and _mentions(e, "spike_"):
            raise _spec_error(cls, f"{name} cannot read the spike of the same step")
    return StepGraph(name=cls.__name__, states=tuple(cls.states), fires=f, params=tuple(cls.spec_parameters),
                     charged=tuple(charged), theta=theta, argument=argument, after=tuple(after))


def check_differentiable(graph: StepGraph, cls: type) -> None:
    """Derive the backward now, so a spec the kernel generator cannot differentiate fails early."""
    from spikelab.kernels.symbolic import backward

    try:
        for robust in (False, True) if graph.argument is None else (False,):
            backward(graph, robust)
    except TraceError as err:
        raise _spec_error(cls, f"backward: {err}") from None
    except (TypeError, ValueError) as err:
        raise _spec_error(cls, f"backward: the equations cannot be differentiated ({err})") from None


def _mentions(e: Expr, name: str) -> bool:
    stack, seen = [e], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op == "sym" and n.value == name:
            return True
        stack.extend(n.args)
    return False


def _param_value(value: Any, name: str, num_channels: Optional[int], positive: bool) -> torch.Tensor:
    """A number (per layer), a 1-D tensor (per channel) or an N-D tensor (per neuron), checked."""
    bounds = dict(low=0.0, low_open=True) if positive else {}
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a number or a tensor, got a bool")
    if isinstance(value, (int, float)):
        t = torch.tensor(check_number(value, name, **bounds), dtype=torch.float32)
        return t.expand(num_channels).clone() if num_channels is not None else t
    try:
        t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name}: expected a number or a tensor, got {type(value).__name__}") from err
    if t.ndim == 1 and num_channels is not None and t.numel() != num_channels:
        raise ValueError(f"{name}: expected {num_channels} values (num_channels), got {t.numel()}")
    check_values(t, name, **bounds)
    return t


__all__ = ["Neuron", "NeuronSpecError", "SpecFamily", "trace"]
