"""``spikelab export``: a checkpoint as a NIR file, optionally checked against a hardware target."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def load_model(path: str, trust: bool = False):
    """(model, per-sample input shape or None) from a ``spikelab train`` checkpoint, or a whole saved model
    (only with ``trust``: unpickling it runs code from the file)."""
    from spikelab import files

    obj = files.load(path, trust=trust, what="checkpoint")
    if isinstance(obj, torch.nn.Module):
        return obj, None
    if isinstance(obj, dict) and "config" in obj and "model" in obj:
        from spikelab.train.build import _CLASSES, make_model

        cfg = obj["config"]
        cls = _CLASSES[cfg["data"]["name"]]
        weights = obj["model"]
        matrices = [v for k, v in weights.items() if k.endswith("weight") and v.ndim == 2]
        if not matrices:
            raise ValueError(f"{path}: the checkpoint's model has no linear readout to read the class count from")
        w, h, p = (int(s) for s in cls.sensor_size)
        model = make_model(cfg, cls.sensor_size, int(matrices[-1].shape[0]))
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(f"{path}: weights do not fit the configured model ({err})") from None
        return model, (p, h, w)
    raise ValueError(f"{path}: expected a 'spikelab train' checkpoint (config + model) or a saved nn.Module")


def _export(args: argparse.Namespace) -> int:
    import nir

    from spikelab.export import check, to_nir

    try:
        model, shape = load_model(args.checkpoint, trust=args.trust)
    except (FileNotFoundError, ValueError) as err:
        print(f"spikelab export: {err}", file=sys.stderr)
        return 2
    if args.input_shape:
        shape = tuple(int(s) for s in args.input_shape.split(","))
    if shape is None:
        print("spikelab export: give --input-shape (per sample, e.g. 2,34,34) for a saved model", file=sys.stderr)
        return 2
    model.eval()
    try:
        graph = to_nir(model, dt=args.dt, input_shape=shape, approximate=args.approximate)
    except ValueError as err:
        print(f"spikelab export: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nir.write(out, graph)
    print(f"wrote {out} ({len(graph.nodes)} nodes, dt = {args.dt} s)")
    if args.target:
        report = check(model, args.target, shape)
        print(report)
        out.with_suffix(f".{args.target}.json").write_text(json.dumps(
            {"target": report.target, "ok": report.ok, "neurons": report.neurons,
             "violations": [vars(v) | {"found": str(v.found), "limit": str(v.limit)} for v in report.violations]},
            indent=2))
        return 0 if report.ok else 1
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to NIR (and check it against a chip)",
                       description="Write a trained network as a NIR graph (nir.read-able HDF5) for time step "
                                   "--dt; with --target, also list every limit of that chip the network breaks "
                                   "(exit status 1 when it does not fit).")
    p.add_argument("checkpoint", help="best.pt/last.pt of 'spikelab train', or a torch.save'd model")
    p.add_argument("--trust", action="store_true", help="load files holding pickled Python objects (whole saved models); this runs code from the file: only for files you trust")
    p.add_argument("--format", choices=("nir",), default="nir", help="output format (default: nir)")
    p.add_argument("--out", required=True, help="output file, e.g. net.nir")
    p.add_argument("--dt", type=float, default=1e-3, help="time step in seconds (default: 1e-3)")
    p.add_argument("--target", choices=("loihi2", "speck", "xylo"), help="hardware profile to check")
    p.add_argument("--input-shape", help="per-sample input shape, e.g. 2,34,34 (read from a training checkpoint)")
    p.add_argument("--approximate", action="store_true",
                   help="write the nearest NIR node where the model cannot be expressed exactly (warns per change)")
    p.set_defaults(func=_export)
