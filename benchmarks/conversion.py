"""ANN -> SNN conversion accuracy: spikelab against SpikingJelly's converter, same checkpoint,
same calibration batches, same simulation lengths, on the built-in DigitsDVS data (each
recording as an event-count image).

Two ANNs are trained here: a ReLU CNN (converted with the robust 99.9th-percentile rule by
both libraries) and the same CNN with QCFS activations (L=8; spikelab only: SpikingJelly's
converter takes ReLU networks). The ReLU CNN is converted by spikelab three ways: the default
(every membrane starts at half its threshold), ``spike_fed_start=0`` (half threshold in the
first layer only) and ``start=0`` (every membrane at zero, as SpikingJelly does). Printed: the
accuracy and the agreement with the ANN's predictions at every T, and spikelab minus
SpikingJelly (with the paired standard error over seeds when there are several).

    python benchmarks/conversion.py [--seeds 10] [--network demo|deeper] [--epochs 10] [--timesteps 1,2,4,...,256]

``--speed`` times the simulation instead (one ANN, seed 0): the test set in batches of 128 for
64 steps, spikelab's converted network against SpikingJelly's from the same ANN and against
spikelab's own network with torch's pooling, interleaved, medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from torch import nn

from spikelab.convert import convert, replace_relu_with_qcfs
from spikelab.data.datasets.digits import digits_dvs_images
from spikelab.demo import count_image_cnn, fit_classifier


def deeper_cnn() -> nn.Module:
    """Five neuron layers (four convolutions and a hidden linear layer) on the same images."""
    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(2, 16), *block(16, 16), nn.AvgPool2d(2), *block(16, 32), *block(32, 32),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))


NETWORKS = {"demo": count_image_cnn, "deeper": deeper_cnn}
DEFAULT = "spikelab robust"
SPIKELAB_RELU = {DEFAULT: {}, "  spike_fed_start=0": {"spike_fed_start": 0.0}, "  start=0": {"start": 0.0}}
SJ = "SpikingJelly 99.9%"
QCFS = "spikelab QCFS L=8"
SJ_THRESHOLDS = "  SpikingJelly's thresholds"  # --diagnose: spikelab's half start, SpikingJelly's thresholds


def fit(model: nn.Module, x, y, epochs: int) -> nn.Module:
    return fit_classifier(model, x, y, epochs)


@torch.no_grad()
def predictions_by_t(step_fn, reset_fn, x, timesteps) -> dict:
    """The class predicted from the readout summed over the first T steps, for every T."""
    predicted = {t: [] for t in timesteps}
    for i in range(0, len(x), 128):
        reset_fn()
        total = None
        for t in range(1, max(timesteps) + 1):
            out = step_fn(x[i:i + 128])
            total = out.clone() if total is None else total + out
            if t in predicted:
                predicted[t].append(total.argmax(1))
    return {t: torch.cat(p) for t, p in predicted.items()}


def spikingjelly_snn(ann, calibration):
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter
    from spikingjelly.activation_based.ann2snn.recipes import RateCodingRecipe

    loader = [(calibration[i:i + 128], torch.zeros(len(calibration[i:i + 128]), dtype=torch.long))
              for i in range(0, len(calibration), 128)]
    snn = Converter(RateCodingRecipe(loader, mode="99.9%")).convert(ann)
    return snn, lambda: functional.reset_net(snn)


def spikingjelly_thresholds(sj_snn) -> list:
    """The thresholds SpikingJelly chose, in site order: it wraps every IF neuron between a
    VoltageScaler(1 / threshold) and a VoltageScaler(threshold)."""
    from spikingjelly.activation_based.ann2snn.modules import VoltageScaler

    scales = [m.scale.item() for m in sj_snn.modules() if isinstance(m, VoltageScaler)]
    return scales[1::2]


def _with_torch_pooling(snn):
    """A copy of a converted network whose average pooling runs on torch's own kernel."""
    from spikelab.layers.pooling import FastAvgPool2d, avg_pool2d
    from torch.nn import functional as F

    snn = copy.deepcopy(snn)
    gm = snn.graph_module
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), FastAvgPool2d):
            pool = gm.get_submodule(node.target)
            gm.add_submodule(node.target, nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
                                                       pool.count_include_pad, pool.divisor_override))
        elif node.op == "call_function" and node.target is avg_pool2d:
            node.target = F.avg_pool2d
    gm.recompile()
    return snn


def simulation_speed(cnn, xtr, ytr, xte, calib, epochs: int, steps: int = 64, repeats: int = 3) -> dict:
    """Seconds to simulate the test set for ``steps`` steps (batches of 128), per network."""
    torch.manual_seed(0)
    ann = fit(cnn(), xtr, ytr, epochs)
    ours = convert(ann, calib, method="robust", percentile=99.9)
    nets = {"spikelab": (ours.step, ours.reset)}
    nets["spikelab, torch pooling"] = (lambda n: (n.step, n.reset))(_with_torch_pooling(ours))
    try:
        nets[SJ] = spikingjelly_snn(ann, calib)
    except Exception as err:  # noqa: BLE001 - reported, not hidden
        print(f"# SpikingJelly converter failed: {type(err).__name__}: {err}", file=sys.stderr)
    seconds = {name: [] for name in nets}
    for _ in range(repeats):
        for name, (step, reset) in nets.items():
            start = time.perf_counter()
            predictions_by_t(step, reset, xte, [steps])
            seconds[name].append(time.perf_counter() - start)
    return {name: sorted(v)[len(v) // 2] for name, v in seconds.items()}


def one_seed(cnn, seed, xtr, ytr, xte, yte, calib, epochs, timesteps, diagnose=False) -> tuple[dict, dict, dict]:
    """Accuracy and agreement with the ANN by T of every method, and the ANNs' accuracies, for
    ANNs trained from ``seed``."""
    torch.manual_seed(seed)
    ann = fit(cnn(), xtr, ytr, epochs)
    ann_pred = ann(xte).argmax(1)
    accs = {"ReLU ANN": (ann_pred == yte).float().mean().item()}
    preds = {}
    for name, options in SPIKELAB_RELU.items():
        ours = convert(ann, calib, method="robust", percentile=99.9, **options)
        preds[name] = predictions_by_t(ours.step, ours.reset, xte, timesteps)
    try:
        sj, sj_reset = spikingjelly_snn(ann, calib)
        preds[SJ] = predictions_by_t(sj, sj_reset, xte, timesteps)
        if diagnose:
            mixed = convert(ann, calib)
            for (_, site), threshold in zip(mixed.sites(), spikingjelly_thresholds(sj), strict=True):
                site.neuron.threshold.data.fill_(threshold)
            preds[SJ_THRESHOLDS] = predictions_by_t(mixed.step, mixed.reset, xte, timesteps)
    except Exception as err:  # noqa: BLE001 - reported, not hidden
        print(f"# SpikingJelly converter failed: {type(err).__name__}: {err}", file=sys.stderr)
    rows = {name: {t: (p[t] == yte).float().mean().item() for t in timesteps} for name, p in preds.items()}
    agreement = {name: {t: (p[t] == ann_pred).float().mean().item() for t in timesteps} for name, p in preds.items()}
    torch.manual_seed(seed)
    qann = fit(replace_relu_with_qcfs(cnn(), levels=8, clip=1.0), xtr, ytr, epochs)
    qann_pred = qann(xte).argmax(1)
    accs["QCFS ANN"] = (qann_pred == yte).float().mean().item()
    q = convert(qann, calib)
    qpred = predictions_by_t(q.step, q.reset, xte, timesteps)
    rows[QCFS] = {t: (qpred[t] == yte).float().mean().item() for t in timesteps}
    agreement[QCFS] = {t: (qpred[t] == qann_pred).float().mean().item() for t in timesteps}
    return rows, agreement, accs


def _paired_se(diffs: list) -> float:
    """Standard error of the mean of per-seed differences."""
    n = len(diffs)
    mean = sum(diffs) / n
    return (sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) ** 0.5


def _table(title: str, rows: dict, timesteps) -> None:
    print(title)
    print(f"{'':28s} " + " ".join(f"T={t:<5d}" for t in timesteps))
    for name, by_t in rows.items():
        print(f"{name:28s} " + " ".join(f"{by_t[t]:.4f} " for t in timesteps))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", choices=sorted(NETWORKS), default="demo",
                        help="demo: the demo's CNN (two neuron layers); deeper: five neuron layers")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--timesteps", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=1, help="ANNs trained from seeds 0..n-1; means reported")
    parser.add_argument("--diagnose", action="store_true",
                        help="add spikelab's default network run with SpikingJelly's thresholds")
    parser.add_argument("--speed", action="store_true", help="time the simulation instead (see above)")
    parser.add_argument("--repeats", type=int, default=3, help="--speed: timed runs per network")
    args = parser.parse_args(argv)
    timesteps = [int(t) for t in args.timesteps.split(",")]
    xtr, ytr = digits_dvs_images("train")
    xte, yte = digits_dvs_images("test")
    calib = xtr[: args.calibration]
    if args.speed:
        seconds = simulation_speed(NETWORKS[args.network], xtr, ytr, xte, calib, args.epochs, repeats=args.repeats)
        print(f"{args.network} CNN, {len(xte)} test samples in batches of 128, 64 steps, {torch.get_num_threads()} "
              f"threads, median of {args.repeats}")
        print(f"{'network':28s} {'seconds':>7s}   time / spikelab's")
        for name, sec in seconds.items():
            print(f"{name:28s} {sec:7.2f}   {sec / seconds['spikelab']:.2f}")
        return 0
    runs = [one_seed(NETWORKS[args.network], s, xtr, ytr, xte, yte, calib, args.epochs, timesteps,
                    args.diagnose) for s in range(args.seeds)]

    def mean(part: int, name: str, t: int) -> float:
        return sum(r[part][name][t] for r in runs) / len(runs) if t in timesteps else float("nan")

    names = list(runs[0][0])
    accs = {k: sum(r[2][k] for r in runs) / len(runs) for k in runs[0][2]}
    print(f"{args.network} CNN on DigitsDVS count images, {len(xte)} test samples, {args.seeds} seed(s) (means); "
          f"ReLU ANN {accs['ReLU ANN']:.4f}, QCFS ANN {accs['QCFS ANN']:.4f}")
    _table("accuracy", {n: {t: mean(0, n, t) for t in timesteps} for n in names}, timesteps)
    _table("agreement with the ANN's predictions (the QCFS row: with the QCFS ANN)",
           {n: {t: mean(1, n, t) for t in timesteps} for n in names}, timesteps)
    if SJ in names:
        print("spikelab minus SpikingJelly, accuracy (points)" + (", +- paired standard error over seeds"
                                                                   if len(runs) > 1 else ""))
        for name in [n for n in names if n not in (SJ, QCFS)]:
            cells = []
            for t in timesteps:
                diffs = [100 * (r[0][name][t] - r[0][SJ][t]) for r in runs]
                cell = f"{sum(diffs) / len(diffs):+.2f}"
                cells.append(cell + (f"+-{_paired_se(diffs):.2f}" if len(runs) > 1 else ""))
            print(f"{name:28s} " + " ".join(cells))
    print(f"ReLU gap to the ANN at T=64: {100 * (accs['ReLU ANN'] - mean(0, DEFAULT, 64)):+.2f} points; "
          f"QCFS gap at T=16: {100 * (accs['QCFS ANN'] - mean(0, QCFS, 16)):+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
