"""LIF layer speed: spikelab against snnTorch, SpikingJelly and Norse, measured in one run.

For each size, every library runs the same layer (beta = 0.5, threshold 1, soft reset, ATan
surrogate where configurable) on the same input ``x[T, B, N]``:

* training: forward + backward of ``loss = spikes.sum()``;
* inference: forward under ``torch.no_grad()``.

Prints medians (ms), ratios (peer time / spikelab time), the bytes each library saves for
backward (counted with ``torch.autograd.graph.saved_tensors_hooks``), the peak memory one
training step adds (CUDA: allocator peak; CPU: resident-set peak in a fresh process), this machine's memory
copy bandwidth, and how far spikelab's training step is from the memory-traffic floor:
forward reads x and writes spikes, backward reads x (its replay recovers the membrane) and
dL/dspikes and writes dL/dx, so at least 5 floats move per neuron-step.

    python benchmarks/neuron_speed.py                 # T=100,B=16,N=4096 and T=500,B=16,N=16384
    python benchmarks/neuron_speed.py --sizes 100,16,4096 --repeats 7
    python benchmarks/neuron_speed.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable, Optional

import torch

import spikelab as sl


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time (ms) of ``fn`` after one warm-up call (3 runs for calls over a second)."""
    start = time.perf_counter()
    fn()
    sync(device)
    if time.perf_counter() - start > 1.0:
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def saved_bytes(run: Callable[[], torch.Tensor]) -> int:
    """Bytes of tensors autograd saves for the backward of one forward (unique storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    del out
    return sum(seen.values())


def copy_bandwidth(device: str, nbytes: int = 1 << 28) -> float:
    """Memory copy bandwidth in GB/s (bytes read + bytes written per second)."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), 7, device)
    return 2 * nbytes / (ms * 1e-3) / 1e9


# ----- the contenders: each returns a function x -> spikes [T, B, N] -----------------------------

def spikelab_layer(backend: str) -> Callable:
    neuron = sl.LIF(beta=0.5, threshold=1.0, reset="subtract", surrogate="atan", backend=backend)
    return neuron


def snntorch_layer(device: str) -> Optional[Callable]:
    try:
        import snntorch as snn
    except ImportError:
        return None
    leaky = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="subtract").to(device)

    def run(x):
        mem = leaky.reset_mem()
        out = []
        for t in range(x.shape[0]):
            spk, mem = leaky(x[t], mem)
            out.append(spk)
        return torch.stack(out)

    return run


def spikingjelly_layer(device: str) -> Optional[Callable]:
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None
    node = neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=None,
                          surrogate_function=surrogate.ATan(), step_mode="m").to(device)

    def run(x):
        functional.reset_net(node)
        return node(x)

    return run


def norse_layer(device: str) -> Optional[Callable]:
    try:
        import norse.torch as norse
    except Exception:  # noqa: BLE001
        return None
    # Norse integrates v += dt * tau_mem_inv * (v_leak - v + i): dt * tau_mem_inv = 0.5 gives beta = 0.5
    def t(v: float) -> torch.Tensor:
        return torch.tensor(v, device=device)

    params = norse.LIFParameters(tau_mem_inv=t(500.0), tau_syn_inv=t(1000.0), v_th=t(1.0), v_reset=t(0.0),
                                 method="super", alpha=100.0)
    layer = norse.LIF(p=params, dt=1e-3)

    def run(x):
        return layer(x)[0]

    return run


def peak_train_memory_cpu(name: str, T: int, B: int, N: int) -> float:
    """Peak resident memory (MB) above the resting footprint (input included) during one
    training step of ``name``, in a fresh process."""
    import subprocess

    code = (
        "import os, resource, sys, torch; sys.path.insert(0, %r); import neuron_speed as b\n"
        "layer = b.contenders('cpu', True)[%r]\n"
        "warm = torch.rand(2, %d, %d, requires_grad=True); layer(warm).sum().backward(); del warm\n"
        "x = torch.empty(%d, %d, %d).uniform_(0, 1.2).requires_grad_(True)\n"
        "rss = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 1e6\n"
        "layer(x).sum().backward()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3 - rss)\n"
    ) % (str(__import__("pathlib").Path(__file__).resolve().parent), name, B, N, T, B, N)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def contenders(device: str, with_reference: bool) -> dict[str, Callable]:
    found = {"spikelab": spikelab_layer("auto").to(device)}
    if with_reference:
        found["spikelab-torch-reference"] = spikelab_layer("torch").to(device)
    for name, make in (("snntorch", snntorch_layer), ("spikingjelly", spikingjelly_layer), ("norse", norse_layer)):
        layer = make(device)
        if layer is not None:
            found[name] = layer
        else:
            print(f"# {name}: not installed, skipped", file=sys.stderr)
    return found


def bench_size(T: int, B: int, N: int, repeats: int, device: str, skip: set[str], memory: bool = True) -> dict:
    torch.manual_seed(0)
    x = (torch.rand(T, B, N, device=device) * 1.2).requires_grad_(True)
    results = {}
    for name, layer in contenders(device, with_reference=T * B * N <= 10_000_000).items():
        if name in skip:
            continue

        def train():
            x.grad = None
            layer(x).sum().backward()

        def infer():
            with torch.no_grad():
                layer(x)

        results[name] = {
            "train_ms": timed(train, repeats, device),
            "infer_ms": timed(infer, repeats, device),
            "saved_MB": saved_bytes(lambda: layer(x)) / 1e6,
        }
        if device == "cuda":
            x.grad = None
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            train()
            results[name]["peak_MB"] = (torch.cuda.max_memory_allocated() - base) / 1e6
        elif memory:
            results[name]["peak_MB"] = peak_train_memory_cpu(name, T, B, N)
        else:
            results[name]["peak_MB"] = float("nan")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["100,16,4096", "500,16,16384"], help="T,B,N triples")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--allocator", choices=("default", "tuned"), default="default",
                        help="'tuned' calls spikelab.tune_cpu_allocator() first (applies to every "
                             "library in this process alike)")
    args = parser.parse_args(argv)
    if args.allocator == "tuned":
        print(f"allocator: tuned (applied: {sl.tune_cpu_allocator()})")

    bandwidth = copy_bandwidth(args.device)
    print(f"device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"memory copy bandwidth: {bandwidth:.1f} GB/s (read + write)")
    report = {"device": args.device, "bandwidth_GBps": bandwidth, "sizes": {}}
    for size in args.sizes:
        T, B, N = (int(v) for v in size.split(","))
        results = bench_size(T, B, N, args.repeats, args.device, set(args.skip))
        ours = results["spikelab"]
        floor_ms = 5 * 4 * T * B * N / (bandwidth * 1e9) * 1e3
        print(f"\nT={T} B={B} N={N}  (traffic floor for train: {floor_ms:.1f} ms)")
        print(f"{'library':26s} {'train ms':>10s} {'ratio':>7s} {'infer ms':>10s} {'ratio':>7s} {'saved MB':>9s} "
              f"{'peak MB':>9s}")
        for name, r in results.items():
            print(f"{name:26s} {r['train_ms']:10.1f} {r['train_ms'] / ours['train_ms']:7.2f} "
                  f"{r['infer_ms']:10.1f} {r['infer_ms'] / ours['infer_ms']:7.2f} {r['saved_MB']:9.1f} "
                  f"{r['peak_MB']:9.1f}")
        print(f"spikelab train step is {ours['train_ms'] / floor_ms:.2f}x the memory-traffic floor")
        report["sizes"][size] = {"results": results, "floor_ms": floor_ms}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
