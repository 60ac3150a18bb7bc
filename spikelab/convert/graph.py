"""torch.fx plumbing of the converter: tracing, finding activation call sites, folding BatchNorm,
refusing what cannot convert."""

from __future__ import annotations

import operator
from typing import Iterable

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


class ConversionError(ValueError):
    """The model cannot be converted; the message lists the offending nodes."""


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as an fx GraphModule (a copy), with a clear error when tracing fails."""
    if isinstance(model, fx.GraphModule):
        return fx.GraphModule(model, model.graph)
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}: {type(err).__name__}: {err}. Conversion needs a "
            "forward without data-dependent control flow; move such logic out of forward() or wrap it in a "
            "leaf module") from None


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
        if node.op == "call_module":
            mod = _module(gm, node)
            if not isinstance(mod, PASS_MODULES):
                bad.append(f"{node.name} ({type(mod).__name__})")
        elif node.op == "call_function":
            if node.target not in PASS_FUNCTIONS:
                bad.append(f"{node.name} ({getattr(node.target, '__name__', node.target)})")
        elif node.op == "call_method" and node.target not in PASS_METHODS:
            bad.append(f"{node.name} (.{node.target}())")
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
    """Put ``module`` (registered as ``name``) in place of the call ``node``, fed its first argument."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (node.args[0],))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def tidy(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def nodes_of(gm: fx.GraphModule, types: Iterable[type]) -> list[fx.Node]:
    types = tuple(types)
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(_module(gm, n), types)]
