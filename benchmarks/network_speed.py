"""Whole-network speed and memory: spikelab against snnTorch, SpikingJelly and Norse, in one run.

Every library runs the same network, with the same weights (copied from spikelab's model),
float32, on the same input ``x[T, B, ...]`` of 0/1 events (5% density). Before copying, one
pass over the input scales layers that feed a neuron without BatchNorm to unit output std and
sets BatchNorm running statistics, so that every neuron layer fires (rates are printed); the
largest difference of each library's eval-mode output from spikelab's is printed too (0: the
same network):

* ``cnn``: ``spikelab.models.SpikingCNN`` (N-MNIST-like 2x34x34 input, channels 16, 32);
* ``mlp``: ``spikelab.models.SpikingMLP`` 700-1024-1024-1024-20;
* ``sew``: ``spikelab.models.SEWResNet`` on 2x128x128 (4x4 sum-pool first), stages 16, 32.

Neurons: LIF with ``v = 0.5 v + x`` (tau = 2), threshold 1, reset to zero, reset detached.
snnTorch ``Leaky`` and SpikingJelly ``LIFNode(decay_input=False)`` have exactly these dynamics;
Norse's ``LIFBoxCell`` integrates ``v = 0.5 v + 0.5 x``, so it gets threshold 0.5 (the same
spikes). Surrogate: ATan, except Norse (SuperSpike, it has no ATan). Idiomatic use per library:
spikelab and SpikingJelly run multi-step layers with time folded into the batch; snnTorch loops
its ``nn.Sequential`` over time steps (``init_hidden=True``, ``utils.reset`` per sequence, so
BatchNorm sees one step at a time); Norse folds time into the batch for conv/BN/pool/linear and
loops ``LIFBoxCell`` over time.

Measured, interleaved (every repeat runs each library once, in turn), medians:

* training step: forward, cross-entropy of the time-mean readout against random labels,
  backward, Adam step; minor page faults per step (``ru_minflt``);
* inference: forward under ``torch.no_grad()`` in eval mode;
* the floor: spikelab's convolutions and linear layers alone, time folded into the batch, on
  inputs of the shapes they get in the network: forward + backward + Adam step (training) and
  forward (inference). The network cannot be faster than these layers on their own.

The CPU time other processes take during the timings is printed: torch runs each op on all
cores, so a busy core stalls every op, and libraries that run many small ops suffer most.

``--memory``: peak resident memory of one CNN training step (T=200 and 500, B=32) in a fresh
process per library: the child's ``ru_maxrss`` and its resident memory before the step (after
imports, the model, the input and a T=2 warm-up step); the difference is the step's own memory.

    python benchmarks/network_speed.py                        # cnn T=10,50,200; mlp; sew (~6 min on 2 cores)
    python benchmarks/network_speed.py --quick                # cnn T=10, 3 repeats (smoke test)
    python benchmarks/network_speed.py --nets cnn --sizes cnn:50:32 --repeats 3
    python benchmarks/network_speed.py --nets cnn --memory --json net.json
    python benchmarks/network_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

import spikelab as sl
from spikelab import layers as L
from spikelab.models import SEWBlock, SEWResNet, SpikingCNN, SpikingMLP

PEERS = ("snntorch", "spikingjelly", "norse")
FLOOR = "floor"
FLOOR_CL = "floor, channels-last"
DEFAULT_SIZES: dict[str, list[tuple[int, int]]] = {"cnn": [(10, 32), (50, 32), (200, 32)],
                                                    "mlp": [(100, 32)], "sew": [(16, 8)]}
MEMORY_SIZES = ((200, 32), (500, 32))
DENSITY = 0.05
SLOW_CALL_S = 2.0  # calls slower than this get at most 3 timed repeats

Plan = list[tuple[str, object]]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class OtherLoad:
    """CPU time (in cores) that other processes used between ``start()`` and ``cores()``: with
    torch's threads on every core, any of it stalls the parallel ops (peers run many more small ones)."""

    @staticmethod
    def _busy_s() -> float:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> "OtherLoad":
        self.wall, self.busy, self.own = time.perf_counter(), self._busy_s(), sum(os.times()[:2])
        return self

    def cores(self) -> float:
        own = sum(os.times()[:2]) - self.own
        return max(0.0, (self._busy_s() - self.busy - own) / (time.perf_counter() - self.wall))


def timed(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, dict]:
    """Interleaved timing: one warm-up call each, then round-robin repeats. Per name: median ms,
    minor page faults per timed call, and the number of timed calls (3 at most for slow calls)."""
    counts = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        sync(device)
        counts[name] = repeats if time.perf_counter() - start < SLOW_CALL_S else min(repeats, 3)
    times: dict[str, list[float]] = {name: [] for name in fns}
    faults = dict.fromkeys(fns, 0)
    for r in range(max(counts.values(), default=0)):
        for name, fn in fns.items():
            if r >= counts[name]:
                continue
            f0 = minor_faults()
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
            faults[name] += minor_faults() - f0
    return {name: {"ms": statistics.median(times[name]), "faults": faults[name] / counts[name],
                   "repeats": counts[name]} for name in fns}


# ----- the network, as spikelab builds it ---------------------------------------------------------

def spikelab_neuron() -> sl.LIF:
    return sl.LIF(tau=2.0, reset="zero", detach_reset=True)


def spikelab_net(net: str) -> tuple[L.Sequential, tuple[int, ...]]:
    """spikelab's model and the shape of one step of its input (without T, B)."""
    if net == "cnn":
        return (SpikingCNN(in_channels=2, classes=10, input_size=34, channels=(16, 32), neuron=spikelab_neuron),
                (2, 34, 34))
    if net == "mlp":
        return SpikingMLP(700, 20, hidden=(1024, 1024, 1024), neuron=spikelab_neuron), (700,)
    if net == "sew":
        return (SEWResNet(in_channels=2, classes=10, input_size=128, stages=(16, 32), blocks=1,
                          neuron=spikelab_neuron), (2, 128, 128))
    raise ValueError(f"unknown network {net!r}; expected cnn, mlp or sew")


@torch.no_grad()
def calibrate(model: L.Sequential, x: torch.Tensor) -> list[float]:
    """Make every neuron layer active on ``x``: a Linear or Conv2d feeding a neuron directly gets
    its weights scaled to unit output std (else the 5%-density MLP is silent); BatchNorm running
    statistics become those of ``x`` (else eval mode starts silent). Returns spike rates per layer."""
    rates: list[float] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: rates.append(float(out.mean())))
             for m in model.modules() if isinstance(m, sl.LIF)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one batch, that batch's statistics
    model.train()
    h = x
    for m, after in zip(model, list(model)[1:] + [None]):
        h = m(h)
        if isinstance(m, (L.Linear, L.Conv2d)) and isinstance(after, sl.LIF):
            gain = 1.0 / float(h.std())
            m.weight.mul_(gain)
            if m.bias is not None:
                m.bias.mul_(gain)
            h = h * gain
    for bn in bns:
        bn.momentum = 0.1
    for hook in hooks:
        hook.remove()
    return rates


def layer_plan(model: nn.Module) -> Plan:
    """spikelab's layers in order as (kind, module); a SEW block as ("sew", its body's plan)."""
    plan: Plan = []
    for m in model:
        if isinstance(m, SEWBlock):
            plan.append(("sew", layer_plan(m.body)))
        elif isinstance(m, (L.SumPool2d, L.AvgPool2d)):
            plan.append(("pool", m))
        elif isinstance(m, L.Conv2d):
            plan.append(("conv", m))
        elif isinstance(m, L.BatchNorm2d):
            plan.append(("bn", m))
        elif isinstance(m, L.Linear):
            plan.append(("linear", m))
        elif isinstance(m, L.Flatten):
            plan.append(("flatten", m))
        elif isinstance(m, sl.LIF):
            plan.append(("lif", m))
        else:
            raise TypeError(f"no peer counterpart for {type(m).__name__}")
    return plan


def copy_weights(dst: nn.Module, src: nn.Module) -> nn.Module:
    dst.load_state_dict(src.state_dict())
    return dst


def torch_twin(kind: str, m: nn.Module, multi_step: bool = False) -> nn.Module:
    """A torch (or, with ``multi_step``, SpikingJelly multi-step) layer equal to spikelab's ``m``."""
    if multi_step:
        from spikingjelly.activation_based import layer as nn_mod
        extra = {"step_mode": "m"}
    else:
        nn_mod, extra = nn, {}
    if kind == "conv":
        return copy_weights(nn_mod.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                          bias=m.bias is not None, **extra), m)
    if kind == "bn":
        return copy_weights(nn_mod.BatchNorm2d(m.num_features, **extra), m)
    if kind == "linear":
        return copy_weights(nn_mod.Linear(m.in_features, m.out_features, bias=m.bias is not None, **extra), m)
    if kind == "pool":
        return nn_mod.AvgPool2d(m.kernel_size, m.stride, m.padding, divisor_override=m.divisor_override, **extra)
    if kind == "flatten":
        return nn_mod.Flatten(1, **extra)
    raise ValueError(kind)


class Residual(nn.Module):
    """SEW ADD connection: ``body(x) + x``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


# ----- peers ----------------------------------------------------------------------------------------

def available(lib: str) -> bool:
    module = {"snntorch": "snntorch", "spikingjelly": "spikingjelly.activation_based", "norse": "norse.torch"}[lib]
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return False
    return True


class SnnTorchNet(nn.Module):
    """snnTorch: per-step ``nn.Sequential`` with ``Leaky(init_hidden=True)``, looped over time."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import utils

        snn.SpikingNeuron.instances.clear()  # snnTorch resets every Leaky ever built: forget old models'
        self.utils = utils
        self.net = self.build(plan, snn)

    @staticmethod
    def build(plan: Plan, snn) -> nn.Sequential:
        from snntorch import surrogate

        mods = []
        for kind, m in plan:
            if kind == "lif":
                mods.append(snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero", init_hidden=True,
                                      spike_grad=surrogate.atan()))
            elif kind == "sew":
                mods.append(Residual(SnnTorchNet.build(m, snn)))
            else:
                mods.append(torch_twin(kind, m))
        return nn.Sequential(*mods)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        self.utils.reset(self.net)
        return torch.stack([self.net(x) for x in x_seq.unbind(0)])


class SpikingJellyNet(nn.Module):
    """SpikingJelly: multi-step layers and ``LIFNode(step_mode='m')``, ``reset_net`` per sequence."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional

        self.functional = functional
        self.net = self.build(plan)

    @staticmethod
    def build(plan: Plan) -> nn.Sequential:
        from spikingjelly.activation_based import neuron, surrogate

        mods = []
        for kind, m in plan:
            if kind == "lif":
                mods.append(neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                                           detach_reset=True, surrogate_function=surrogate.ATan(), step_mode="m"))
            elif kind == "sew":
                mods.append(Residual(SpikingJellyNet.build(m)))
            else:
                mods.append(torch_twin(kind, m, multi_step=True))
        return nn.Sequential(*mods)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        self.functional.reset_net(self.net)
        return self.net(x_seq)


class Folded(nn.Module):
    """A torch layer on ``[T, B, ...]`` with time folded into the batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.module(x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])


class NorseLIF(nn.Module):
    """Norse ``LIFBoxCell`` looped over time: ``v = 0.5 v + 0.5 x``, threshold 0.5, reset to 0."""

    def __init__(self, device: str) -> None:
        super().__init__()
        import norse.torch as norse

        def t(v: float) -> torch.Tensor:
            return torch.tensor(v, device=device)

        p = norse.LIFBoxParameters(tau_mem_inv=t(500.0), v_leak=t(0.0), v_th=t(0.5), v_reset=t(0.0),
                                   method="super", alpha=t(100.0))
        self.cell = norse.LIFBoxCell(p=p, dt=1e-3)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        state = None
        out = []
        for x in x_seq.unbind(0):
            z, state = self.cell(x, state)
            out.append(z)
        return torch.stack(out)


class NorseNet(nn.Module):
    """Norse: folded torch layers and a time loop of ``LIFBoxCell`` per neuron layer."""

    def __init__(self, plan: Plan, device: str) -> None:
        super().__init__()
        self.net = self.build(plan, device)

    @staticmethod
    def build(plan: Plan, device: str) -> nn.Sequential:
        mods: list[nn.Module] = []
        for kind, m in plan:
            if kind == "lif":
                mods.append(NorseLIF(device))
            elif kind == "sew":
                mods.append(Residual(NorseNet.build(m, device)))
            else:
                mods.append(Folded(torch_twin(kind, m)))
        return nn.Sequential(*mods)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.net(x_seq)


def build(lib: str, model: nn.Module, device: str) -> nn.Module:
    """``lib``'s version of spikelab's ``model`` (same layers, same weights), on ``device``."""
    if lib == "spikelab":
        return model.to(device)
    plan = layer_plan(model)
    if lib == "snntorch":
        return SnnTorchNet(plan).to(device)
    if lib == "spikingjelly":
        return SpikingJellyNet(plan).to(device)
    if lib == "norse":
        return NorseNet(plan, device).to(device)
    raise ValueError(f"unknown library {lib!r}")


# ----- what is timed --------------------------------------------------------------------------------

def train_and_infer(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[Callable, Callable]:
    """A training step (Adam, created once) and an inference call of ``model``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).mean(0), labels)
        loss.backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    return train, infer


@torch.no_grad()
def same_function(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    """Largest |output - spikelab's output| of each library in eval mode (0 when all compute the
    same network; training mode differs for snnTorch, whose BatchNorm sees one step at a time)."""
    outputs = {}
    for lib, model in models.items():
        model.eval()
        outputs[lib] = model(x)
    return {lib: float((out - outputs["spikelab"]).abs().max()) for lib, out in outputs.items() if lib != "spikelab"}


def weight_layer_inputs(plan: Plan, shape: torch.Size) -> list[tuple[nn.Module, torch.Size]]:
    """Each conv/linear layer of ``plan`` (in order) with the shape of its input, given the
    network's input ``shape`` (time folded into the batch); worked out on the meta device."""
    found: list[tuple[nn.Module, torch.Size]] = []

    def walk(steps: Plan, h: torch.Tensor) -> torch.Tensor:
        for kind, m in steps:
            if kind == "sew":
                h = walk(m, h)
            elif kind not in ("lif", "bn"):  # both keep the shape
                if kind in ("conv", "linear"):
                    found.append((m, h.shape))
                h = torch_twin(kind, m).to("meta")(h)
        return h

    walk(plan, torch.empty(shape, device="meta"))
    return found


def floor_calls(model: nn.Module, x: torch.Tensor, device: str, channels_last: bool = False) -> tuple[Callable, Callable]:
    """Training and inference calls of ``model``'s conv and linear layers alone, time folded into
    the batch, each on an input of the shape it gets in the network (``channels_last``: the
    convolutions, their inputs and their gradients in channels-last memory, as spikelab's CNNs
    run them on CPU)."""
    found = weight_layer_inputs(layer_plan(model), x.flatten(0, 1).shape)
    layers = [torch_twin("conv" if isinstance(m, nn.Conv2d) else "linear", m).to(device) for m, _ in found]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    layers = [layer.to(memory_format=fmt) if isinstance(layer, nn.Conv2d) else layer for layer in layers]
    shapes = [s for _, s in found]
    inputs = [(torch.rand(s, device=device) < 0.1).float() for s in shapes]
    # the network's own input arrives in NCHW (spikelab's first convolution gets it so too)
    inputs = [(t.contiguous(memory_format=fmt) if t.dim() == 4 and i > 0 else t).requires_grad_(i > 0)
              for i, t in enumerate(inputs)]
    with torch.no_grad():
        grads = [torch.randn_like(layer(inp)) for layer, inp in zip(layers, inputs)]
    opt = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=1e-3)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        for inp in inputs[1:]:
            inp.grad = None
        torch.autograd.backward([layer(inp) for layer, inp in zip(layers, inputs)], grads)
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            for layer, inp in zip(layers, inputs):
                layer(inp)

    return train, infer


def make_input(shape: tuple[int, ...], T: int, B: int, classes: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.rand(T, B, *shape, device=device) < DENSITY).float()
    return x, torch.randint(0, classes, (B,), device=device)


def bench(net: str, T: int, B: int, libs: list[str], repeats: int, device: str) -> dict:
    """Train and inference times of every library and of the floor, for one network size."""
    torch.manual_seed(0)
    model, shape = spikelab_net(net)
    classes = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
    x, labels = make_input(shape, T, B, classes, device)
    rates = calibrate(model.to(device), x)
    models = {lib: build(lib, model, device) for lib in reversed(libs)}  # peers copy the untrained weights
    differences = same_function(models, x)
    calls = {lib: train_and_infer(models[lib], x, labels) for lib in libs}
    calls[FLOOR] = floor_calls(models["spikelab"], x, device)
    if device == "cpu" and any(getattr(m, "channels_last", False) for m in models["spikelab"].modules()):
        calls[FLOOR_CL] = floor_calls(models["spikelab"], x, device, channels_last=True)
    load = OtherLoad().start()
    train = timed({name: c[0] for name, c in calls.items()}, repeats, device)
    infer = timed({name: c[1] for name, c in calls.items()}, repeats, device)
    other_cores = load.cores()
    results = {name: {"train_ms": train[name]["ms"], "infer_ms": infer[name]["ms"],
                      "train_faults_per_step": train[name]["faults"], "infer_faults_per_call": infer[name]["faults"],
                      "train_repeats": train[name]["repeats"], "infer_repeats": infer[name]["repeats"]}
               for name in calls}
    return {"spike_rates": rates, "max_abs_diff": differences, "other_processes_cores": other_cores,
            "libraries": results}


def report(net: str, T: int, B: int, measured: dict) -> dict:
    """Print one size's table; return the ratios."""
    results = measured["libraries"]
    ours = results["spikelab"]
    libs = [name for name in results if name not in (FLOOR, FLOOR_CL)]
    print(f"\n{net}  T={T} B={B}  (spike rate per neuron layer, first batch: "
          + " ".join(f"{r:.2f}" for r in measured["spike_rates"]) + ")")
    print(f"{'library':14s} {'train ms':>10s} {'infer ms':>10s} {'train ratio':>12s} {'infer ratio':>12s} "
          f"{'faults/step':>12s}")
    for name in libs:
        r = results[name]
        r["train_ratio"] = r["train_ms"] / ours["train_ms"]
        r["infer_ratio"] = r["infer_ms"] / ours["infer_ms"]
        print(f"{name:14s} {r['train_ms']:10.1f} {r['infer_ms']:10.1f} {r['train_ratio']:12.2f} "
              f"{r['infer_ratio']:12.2f} {r['train_faults_per_step']:12.0f}")
    extra: dict = {}
    peers = [name for name in libs if name != "spikelab"]
    if peers:
        for mode in ("train", "infer"):
            best = min(peers, key=lambda name: results[name][f"{mode}_ms"])
            extra[f"fastest_peer_{mode}"] = {"library": best, "ratio": results[best][f"{mode}_ratio"]}
        print("fastest peer / spikelab: " + ", ".join(
            f"{mode} {extra[f'fastest_peer_{mode}']['ratio']:.2f} ({extra[f'fastest_peer_{mode}']['library']})"
            for mode in ("train", "infer")))
    if measured["max_abs_diff"]:
        print("max |output - spikelab's| (eval mode, before training): " + ", ".join(
            f"{lib} {d:.2g}" for lib, d in measured["max_abs_diff"].items()))
    floor = results[FLOOR]
    extra["spikelab_over_floor"] = {mode: ours[f"{mode}_ms"] / floor[f"{mode}_ms"] for mode in ("train", "infer")}
    print(f"floor (conv/linear only, time folded): train {floor['train_ms']:.1f} ms, infer {floor['infer_ms']:.1f} ms, "
          f"faults/step {floor['train_faults_per_step']:.0f}")
    print(f"spikelab / floor: train {extra['spikelab_over_floor']['train']:.2f}, "
          f"infer {extra['spikelab_over_floor']['infer']:.2f}")
    if FLOOR_CL in results:  # the floor of the layout spikelab's convolutions run in
        cl = results[FLOOR_CL]
        extra["spikelab_over_floor_channels_last"] = {mode: ours[f"{mode}_ms"] / cl[f"{mode}_ms"]
                                                      for mode in ("train", "infer")}
        print(f"floor, channels-last: train {cl['train_ms']:.1f} ms, infer {cl['infer_ms']:.1f} ms; spikelab / it: "
              f"train {extra['spikelab_over_floor_channels_last']['train']:.2f}, "
              f"infer {extra['spikelab_over_floor_channels_last']['infer']:.2f}")
    other = measured["other_processes_cores"]
    print(f"other processes used {other:.2f} cores during these timings"
          + ("  ** busy machine: timings (peers' most) unreliable **" if other > 0.2 else ""))
    return extra


# ----- peak memory, one fresh process per library ------------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(lib: str, T: int, B: int, device: str) -> None:
    """Run in a fresh process: one CNN training step of ``lib``; print its memory as JSON."""
    torch.manual_seed(0)
    model, shape = spikelab_net("cnn")
    warm_x, warm_labels = make_input(shape, 2, B, 10, device)
    calibrate(model.to(device), warm_x)
    model = build(lib, model, device)
    train, _ = train_and_infer(model, warm_x, warm_labels)
    train()  # warm-up at T=2: lazy initialisation, JIT compilation
    train, _ = train_and_infer(model, *make_input(shape, T, B, 10, device))
    gc.collect()
    sync(device)
    if device == "cuda":
        base = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        train()
        sync(device)
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        base = rss_mb()
        train()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_MB": base, "peak_MB": peak, "step_MB": peak - base}))


def available_memory_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(libs: list[str], device: str, tune_allocator: bool) -> dict:
    """Peak memory of one CNN training step per library and size, each in a fresh process."""
    free = available_memory_bytes()
    limit = int(0.8 * free) if free and device == "cpu" else 0
    results: dict = {}
    kind = "allocator peak (CUDA)" if device == "cuda" else "max RSS"
    print(f"\npeak memory of one cnn training step, fresh process per library ({kind}, MB; "
          f"base = after imports, model, input and a T=2 step"
          + (f"; each child limited to {limit / 2**30:.1f} GB of data" if limit else "") + ")")
    print(f"{'size':12s} {'library':14s} {'base MB':>10s} {'peak MB':>10s} {'step MB':>10s} {'ratio':>7s}")
    for T, B in MEMORY_SIZES:
        key = f"cnn:{T}:{B}"
        results[key] = {}
        for lib in libs:
            cmd = ([sys.executable, os.path.abspath(__file__), "--_child", lib, str(T), str(B), "--device", device,
                   "--_limit", str(limit), "--threads", str(torch.get_num_threads())]
                   + (["--tune-allocator"] if tune_allocator else []))
            proc = subprocess.run(cmd, capture_output=True, text=True)
            try:
                r = json.loads(proc.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                if "alloc" in why.lower() or proc.returncode in (-9, 137):
                    why = f"out of memory ({why})"
                results[key][lib] = {"error": why}
                print(f"{key:12s} {lib:14s} skipped: {why[:100]}")
                continue
            results[key][lib] = r
            ours = results[key].get("spikelab", {}).get("step_MB")
            ratio = f"{r['step_MB'] / ours:7.2f}" if ours else f"{'-':>7s}"
            print(f"{key:12s} {lib:14s} {r['base_MB']:10.0f} {r['peak_MB']:10.0f} {r['step_MB']:10.0f} {ratio}")
    return results


# ----- command line ---------------------------------------------------------------------------------

def parse_sizes(entries: list[str]) -> dict[str, list[tuple[int, int]]]:
    sizes: dict[str, list[tuple[int, int]]] = {}
    for entry in entries:
        try:
            net, T, B = entry.split(":")
            sizes.setdefault(net, []).append((int(T), int(B)))
        except ValueError:
            raise SystemExit(f"--sizes: expected NET:T:B (e.g. cnn:50:32), got {entry!r}") from None
    return sizes


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default=None, help="comma-separated: cnn,mlp,sew (default: all, or those in --sizes)")
    parser.add_argument("--sizes", nargs="+", default=[], help="NET:T:B entries; replace that network's default sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (3 at most for calls over 2 s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--skip", default="", help="comma-separated peers to leave out")
    parser.add_argument("--quick", action="store_true", help="cnn T=10 B=32 only, 3 repeats")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (slow)")
    parser.add_argument("--tune-allocator", action="store_true",
                        help="call spikelab.tune_cpu_allocator() first (applies to every library in the process)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--_child", nargs=3, metavar=("LIB", "T", "B"), help=argparse.SUPPRESS)
    parser.add_argument("--_limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    tuned = sl.tune_cpu_allocator() if args.tune_allocator else False
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        if args._limit:
            resource.setrlimit(resource.RLIMIT_DATA, (args._limit, args._limit))
        lib, T, B = args._child
        child(lib, int(T), int(B), args.device)
        return 0

    sizes = dict(DEFAULT_SIZES)
    given = parse_sizes(args.sizes)
    sizes.update(given)
    nets = args.nets.split(",") if args.nets else (list(given) if given else list(DEFAULT_SIZES))
    repeats = args.repeats
    if args.quick:
        nets, sizes, repeats = ["cnn"], {"cnn": [(10, 32)]}, 3
    for net in list(nets) + list(given):
        if net not in DEFAULT_SIZES:
            raise SystemExit(f"--nets: unknown network {net!r}; expected cnn, mlp or sew")

    skip = set(filter(None, args.skip.split(",")))
    libs = ["spikelab"]
    versions = {"torch": torch.__version__, "spikelab": sl.__version__}
    for lib in PEERS:
        if lib in skip:
            continue
        if available(lib):
            libs.append(lib)
            versions[lib] = importlib.metadata.version(lib)
        else:
            print(f"# {lib}: not importable, skipped")
    print(f"device: {args.device}, threads {torch.get_num_threads()}, allocator tuned: {tuned}, "
          f"load average {os.getloadavg()[0]:.2f} (other processes skew the timings)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("ratio = library time / spikelab time (> 1: spikelab faster); faults = minor page faults")

    out: dict = {"device": args.device, "threads": torch.get_num_threads(), "allocator_tuned": tuned,
                 "load_average_at_start": os.getloadavg()[0],
                 "versions": versions, "repeats": repeats, "results": {}}
    start = time.perf_counter()
    for net in nets:
        for T, B in sizes[net]:
            measured = bench(net, T, B, libs, repeats, args.device)
            extra = report(net, T, B, measured)
            out["results"][f"{net}:{T}:{B}"] = {**measured, **extra}
            gc.collect()
    print(f"\n(timing took {time.perf_counter() - start:.0f} s; load average now {os.getloadavg()[0]:.2f})")
    if args.memory:
        out["memory"] = peak_memory(libs, args.device, args.tune_allocator)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
