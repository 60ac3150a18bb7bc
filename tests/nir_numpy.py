"""A small NumPy interpreter of the NIR equations, independent of spikelab's modules.

Forward Euler over one step of ``dt`` in float64, exactly as docs/export.md states them:
LIF ``v += dt/tau (v_leak - v + r I)``; CubaLIF current first, then the membrane with the
updated current; IF and I ``v += r I``; LI as LIF without firing; firing ``v > v_threshold``,
then ``v = v_reset``. Edges into a node are summed; an edge that closes a cycle carries its
source's value from the previous step (at the first, a feedback layer's output for silent input).
"""

from __future__ import annotations

import nir
import numpy as np


def _conv2d(x, w, b, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    ph, pw = padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    co, ci, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, co, oh, ow))
    per = co // groups
    for g in range(groups):
        xs = x[:, g * ci:(g + 1) * ci]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + sh * oh: sh, j * dw: j * dw + sw * ow: sw]
                out[:, g * per:(g + 1) * per] += np.einsum("nchw,oc->nohw", patch, w[g * per:(g + 1) * per, :, i, j])
    return out + b.reshape(1, -1, 1, 1)


def _pool(x, k, s, p, average):
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    oh = (x.shape[2] - k[0]) // s[0] + 1
    ow = (x.shape[3] - k[1]) // s[1] + 1
    out = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(k[0]):
        for j in range(k[1]):
            out += x[:, :, i: i + s[0] * oh: s[0], j: j + s[1] * ow: s[1]]
    return out / (k[0] * k[1]) if average else out


class Interpreter:
    def __init__(self, graph: nir.NIRGraph, dt: float) -> None:
        self.graph, self.dt = graph, dt
        self.inner = {k: Interpreter(n, dt) for k, n in graph.nodes.items() if isinstance(n, nir.NIRGraph)}
        self.state: dict = {}
        self.previous: dict = {}
        self.order, self.back = self._order()

    def _order(self):
        succ = {k: [] for k in self.graph.nodes}
        for s, d in self.graph.edges:
            succ[s].append(d)
        seen, post, back = {}, [], set()

        def visit(n):
            seen[n] = 1
            for m in succ[n]:
                if seen.get(m) == 1:
                    back.add((n, m))
                elif m not in seen:
                    visit(m)
            seen[n] = 2
            post.append(n)

        for k, n in self.graph.nodes.items():
            if isinstance(n, nir.Input):
                visit(k)
        return post[::-1], back

    def step(self, x):
        values = {}
        for name in self.order:
            node = self.graph.nodes[name]
            if isinstance(node, nir.Input):
                values[name] = x
                continue
            total = None
            for s, d in self.graph.edges:
                if d == name and (s, d) not in self.back and s in values:
                    total = values[s] if total is None else total + values[s]
            for s, d in self.back:
                if d == name:
                    if s in self.previous:
                        v = self.previous[s]
                    elif isinstance(self.graph.nodes[s], (nir.Affine, nir.Linear)):  # its output for silent input
                        v = self._node(s, self.graph.nodes[s], np.zeros_like(total))
                    else:
                        v = None
                    if v is not None:
                        total = v if total is None else total + v
            values[name] = self._node(name, node, total)
        self.previous = values
        out = [k for k, n in self.graph.nodes.items() if isinstance(n, nir.Output)][0]
        return values[out]

    def _node(self, name, n, x):
        dt = self.dt
        if isinstance(n, nir.Output):
            return x
        if isinstance(n, nir.NIRGraph):
            return self.inner[name].step(x)
        if isinstance(n, nir.Affine):
            return x @ n.weight.T + n.bias
        if isinstance(n, nir.Linear):
            return x @ n.weight.T
        if isinstance(n, nir.Conv2d):
            return _conv2d(x, n.weight, n.bias, n.stride, n.padding, n.dilation, n.groups)
        if isinstance(n, nir.Conv1d):  # as a 2-D convolution of height 1
            pad = n.padding if isinstance(n.padding, int) else n.padding[0]
            out = _conv2d(x[:, :, None, :], n.weight[:, :, None, :], n.bias, (1, n.stride), (0, pad),
                          (1, n.dilation), n.groups)
            return out[:, :, 0, :]
        if isinstance(n, (nir.SumPool2d, nir.AvgPool2d)):
            return _pool(x, n.kernel_size, n.stride, n.padding, isinstance(n, nir.AvgPool2d))
        if isinstance(n, nir.Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(n, nir.Scale):
            return x * n.scale
        if isinstance(n, nir.Delay):  # whole steps of dt
            hist = self.state.setdefault(name, {"h": []})["h"]
            hist.append(x)
            steps = np.round(np.asarray(n.delay) / dt).astype(int)
            out = np.zeros_like(x)
            for idx in np.ndindex(*steps.shape):
                k = len(hist) - 1 - steps[idx]
                if k >= 0:
                    out[(slice(None),) + idx] = hist[k][(slice(None),) + idx]
            return out
        if isinstance(n, nir.Threshold):
            return (x > n.threshold).astype(np.float64)
        st = self.state.setdefault(name, {"v": np.zeros_like(x), "i": np.zeros_like(x)})
        if isinstance(n, (nir.IF, nir.I)):
            st["v"] = st["v"] + n.r * x
        elif isinstance(n, (nir.LIF, nir.LI)):
            st["v"] = st["v"] + dt / n.tau * (n.v_leak - st["v"] + n.r * x)
        elif isinstance(n, nir.CubaLIF):
            st["i"] = st["i"] + dt / n.tau_syn * (-st["i"] + n.w_in * x)
            st["v"] = st["v"] + dt / n.tau_mem * (n.v_leak - st["v"] + n.r * st["i"])
        else:
            raise NotImplementedError(type(n).__name__)
        if isinstance(n, (nir.I, nir.LI)):
            return st["v"]
        z = st["v"] > n.v_threshold
        st["v"] = np.where(z, n.v_reset, st["v"])
        return z.astype(np.float64)

    def run(self, x_seq):
        return np.stack([self.step(x) for x in np.asarray(x_seq, dtype=np.float64)])
