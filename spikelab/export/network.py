"""Run a graph of spikelab modules as NIR defines it (:class:`NIRNetwork`).

Nodes run in topological order; inputs arriving at a node by several edges are summed. An
acyclic graph runs sequence-wise (each node on the whole ``[T, B, ...]``, neurons on their fused
kernels); a graph with cycles (recurrence) runs step by step, an edge that closes a cycle
carrying the value its source had at the previous step (at the first: a feedback layer's output
for silent input, as snnTorch's RLeaky).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from spikelab._checks import as_batch_index, check_float_tensor
from spikelab.export.errors import NIRImportError


class NIRNetwork(nn.Module):
    """A NIR graph as a module: ``forward(x [T, B, ...]) -> [T, B, ...]`` (one input, one output)."""

    _spikelab_stateful = True

    def __init__(self, modules: dict[str, Optional[nn.Module]], edges: list[tuple[str, str]],
                 inputs: list[str], outputs: list[str]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({_key(k): m for k, m in modules.items() if m is not None})
        self.names = list(modules)
        self.edges = list(edges)
        self.inputs, self.outputs = inputs, outputs
        self.order, self.back_edges = graph_order(self.names, self.edges, inputs)
        self.recurrent = bool(self.back_edges)
        self._previous: dict[str, torch.Tensor] = {}

    def _module(self, name: str) -> Optional[nn.Module]:
        return self.layers[_key(name)] if _key(name) in self.layers else None

    def _gather(self, name: str, values: dict, previous: dict) -> Optional[torch.Tensor]:
        total = None
        for src, dst in self.edges:
            if dst == name and (src, dst) not in self.back_edges and values.get(src) is not None:
                total = values[src] if total is None else total + values[src]
        for src, dst in self.back_edges:
            if dst == name:
                v = previous.get(src) if src in previous else self._before_start(src, name, total)
                if v is not None:
                    total = v if total is None else total + v
        return total

    def _before_start(self, src: str, dst: str, dst_input: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """What a cycle-closing edge carries into the first step: the source's output for silent
        input (a feedback layer's bias acts from the start, as in snnTorch's RLeaky), nothing
        for a stateful source or where the source's input shape is not known yet."""
        m = self._module(src)
        feeds = [s for s, d in self.edges if d == src]
        if m is None or getattr(m, "_spikelab_stateful", False) or feeds != [dst] or dst_input is None:
            return None
        silent = torch.zeros_like(dst_input)  # the source reads the (shape-preserving) destination's output
        return m.step(silent) if hasattr(m, "step") else m(silent)

    def _run(self, x: torch.Tensor, sequence: bool, previous: dict) -> dict:
        values: dict[str, torch.Tensor] = {}
        for name in self.order:
            if name in self.inputs:
                values[name] = x
                continue
            inp = self._gather(name, values, previous)
            if inp is None:
                raise NIRImportError(f"node {name!r} receives no input (is it connected to the graph's input?)")
            m = self._module(name)
            if m is None:
                values[name] = inp
            elif sequence:
                values[name] = m(inp)
            else:
                values[name] = m.step(inp) if hasattr(m, "step") else m(inp)
        return values

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "x_seq", 2, "[T, B, ...]")
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise NIRImportError(f"forward takes a graph with one input and one output; this one has inputs "
                                 f"{self.inputs} and outputs {self.outputs}")
        if not self.recurrent:
            return self._run(x_seq, True, {})[self.outputs[0]]
        self.reset()
        outs = [self.step(x_seq[t]) for t in range(x_seq.shape[0])]
        self.reset()
        return torch.stack(outs)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step ``[B, ...]``; states persist until :meth:`reset`."""
        values = self._run(x, False, self._previous)
        self._previous = values
        return values[self.outputs[0]]

    def reset(self) -> None:
        self._previous = {}
        for m in self.layers.values():
            if getattr(m, "_spikelab_stateful", False):
                m.reset()

    def select_batch(self, index) -> None:
        if self._previous:
            first = next(iter(self._previous.values()))
            index = as_batch_index(index, first.device, first.shape[0])
            self._previous = {k: v.index_select(0, index) for k, v in self._previous.items()}
        for m in self.layers.values():
            if getattr(m, "_spikelab_stateful", False):
                m.select_batch(index)

    def extra_repr(self) -> str:
        return f"edges={len(self.edges)}, recurrent={self.recurrent}"


def _key(name: str) -> str:
    return name.replace(".", "__")


def graph_order(names: list[str], edges: list[tuple[str, str]], inputs: list[str], where: str = ""):
    """Topological order from the inputs, and the edges that close cycles (depth-first); every
    node must be reached (``where`` locates the graph in errors, e.g. a subgraph)."""
    succ: dict[str, list[str]] = {n: [] for n in names}
    for s, d in edges:
        for n in (s, d):
            if n not in succ:
                raise NIRImportError(f"edge ({s!r}, {d!r}){where} names the unknown node {n!r}")
        succ[s].append(d)
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()
    post: list[str] = []

    def visit(root: str) -> None:
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                post.append(node)
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))

    for i in inputs:
        visit(i)
    unreached = [n for n in names if n not in state]
    if unreached:
        raise NIRImportError(f"NIR nodes {unreached}{where} cannot be reached from the graph's inputs {inputs}; "
                             "expected every node on a path from an Input node")
    return post[::-1], back


__all__ = ["NIRNetwork"]
