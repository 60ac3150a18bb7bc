"""Where one training step and one inference call of a whole network spend their time, on the
host and on the device: torch.profiler's table of operators by self host time (with the count of
device kernels they launch) and cProfile's table of Python functions by own time.

    python benchmarks/profile_step.py --device cuda --net cnn --T 50 --B 32

Meant for the question the network benchmark cannot answer: when a step takes longer than its
convolutions and neurons, is the host (Python, dispatch, kernel launches) or the device busy?
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import network_speed as ns  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--net", default="cnn", choices=["cnn", "mlp", "sew"])
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--B", type=int, default=32)
    parser.add_argument("--rows", type=int, default=25, help="rows of each table")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, shape = ns.spikelab_net(args.net)
    classes = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features
    x, labels = ns.make_input(shape, args.T, args.B, classes, args.device)
    ns.calibrate(model.to(args.device), x)
    train, infer = ns.train_and_infer(model, x, labels)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    for name, fn in (("train step", train), ("inference", infer)):
        for _ in range(5):
            fn()
        ns.sync(args.device)
        start = time.perf_counter()
        for _ in range(10):
            fn()
        host = time.perf_counter()
        ns.sync(args.device)
        end = time.perf_counter()
        print(f"\n== {args.net} T={args.T} B={args.B} {name}: {(end - start) * 100:.2f} ms per call, "
              f"host returns after {(host - start) * 100:.2f} ms (the rest waits for the device)")
        with profile(activities=activities) as prof:
            for _ in range(3):
                fn()
            ns.sync(args.device)
        key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))
        if args.device == "cuda":
            print(prof.key_averages().table(sort_by=key, row_limit=args.rows // 2, max_name_column_width=60))
        py = cProfile.Profile()
        py.enable()
        for _ in range(3):
            fn()
        ns.sync(args.device)
        py.disable()
        text = io.StringIO()
        pstats.Stats(py, stream=text).sort_stats("tottime").print_stats(args.rows)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
