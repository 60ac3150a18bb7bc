"""Generated kernels against the hand-written ones they replaced, and EIF against LIF, in one run.

The hand-written Numba kernels are loaded from a git revision that still has them (default:
the last one before the generator, ``b683168``) as a separate package, so both run in the same
process on the same input, interleaved. For each built-in family: training (forward + backward
of ``(spikes * w).sum()``, only the input requiring gradients: fixed decays, as in most
networks) and inference (forward under ``no_grad``). Then the issue's EIF example (only
generated kernels exist for it) against the built-in LIF. Prints medians (ms) and ratios.

    python benchmarks/spec_speed.py                       # T=100, B=16, N=4096
    python benchmarks/spec_speed.py --size 500,16,16384 --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import spikelab as sl
from spikelab.kernels import ops
from spikelab.surrogate import ATan

ROOT = Path(__file__).resolve().parents[1]
BASELINE_PACKAGE = "spikelab_baseline_kernels"


def load_baseline(rev: str):
    """``kernels/ops.py`` of revision ``rev`` (hand-written kernels), importable beside today's."""
    target = Path(tempfile.mkdtemp()) / BASELINE_PACKAGE
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "kernels"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target.parent)], input=archive.stdout, check=True)
    (target.parent / "kernels").rename(target)
    for path in target.rglob("*.py"):
        path.write_text(path.read_text().replace("spikelab.kernels", BASELINE_PACKAGE))
    sys.path.insert(0, str(target.parent))
    return importlib.import_module(f"{BASELINE_PACKAGE}.ops")


def cases(T: int, B: int, N: int):
    """Per family: the reference-signature arguments (input first) and options."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, N, generator=g) * 0.8 + 0.5
    zeros = torch.zeros(B, N)
    one = torch.tensor(1.0)
    sg = dict(surrogate=ATan())
    return {
        "LIF": (ops.lif_sequence, (x, zeros, torch.tensor(0.5), one, one), sg),
        "CurrentLIF": (ops.cuba_sequence, (x, zeros, zeros, torch.tensor(0.6), torch.tensor(0.8), one), sg),
        "AdaptiveLIF": (ops.alif_sequence, (x, zeros, zeros, torch.tensor(0.8), one, one, torch.tensor(0.9),
                                           torch.tensor(1.8)), sg),
        "ProbabilisticLIF": (ops.probabilistic_sequence, (x, zeros, torch.tensor(0.7), one, one, torch.tensor(0.3),
                                                          torch.tensor([1234, 0])), {}),
    }


def measure(fns: dict, x: torch.Tensor, w: torch.Tensor, repeats: int) -> dict:
    """Interleaved medians (ms) of training and inference for each ``fn(x) -> spikes``."""
    times = {name: {"train": [], "infer": []} for name in fns}

    def train(fn):
        leaf = x.detach().requires_grad_(True)
        (fn(leaf) * w).sum().backward()

    def infer(fn):
        with torch.no_grad():
            fn(x)

    for kind, step in (("train", train), ("infer", infer)):  # each kind in its own interleaved phase
        for fn in fns.values():  # warm-up: compile, fill the buffer cache
            step(fn)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                step(fn)
                times[name][kind].append((time.perf_counter() - start) * 1e3)
    return {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}


def row(label: str, base: dict, new: dict) -> str:
    return (f"{label:18s} {base['train']:9.1f} {new['train']:9.1f} {new['train'] / base['train']:6.2f} "
            f"{base['infer']:9.1f} {new['infer']:9.1f} {new['infer'] / base['infer']:6.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="100,16,4096", help="T,B,N")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--baseline", default="b683168", help="a revision with the hand-written kernels")
    args = parser.parse_args(argv)
    T, B, N = (int(v) for v in args.size.split(","))
    baseline = load_baseline(args.baseline)
    w = torch.randn(T, B, N, generator=torch.Generator().manual_seed(1))
    print(f"T={T} B={B} N={N}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"baseline {args.baseline}")
    print(f"{'family':18s} {'hand tr':>9s} {'gen tr':>9s} {'ratio':>6s} {'hand inf':>9s} {'gen inf':>9s} {'ratio':>6s}")
    for family, (new_fn, inputs, options) in cases(T, B, N).items():
        old_fn = getattr(baseline, new_fn.__name__)
        x, rest = inputs[0], inputs[1:]
        fns = {"hand": lambda xx, f=old_fn: f(xx, *rest, **options, backend="numba")[0],
               "gen": lambda xx, f=new_fn: f(xx, *rest, **options, backend="numba")[0]}
        r = measure(fns, x, w, args.repeats)
        print(row(family, r["hand"], r["gen"]))
    x = cases(T, B, N)["LIF"][1][0]
    r = measure({"lif": sl.LIF(beta=0.5), "eif": sl.EIF()}, x * 2 + 1, w, args.repeats)
    print(row("EIF vs LIF", r["lif"], r["eif"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
