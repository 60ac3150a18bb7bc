"""torch.fx plumbing of the converter: tracing, finding activation call sites, folding BatchNorm,
refusing what cannot convert."""

from __future__ import annotations

import copy
import operator
import os
import re
import sys
from typing import Iterable, Optional

import torch
from torch import fx, nn
from torch.nn import functional as F

from spikelab.convert.qcfs import QCFS

RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu6}
RELU_METHODS = {"relu", "relu_"}
RELU_MODULES = (nn.ReLU, nn.ReLU6)

# modules that act the same on spikes at every step (linear maps, pooling, shape changes)
PASS_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout2d, nn.BatchNorm1d,
                nn.BatchNorm2d, nn.MaxPool1d, nn.MaxPool2d, nn.Unflatten)
PASS_FUNCTIONS = {torch.flatten, operator.add, torch.add, operator.iadd, operator.getitem, torch.cat, F.avg_pool2d,
                  F.adaptive_avg_pool2d, F.dropout, F.max_pool2d, operator.mul, torch.reshape, operator.truediv}
PASS_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "add", "add_", "mean", "squeeze", "unsqueeze",
                "permute", "transpose"}


_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


class ConversionError(ValueError):
    """The model cannot be converted; the message lists the offending nodes."""


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as an fx GraphModule (a copy), with a clear error when tracing fails. Each node
    keeps the stack of the source line that made it (``node.stack_trace``), for site names."""
    if isinstance(model, fx.GraphModule):
        return fx.GraphModule(model, copy.deepcopy(model.graph), type(model).__name__)
    if isinstance(model, torch.jit.ScriptModule):
        raise ConversionError(f"{type(model).__name__} is a TorchScript model: conversion traces the Python model; "
                              "build it from its class and load its state_dict")
    tracer = _SourceTracer()
    try:
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}: {type(err).__name__}: {err}. Conversion needs a "
            "forward without data-dependent control flow; move such logic out of forward() or wrap it in a "
            "leaf module") from None


class _SourceTracer(fx.Tracer):
    """A tracer that notes, for each node, the innermost source line outside torch that made it
    (in the format of ``node.stack_trace``): ``record_stack_traces`` would capture whole stacks,
    about 100 times slower."""

    _outer = None  # the frame of trace(): frames from there outward are not the model's code

    def trace(self, root, concrete_args=None) -> fx.Graph:
        self._outer = sys._getframe()
        try:
            return super().trace(root, concrete_args)
        finally:
            self._outer = None

    def create_node(self, *args, **kwargs) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        frame = sys._getframe(1)
        while frame is not None and frame is not self._outer and (
                frame.f_code.co_filename.startswith(_TORCH_DIR) or frame.f_code.co_filename == __file__):
            frame = frame.f_back
        if frame is not None and frame is not self._outer and "stack_trace" not in node.meta:
            node.meta["stack_trace"] = (f'File "{frame.f_code.co_filename}", line {frame.f_lineno}, in '
                                        f'{frame.f_code.co_name}')
        return node


def _module(gm: fx.GraphModule, node: fx.Node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A ReLU-like call site (module, function or method) or a QCFS module."""
    if node.op == "call_module":
        return isinstance(_module(gm, node), RELU_MODULES + (QCFS,))
    if node.op == "call_function":
        if node.target in RELU_FUNCTIONS:
            return True
        if node.target in (torch.clamp, torch.clip) and _clamps_at_zero(node):
            return True
        if node.target is F.hardtanh and (node.args[1:2] or [node.kwargs.get("min_val", -1.0)])[0] == 0:
            return True
    if node.op == "call_method":
        return node.target in RELU_METHODS or (node.target in ("clamp", "clamp_", "clip") and _clamps_at_zero(node))
    return False


def _clamps_at_zero(node: fx.Node) -> bool:
    low = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
    return low == 0 or low == 0.0


def activation_sites(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if is_activation(gm, n)]


def check_supported(gm: fx.GraphModule) -> None:
    """Refuse a graph with layers that have no spiking equivalent, listing every such node."""
    bad = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr") or is_activation(gm, node):
            continue
        at = _at(node)
        if node.op == "call_module":
            mod = _module(gm, node)
            if not isinstance(mod, PASS_MODULES):
                bad.append(f"{node.target} ({type(mod).__name__}){at}")
        elif node.op == "call_function":
            if node.target not in PASS_FUNCTIONS:
                bad.append(f"{node.name} ({getattr(node.target, '__name__', node.target)}){at}")
        elif node.op == "call_method" and node.target not in PASS_METHODS:
            bad.append(f"{node.name} (.{node.target}()){at}")
    if bad:
        raise ConversionError(
            f"cannot convert {len(bad)} node(s) with no spiking equivalent: {', '.join(bad)}. Supported: "
            "Conv/Linear/BatchNorm/AvgPool/MaxPool/Flatten/Dropout, additions and reshapes, and ReLU-like "
            "activations (nn.ReLU, F.relu, torch.relu, ReLU6, clamp(min=0), QCFS)")


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold every BatchNorm that directly follows a Conv/Linear (used nowhere else) into it."""
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        prev = node.args[0]
        layer = _module(gm, prev) if isinstance(prev, fx.Node) else None
        if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)) or len(prev.users) != 1:
            continue
        folded = _fold(layer, bn)
        gm.add_submodule(prev.target, folded)  # replaces the layer in place
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    return tidy(gm)


def _fold(layer: nn.Module, bn: nn.Module) -> nn.Module:
    layer = __import__("copy").deepcopy(layer)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
        shape = (-1,) + (1,) * (layer.weight.ndim - 1)
        layer.weight.mul_(scale.reshape(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = bias * scale + shift
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)
    return layer


def replace_with_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module) -> fx.Node:
    """Put ``module`` (registered as ``name``) in place of the call ``node``, fed its first argument
    (the new node keeps the old one's source location)."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (node.args[0],))
    if "stack_trace" in node.meta:
        new.meta["stack_trace"] = node.meta["stack_trace"]
    stack = dict(node.meta.get("nn_module_stack") or {})
    if node.op == "call_module" and stack and str(list(stack.values())[-1][0]) == node.target:
        stack.pop(list(stack)[-1])  # the replaced module itself: the new one is called from the same parent
    new.meta["nn_module_stack"] = stack
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def tidy(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_FUNCTION_NAMES = {F.relu: "F.relu", torch.relu: "torch.relu", torch.relu_: "torch.relu_", F.relu6: "F.relu6",
                   torch.clamp: "torch.clamp", torch.clip: "torch.clip", F.hardtanh: "F.hardtanh"}


def source_of(node: fx.Node) -> Optional[tuple[str, int, str]]:
    """``(file, line, function)`` of the user's source line that made ``node`` (the innermost frame
    outside torch), when the tracer recorded it."""
    stack = node.stack_trace or node.meta.get("stack_trace") or ""
    frames = [(f, int(line), fn) for f, line, fn in _FRAME.findall(stack)
              if not os.path.abspath(f).startswith(_TORCH_DIR)]
    return frames[-1] if frames else None


def _owner(node: fx.Node, root: type) -> tuple[str, type | str]:
    """The module instance path and class whose code made ``node`` (for a module call: its parent)."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    if node.op == "call_module" and stack and str(stack[-1][0]) == node.target:
        stack = stack[:-1]
    if not stack:
        return "", root
    path, cls = stack[-1]
    return str(path), cls


def _class_name(cls: type | str) -> str:
    return cls.__name__ if isinstance(cls, type) else str(cls).rpartition(".")[2]


def _at(node: fx.Node) -> str:
    """`` at file:line`` of the node's source, or nothing."""
    src = source_of(node)
    return f" at {os.path.basename(src[0])}:{src[1]}" if src else ""


def _call(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        kind = f"nn.{type(mod).__name__}" if type(mod).__module__.startswith("torch.nn") else type(mod).__name__
        return f"{kind} {node.target}"
    if node.op == "call_function":
        return _FUNCTION_NAMES.get(node.target, getattr(node.target, "__name__", str(node.target)))
    return f".{node.target}()"


def describe(gm: fx.GraphModule, node: fx.Node, root: Optional[type] = None) -> str:
    """What ``node`` calls and where, e.g. ``F.relu in ResCNN.forward, mynet.py:14`` or
    ``nn.ReLU layer1.0.relu, in BasicBlock.forward of layer1.0, mynet.py:30``; ``root`` is the
    traced model's class."""
    if node.op == "call_module":
        origin = getattr(gm.get_submodule(node.target), "replaces", None)  # set by replace_relu_with_qcfs
        if origin:
            return f"{_call(gm, node)} in place of {origin}"
    path, cls = _owner(node, root or type(gm))
    src = source_of(node)
    line = f"{os.path.basename(src[0])}:{src[1]}" if src else ""
    text = _call(gm, node) + (", in " if node.op == "call_module" else " in ")
    if isinstance(cls, type) and cls.__module__.startswith("torch.nn") and path:
        # a torch container (nn.Sequential): its forward is torch's; the line is where it is called
        return text + f"nn.{cls.__name__} {path}" + (f", called at {line}" if line else "")
    fn = src[2] if src else "forward"
    where = f"{_class_name(cls)}.{fn}" if fn == "forward" or (isinstance(cls, type) and hasattr(cls, fn)) else f"{fn}()"
    where += f" of {path}" if path else ""
    return text + where + (f", {line}" if line else "")


def site_names(gm: fx.GraphModule, nodes: list[fx.Node], root: Optional[type] = None) -> list[tuple[str, str]]:
    """A unique, readable name and a description for each activation site: the module path for a
    module (``layer1.0.relu``; ``#1``, ``#2`` when one module is called at several sites), the
    fx node name for a function or method call (``relu_3``)."""
    calls: dict[str, int] = {}
    for node in nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    seen: dict[str, int] = {}
    taken: set[str] = set()
    out = []
    for node in nodes:
        described = describe(gm, node, root)
        if node.op == "call_module":
            seen[node.target] = seen.get(node.target, 0) + 1
            name = node.target if calls[node.target] == 1 else f"{node.target}#{seen[node.target]}"
            if calls[node.target] > 1:
                described += f" (call {seen[node.target]} of {calls[node.target]})"
        else:
            name = node.name
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}~{k}"
        taken.add(name)
        out.append((name, described))
    return out


def submodule_key(gm: fx.GraphModule, name: str, taken: set[str]) -> str:
    """A fresh attribute name for site ``name``: ``site_`` and the name with non-word characters
    replaced (``layer1.0.relu`` -> ``site_layer1_0_relu``)."""
    key = "site_" + re.sub(r"\W", "_", name)
    while key in taken or hasattr(gm, key):
        key += "_"
    taken.add(key)
    return key


def nodes_of(gm: fx.GraphModule, types: Iterable[type]) -> list[fx.Node]:
    types = tuple(types)
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(_module(gm, n), types)]


__all__ = ["ConversionError", "trace", "is_activation", "activation_sites", "check_supported", "fold_batchnorm", "replace_with_module", "tidy", "describe", "site_names", "submodule_key", "nodes_of", "source_of"]
