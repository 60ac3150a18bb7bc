"""``spikelab convert``: load a checkpoint, convert it, evaluate it, write the report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from spikelab import files


def _tensors(spec: str, split: str):
    """``digits_dvs`` (the built-in data as count images) or a ``.pt`` file holding a tensor of
    inputs or a dict with ``x`` (and ``y``)."""
    if spec == "digits_dvs":
        from spikelab.data.datasets.digits import digits_dvs_images

        return digits_dvs_images(split)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such file (expected a .pt file or 'digits_dvs')")
    obj = files.load(path, what="data file")
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, dict) and "x" in obj:
        return obj["x"], obj.get("y")
    raise ValueError(f"{spec}: expected a tensor or a dict with 'x' (and 'y')")


def _timesteps(text: str) -> list[int]:
    try:
        steps = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--timesteps {text}: expected comma-separated positive integers, e.g. 1,2,4,8") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"--timesteps {text}: expected positive integers")
    return steps


def _model_args(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-args {text}: not JSON ({err.msg} at column {err.colno}); expected an object "
                         "such as '{\"classes\": 10}'") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-args {text}: expected a JSON object such as '{{\"classes\": 10}}', "
                         f"got a {type(kwargs).__name__}")
    return kwargs


def site_table(report: dict) -> str:
    """One line per neuron site: its name, threshold and the ANN call it replaces."""
    thresholds, replaces = report.get("thresholds", {}), report.get("replaces", {})
    width = max([len(n) for n in thresholds] + [4])
    values = {name: f"{t:.4g}" if isinstance(t, float) else f"{len(t)}ch, max {max(t):.4g}"
              for name, t in thresholds.items()}
    column = max([len(v) for v in values.values()] + [9])
    lines = [f"  {'site':<{width}}  {'threshold':>{column}}  replaces"]
    for name, value in values.items():
        lines.append(f"  {name:<{width}}  {value:>{column}}  {replaces.get(name, '')}")
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a trained ANN checkpoint into an SNN and evaluate it",
                       description="Convert a ReLU/QCFS network into an SNN of IF neurons, evaluate it at every "
                                   "T of --timesteps from one simulation, and write conversion_report.json, "
                                   "accuracy_vs_timesteps.png and snn.pt into --out.")
    p.add_argument("--weights", required=True, help="a saved model, or a state_dict (needs --model)")
    p.add_argument("--model", help="architecture for a state_dict: 'module:Class' (the working folder is searched "
                                   "first, as with python -m), 'path/to/file.py:Class', or a torchvision name")
    p.add_argument("--model-args", default="{}", metavar="JSON",
                   help="keyword arguments of the --model class, as a JSON object, e.g. '{\"classes\": 10}'")
    p.add_argument("--trust", action="store_true", help="load files holding pickled Python objects (whole saved models); this runs code from the file: only for files you trust")
    p.add_argument("--calibration", required=True, help="calibration inputs: a .pt file or 'digits_dvs'")
    p.add_argument("--test", help="labelled test data: a .pt file with x and y, or 'digits_dvs'")
    p.add_argument("--timesteps", default="1,2,4,8,16,32,64,128,256", help="comma-separated T values")
    p.add_argument("--method", choices=("robust", "max"), default="robust")
    p.add_argument("--percentile", type=float, default=99.9)
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--maxpool", choices=("spike", "avg"), default="spike")
    p.add_argument("--start", type=float, default=0.5, help="initial membrane, a fraction of the threshold")
    p.add_argument("--spike-fed-start", type=float, default=None,
                   help="initial membrane of the neurons fed by spikes (after the first layer); default: --start")
    p.add_argument("--out", default="convert_out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikelab.convert import ConversionError, convert, evaluate, load_ann

    try:
        timesteps = _timesteps(args.timesteps)
        ann = load_ann(args.weights, arch=args.model, trust=args.trust,
                       arch_kwargs=_model_args(args.model_args))  # one dict: any key reaches the class
        calib, _ = _tensors(args.calibration, "train")
        x, y = _tensors(args.test, "test") if args.test else (None, None)  # every file read before any work
        if args.test and y is None:
            raise ValueError(f"--test {args.test}: needs labels (a dict with 'x' and 'y')")
        snn = convert(ann, calib, method=args.method, percentile=args.percentile, per_channel=args.per_channel,
                      maxpool=args.maxpool, start=args.start, spike_fed_start=args.spike_fed_start)
    except (ConversionError, ValueError, FileNotFoundError) as err:
        print(f"spikelab convert: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(snn, out / "snn.pt")
    print(f"converted: {snn.report['sites']} neuron sites ({args.method}); saved {out / 'snn.pt'}")
    print(site_table(snn.report))
    if args.test:
        report = evaluate(snn, [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(x), 256)], timesteps, ann=ann,
                          out_dir=out)
        print(f"ANN accuracy {report['ann_accuracy']:.4f}")
        for t in report["timesteps"]:
            print(f"  T={t:4d}: SNN accuracy {report['accuracy'][str(t)]:.4f}")
        print(f"wrote {out / 'conversion_report.json'} and {out / 'accuracy_vs_timesteps.png'}")
    else:
        (out / "conversion_report.json").write_text(json.dumps({"conversion": snn.report}, indent=2))
    return 0


__all__ = ["add_parser", "run", "site_table"]
