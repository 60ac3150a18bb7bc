"""Generated kernels (neuron specs) against the hand-written ones, and the EIF example against LIF.

Each built-in family with a hand-written kernel is written again as a spec (same equations) and
both run on the same input in one process, interleaved: training (forward + backward of
``(spikes * w).sum()``, only the input requiring gradients, as in a network with fixed decays)
and inference (forward under ``no_grad``). Also the issue's EIF example, whose only kernels are
generated, against the built-in LIF. Prints medians (ms) and ratios (generated / hand-written).

    python benchmarks/spec_speed.py                       # T=100, B=16, N=4096
    python benchmarks/spec_speed.py --size 500,16,16384 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import spikelab as sl
from spikelab.neurons import Neuron


class LIFSpec(Neuron):
    """The built-in LIF's equations as a spec."""
    parameters = dict(beta=0.5, input_scale=1.0)

    def charge(self, v, x, beta, input_scale):
        return beta * v + input_scale * x


class CurrentLIFSpec(Neuron):
    """The built-in CurrentLIF's equations as a spec."""
    parameters = dict(alpha=0.6, beta=0.8)
    states = ("v", "i")

    def charge(self, v, i, x, alpha, beta):
        i_new = alpha * i + x
        return {"i": i_new, "v": beta * v + i_new}


class AdaptiveLIFSpec(Neuron):
    """The built-in AdaptiveLIF's equations as a spec."""
    parameters = dict(beta=0.8, rho=0.9, adaptation=1.8)
    states = ("v", "a")

    def charge(self, v, x, beta):
        return beta * v + x

    def effective_threshold(self, threshold, a, adaptation):
        return threshold + adaptation * a

    def after_spike(self, spike, a, rho):
        return {"a": rho * a + (1.0 - rho) * spike}


PAIRS = {
    "LIF": (lambda: sl.LIF(beta=0.5), lambda: LIFSpec()),
    "CurrentLIF": (lambda: sl.CurrentLIF(alpha=0.6, beta=0.8), lambda: CurrentLIFSpec()),
    "AdaptiveLIF": (lambda: sl.AdaptiveLIF(beta=0.8, rho=0.9, adaptation=1.8), lambda: AdaptiveLIFSpec()),
    "EIF vs LIF": (lambda: sl.LIF(beta=0.5), lambda: sl.EIF()),
}


def measure(layers: dict, x: torch.Tensor, w: torch.Tensor, repeats: int) -> dict:
    """Interleaved medians (ms) of training and inference steps for each layer."""
    times = {name: {"train": [], "infer": []} for name in layers}

    def train(layer):
        x.grad = None
        (layer(x) * w).sum().backward()

    def infer(layer):
        with torch.no_grad():
            layer(x)

    for layer in layers.values():  # warm-up: compile and fill the buffer cache
        train(layer), infer(layer)
    for _ in range(repeats):
        for name, layer in layers.items():
            for kind, fn in (("train", train), ("infer", infer)):
                start = time.perf_counter()
                fn(layer)
                times[name][kind].append((time.perf_counter() - start) * 1e3)
    return {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="100,16,4096", help="T,B,N")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    T, B, N = (int(v) for v in args.size.split(","))
    torch.manual_seed(0)
    x = (torch.randn(T, B, N) * 0.8 + 0.5).requires_grad_(True)
    w = torch.randn(T, B, N)
    print(f"T={T} B={B} N={N}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'family':14s} {'hand train':>11s} {'spec train':>11s} {'ratio':>6s} {'hand infer':>11s} "
          f"{'spec infer':>11s} {'ratio':>6s}")
    for family, (hand, spec) in PAIRS.items():
        r = measure({"hand": hand(), "spec": spec()}, x, w, args.repeats)
        print(f"{family:14s} {r['hand']['train']:11.1f} {r['spec']['train']:11.1f} "
              f"{r['spec']['train'] / r['hand']['train']:6.2f} {r['hand']['infer']:11.1f} "
              f"{r['spec']['infer']:11.1f} {r['spec']['infer'] / r['hand']['infer']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
