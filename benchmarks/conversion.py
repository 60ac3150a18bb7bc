"""ANN -> SNN conversion accuracy: spikelab against SpikingJelly's converter, same checkpoint,
same calibration batches, same simulation lengths, on the built-in DigitsDVS data (each
recording as an event-count image).

Two ANNs are trained here: a ReLU CNN (converted with the robust 99.9th-percentile rule by
both libraries) and the same CNN with QCFS activations (L=8; spikelab only: SpikingJelly's
converter takes ReLU networks).

    python benchmarks/conversion.py [--epochs 10] [--timesteps 1,2,4,8,16,32,64,128]
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from spikelab.convert import convert, replace_relu_with_qcfs
from spikelab.data.datasets.digits import digits_dvs_images
from spikelab.demo import count_image_cnn, fit_classifier


cnn = count_image_cnn  # the demo's network


def fit(model: nn.Module, x, y, epochs: int) -> nn.Module:
    return fit_classifier(model, x, y, epochs)


@torch.no_grad()
def accuracy_by_t(step_fn, reset_fn, x, y, timesteps) -> dict:
    correct = {t: 0 for t in timesteps}
    for i in range(0, len(x), 128):
        xb, yb = x[i:i + 128], y[i:i + 128]
        reset_fn()
        total = None
        for t in range(1, max(timesteps) + 1):
            out = step_fn(xb)
            total = out.clone() if total is None else total + out
            if t in correct:
                correct[t] += (total.argmax(1) == yb).sum().item()
    return {t: c / len(x) for t, c in correct.items()}


def spikingjelly_snn(ann, calibration):
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter
    from spikingjelly.activation_based.ann2snn.recipes import RateCodingRecipe

    loader = [(calibration[i:i + 128], torch.zeros(len(calibration[i:i + 128]), dtype=torch.long))
              for i in range(0, len(calibration), 128)]
    snn = Converter(RateCodingRecipe(loader, mode="99.9%")).convert(ann)
    return snn, lambda: functional.reset_net(snn)


def one_seed(seed, xtr, ytr, xte, yte, calib, epochs, timesteps) -> tuple[dict, dict]:
    """Accuracy by T of every method, and the ANNs' accuracies, for ANNs trained from ``seed``."""
    torch.manual_seed(seed)
    ann = fit(cnn(), xtr, ytr, epochs)
    accs = {"ReLU ANN": (ann(xte).argmax(1) == yte).float().mean().item()}
    rows = {}
    ours = convert(ann, calib, method="robust", percentile=99.9)
    rows["spikelab robust"] = accuracy_by_t(ours.step, ours.reset, xte, yte, timesteps)
    try:
        sj, sj_reset = spikingjelly_snn(ann, calib)
        rows["SpikingJelly 99.9%"] = accuracy_by_t(sj, sj_reset, xte, yte, timesteps)
    except Exception as err:  # noqa: BLE001 - reported, not hidden
        print(f"# SpikingJelly converter failed: {type(err).__name__}: {err}", file=sys.stderr)
    torch.manual_seed(seed)
    qann = fit(replace_relu_with_qcfs(cnn(), levels=8, clip=1.0), xtr, ytr, epochs)
    accs["QCFS ANN"] = (qann(xte).argmax(1) == yte).float().mean().item()
    q = convert(qann, calib)
    rows["spikelab QCFS L=8"] = accuracy_by_t(q.step, q.reset, xte, yte, timesteps)
    return rows, accs


def _paired_se(diffs: list) -> float:
    """Standard error of the mean of per-seed differences."""
    n = len(diffs)
    mean = sum(diffs) / n
    return (sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) ** 0.5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--timesteps", default="1,2,4,8,16,32,64,128")
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=1, help="ANNs trained from seeds 0..n-1; means reported")
    args = parser.parse_args(argv)
    timesteps = [int(t) for t in args.timesteps.split(",")]
    xtr, ytr = digits_dvs_images("train")
    xte, yte = digits_dvs_images("test")
    calib = xtr[: args.calibration]
    runs = [one_seed(s, xtr, ytr, xte, yte, calib, args.epochs, timesteps) for s in range(args.seeds)]
    names = list(runs[0][0])
    rows = {n: {t: sum(r[0][n][t] for r in runs) / len(runs) for t in timesteps} for n in names}
    accs = {k: sum(r[1][k] for r in runs) / len(runs) for k in runs[0][1]}
    print(f"DigitsDVS count images, {len(xte)} test samples, {args.seeds} seed(s) (means); "
          f"ReLU ANN {accs['ReLU ANN']:.4f}, QCFS ANN {accs['QCFS ANN']:.4f}")
    print(f"{'method':22s} " + " ".join(f"T={t:<5d}" for t in timesteps))
    for name, by_t in rows.items():
        print(f"{name:22s} " + " ".join(f"{by_t[t]:.4f} " for t in timesteps))
    if "SpikingJelly 99.9%" in rows:
        ours, theirs = rows["spikelab robust"], rows["SpikingJelly 99.9%"]
        print("spikelab - SpikingJelly (points): " + " ".join(f"{100 * (ours[t] - theirs[t]):+.2f}" for t in timesteps))
        if len(runs) > 1:  # paired over seeds: the same ANN converted by both
            print("  standard error of that mean difference (points): " + " ".join(
                f"{100 * _paired_se([r[0]['spikelab robust'][t] - r[0]['SpikingJelly 99.9%'][t] for r in runs]):.2f}"
                for t in timesteps))
    print(f"ReLU gap to the ANN at T=64: {100 * (accs['ReLU ANN'] - rows['spikelab robust'].get(64, float('nan'))):+.2f} "
          f"points; QCFS gap at T=16: {100 * (accs['QCFS ANN'] - rows['spikelab QCFS L=8'].get(16, float('nan'))):+.2f} "
          "points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
