"""From a trained checkpoint to a chip: NIR file, round-trip check, chip profiles, 8-bit weights,
activity and energy, plots.

    python examples/deploy_checkpoint.py runs/digits/best.pt --target speck --out deploy/
    python examples/deploy_checkpoint.py --out deploy/      # trains a small net on DigitsDVS first

The checkpoint is one written by ``spikelab train`` (its configuration rebuilds the model and
the data). Networks with subtraction resets do not export exactly; this script says so and
exports them with ``--approximate`` only when asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nir
import torch

import spikelab as sl
from spikelab.data.collate import pad_collate
from spikelab.export import check, fold_batchnorm, from_nir, quantize, to_nir
from spikelab.export.cli import load_model
from spikelab.train import make_datasets, trainer_from_config


def _train_small(out: Path) -> Path:
    trainer = trainer_from_config({
        "model": {"name": "cnn", "channels": [8, 16], "neuron": {"type": "lif", "tau": 2.0, "reset": "zero"}},
        "data": {"name": "digits_dvs", "time_bins": 8},
        "train": {"epochs": 1, "batch_size": 64, "lr": 3e-3},
        "out": str(out / "train"),
    }, quiet=True)
    trainer.fit()
    return out / "train" / "best.pt"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="best.pt/last.pt of 'spikelab train' (default: train one)")
    parser.add_argument("--out", default="deploy", help="output folder")
    parser.add_argument("--target", default="loihi2", choices=("loihi2", "speck", "xylo"))
    parser.add_argument("--dt", type=float, default=1e-3, help="time step in seconds")
    parser.add_argument("--approximate", action="store_true", help="allow inexact NIR nodes (warned)")
    parser.add_argument("--samples", type=int, default=128, help="test samples for the checks")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = args.checkpoint or _train_small(out)
    model, shape = load_model(str(path))
    model.eval()
    cfg = sl.files.load(path, what="checkpoint")["config"]
    _, test, _, _ = make_datasets(cfg, quiet=True)
    x, y, _ = pad_collate([test[i] for i in range(min(args.samples, len(test)))])

    graph = to_nir(model, dt=args.dt, input_shape=shape, approximate=args.approximate)
    nir.write(out / "net.nir", graph)
    back = from_nir(out / "net.nir", dt=args.dt)
    with torch.no_grad():  # the graph holds the network with BatchNorm folded into its layers
        original, ours, theirs = model(x), fold_batchnorm(model)(x), back(x)
    quantized, q = quantize(model, args.target, data=(x, y))
    report = check(quantized, args.target, shape)
    activity = sl.stats.activity(quantized, x)
    summary = {
        "nir_file": str(out / "net.nir"), "nodes": len(graph.nodes),
        "round_trip_max_abs_difference": (ours - theirs).abs().max().item(),
        "batchnorm_folding_prediction_agreement":
            (original.sum(0).argmax(-1) == ours.sum(0).argmax(-1)).float().mean().item(),
        "quantization": {k: q[k] for k in ("bits", "accuracy_before", "accuracy_after", "accuracy_change")},
        "target": args.target, "fits": report.ok, "violations": [str(v) for v in report.violations],
        "firing_rate": activity["firing_rate"], "energy_per_sample_pj": activity["energy_per_sample_pj"],
    }
    (out / "deploy.json").write_text(json.dumps(summary, indent=2))
    sl.viz.rate_histogram(sl.stats.firing_rates(quantized, x, per_neuron=True), out / "firing_rates.png")
    print(report)
    print(f"round trip max |difference| {summary['round_trip_max_abs_difference']:.3g} (BatchNorm folding kept "
          f"{summary['batchnorm_folding_prediction_agreement']:.1%} of predictions); "
          f"{q['bits']}-bit weights: accuracy {q['accuracy_before']:.3f} -> {q['accuracy_after']:.3f}; "
          f"energy per sample {activity['energy_per_sample_pj']['snn'] / 1e6:.2f} uJ "
          f"(ANN {activity['energy_per_sample_pj']['ann'] / 1e6:.2f} uJ); wrote {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
