"""Dynamic Confidence on a converted SNN of the built-in data, static against dynamic, one run.

A ReLU CNN is trained on DigitsDVS count images (train split minus a held-out part),
converted (robust, 99.9th percentile), and its stopping threshold calibrated on the held-out
part (never the test split) for at most ``--max-drop`` points below the static accuracy at
``t_max``. Printed: static and dynamic test accuracy, mean steps and step reduction, the
oracle, and the wall-clock of static inference against live dynamic inference at batch 256.

    python benchmarks/dynamic_confidence.py [--t-max 64] [--max-drop 0.3]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from spikelab.convert import convert
from spikelab.data.datasets.digits import digits_dvs_images
from spikelab.demo import count_image_cnn, fit_classifier
from spikelab.dynamic import DynamicConfidence, calibrate, oracle


def timed(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t-max", type=int, default=64)
    parser.add_argument("--max-drop", type=float, default=0.3, help="accuracy points below static at t_max")
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    xtr, ytr = digits_dvs_images("train")
    xte, yte = digits_dvs_images("test")
    order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(1234))  # files are sorted by class
    fit_idx, cal_idx = order[: -args.held_out], order[-args.held_out:]
    xfit, yfit, xcal, ycal = xtr[fit_idx], ytr[fit_idx], xtr[cal_idx], ytr[cal_idx]
    torch.manual_seed(args.seed)
    ann = fit_classifier(count_image_cnn(), xfit, yfit, epochs=10)
    snn = convert(ann, xfit[:512])
    controller = DynamicConfidence("maxprob", temperature=1.0, t_max=args.t_max)
    cal = calibrate(controller, snn, xcal, ycal, max_accuracy_drop=args.max_drop / 100, static=True)
    trace = controller.trace(snn, xte, static=True)
    static_acc = (trace.prediction[-1] == yte).float().mean().item()
    dyn = controller.decide(trace)
    dyn_acc = (dyn.predictions == yte).float().mean().item()
    orc = oracle(trace, yte)
    print(f"{controller} calibrated on {len(xcal)} held-out samples "
          f"(held-out: static {cal.static_accuracy:.4f}, dynamic {cal.accuracy:.4f} at {cal.mean_steps:.1f} steps)")
    print(f"test ({len(xte)} samples): static at T={args.t_max}: {static_acc:.4f}; dynamic: {dyn_acc:.4f} "
          f"({100 * (dyn_acc - static_acc):+.2f} points) at {dyn.mean_steps:.1f} mean steps "
          f"({100 * (1 - dyn.mean_steps / args.t_max):.1f}% fewer)")
    print(f"oracle: stays correct from {orc['stable_mean_steps']:.1f} steps on average "
          f"(accuracy {orc['stable_accuracy']:.4f}); first correct at {orc['first_correct_mean_steps']:.1f}")

    batch = torch.cat([xte, xte])[:256]
    live = controller.run(snn, batch, mode="live", static=True)
    static_s = timed(lambda: snn.run(batch, args.t_max))
    live_s = timed(lambda: controller.run(snn, batch, mode="live", static=True))
    reduction = 1 - live.mean_steps / args.t_max
    speedup = static_s / live_s
    print(f"live mode, batch 256: static {static_s * 1e3:.0f} ms, dynamic {live_s * 1e3:.0f} ms -> {speedup:.2f}x "
          f"wall-clock for {100 * reduction:.1f}% fewer steps (ideal {1 / (1 - reduction):.2f}x; "
          f"target: 1 + 0.7 x the step reduction = {1 + 0.7 * reduction:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
