"""``spikelab calibrate`` and ``spikelab infer --dynamic`` for converted (or saved) SNNs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from spikelab.convert.cli import _tensors


def _held_out(spec: str, size: int):
    """Calibration data: for ``digits_dvs``, a seeded random part of the train split."""
    x, y = _tensors(spec, "train")
    if y is None:
        raise ValueError(f"{spec}: calibration needs labels (a dict with 'x' and 'y')")
    if spec == "digits_dvs":
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))[:size]
        return x[order], y[order]
    return x, y


def add_parsers(sub) -> None:
    c = sub.add_parser("calibrate", help="calibrate a Dynamic Confidence stopping threshold for an SNN",
                       description="Sweep the stopping threshold of Dynamic Confidence on held-out data (never "
                                   "the test split), pick one, save it with the model and write the report.")
    c.add_argument("snn", help="a saved SNN (snn.pt from 'spikelab convert')")
    c.add_argument("--data", default="digits_dvs", help="held-out data: a .pt file with x and y, or 'digits_dvs'")
    c.add_argument("--trust", action="store_true", help="load files holding pickled Python objects (whole saved models); this runs code from the file: only for files you trust")
    c.add_argument("--held-out", type=int, default=400, help="samples taken from digits_dvs' train split")
    c.add_argument("--score", choices=("logit_margin", "maxprob", "margin", "entropy"), default="logit_margin",
                   help="default: the top-1 minus top-2 summed readout (measured best, docs/dynamic.md)")
    c.add_argument("--evidence", choices=("sum", "mean"), default="sum",
                   help="score the readout summed over the steps so far (default) or its mean")
    c.add_argument("--temperature", type=float, default=None, help="default: fitted on the held-out data")
    c.add_argument("--t-max", type=int, default=64)
    c.add_argument("--t-min", type=int, default=1)
    c.add_argument("--max-drop", type=float, default=0.3, help="accuracy points below the static accuracy")
    c.add_argument("--delta", type=float, default=0.1,
                   help="certify the budget: the drop on new data exceeds it with probability at most DELTA "
                        "(default 0.1; too few held-out samples fall back to --uncertified, with a warning)")
    c.add_argument("--uncertified", action="store_true",
                   help="the fewest steps within the budget on the held-out data, without the guarantee")
    c.add_argument("--static", action=argparse.BooleanOptionalAction, default=True,
                   help="inputs are images shown at every step (default) rather than [T, B, ...] sequences")
    c.add_argument("--out", default="dynamic_out")
    c.set_defaults(func=run_calibrate)

    i = sub.add_parser("infer", help="run an SNN on labelled data, statically or with Dynamic Confidence",
                       description="Run a saved SNN on labelled data and report accuracy and mean time steps.")
    i.add_argument("snn", help="a saved SNN (with a calibrated controller for --dynamic)")
    i.add_argument("--data", default="digits_dvs", help="a .pt file with x and y, or 'digits_dvs' (its test split)")
    i.add_argument("--trust", action="store_true", help="load files holding pickled Python objects (whole saved models); this runs code from the file: only for files you trust")
    i.add_argument("--dynamic", action="store_true", help="stop each sample with its saved controller")
    i.add_argument("--mode", choices=("live", "trace"), default="live")
    i.add_argument("--steps", type=int, default=64, help="time steps without --dynamic")
    i.add_argument("--static", action=argparse.BooleanOptionalAction, default=True)
    i.set_defaults(func=run_infer)


def _load(path: str, trust: bool):
    from spikelab import files

    model = files.load(path, trust=trust, what="saved model")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{path}: not a saved model")
    return model


def run_calibrate(args) -> int:
    from spikelab.dynamic import DynamicConfidence, calibrate, report

    try:
        snn = _load(args.snn, args.trust)
        x, y = _held_out(args.data, args.held_out)
        ctl = DynamicConfidence(args.score, args.temperature, 0.9, args.t_min, args.t_max, args.evidence)
        cal = calibrate(ctl, snn, x, y, max_accuracy_drop=args.max_drop / 100, static=args.static,
                        delta=None if args.uncertified else args.delta)
    except (ValueError, FileNotFoundError) as err:
        print(f"spikelab calibrate: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    report(ctl, ctl.trace(snn, x, static=args.static), y, out_dir=out)
    torch.save(ctl.attach(snn), out / "snn_dynamic.pt")
    guarantee = (f"certified: drop > {args.max_drop} points with probability <= {cal.delta}" if cal.delta is not None
                 else "not certified")
    print(f"{ctl}: held-out accuracy {cal.accuracy:.4f} (static {cal.static_accuracy:.4f}) at "
          f"{cal.mean_steps:.1f} mean steps of {args.t_max} ({guarantee})")
    print(f"wrote {out / 'snn_dynamic.pt'}, dynamic_report.json, dynamic.png")
    return 0


def run_infer(args) -> int:
    import time

    from spikelab.dynamic import DynamicConfidence

    try:
        snn = _load(args.snn, args.trust)
        x, y = _tensors(args.data, "test")
    except (ValueError, FileNotFoundError) as err:
        print(f"spikelab infer: {err}", file=sys.stderr)
        return 2
    if y is None:
        print("spikelab infer: --data needs labels (a dict with 'x' and 'y')", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if args.dynamic:
        state = getattr(snn, "dynamic_confidence", None)
        if state is None:
            print(f"spikelab infer: {args.snn} has no calibrated controller; run 'spikelab calibrate' first",
                  file=sys.stderr)
            return 2
        result = DynamicConfidence.from_state(state).run(snn, x, mode=args.mode, static=args.static)
        preds, steps = result.predictions, result.mean_steps
    else:
        seq = x.unsqueeze(0).expand(args.steps, *x.shape) if args.static else x[: args.steps]
        with torch.no_grad():
            preds, steps = snn(seq).mean(0).argmax(-1), float(args.steps)
    seconds = time.perf_counter() - start
    print(f"accuracy {(preds == y).float().mean().item():.4f} at {steps:.1f} mean steps "
          f"({len(y)} samples, {seconds:.2f} s)")
    return 0


__all__ = ["add_parsers"]
