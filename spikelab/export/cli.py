"""``spikelab export``: a checkpoint as a NIR file, optionally checked against (and quantized for)
a hardware target, and written in the subset of NIR a peer library reads."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn


@dataclass
class Loaded:
    """What :func:`load_checkpoint` read: the model (eval mode not set), the per-sample input shape
    (None for a saved module) and the training configuration (None for a saved module)."""

    model: nn.Module
    input_shape: Optional[tuple[int, ...]]
    config: Optional[dict]


def load_checkpoint(path: str, trust: bool = False) -> Loaded:
    """The model of a ``spikelab train`` checkpoint (rebuilt from its configuration; the data's
    sensor gives the input shape), or a whole saved model (only with ``trust``: unpickling it runs
    code from the file)."""
    from spikelab import files

    obj = files.load(path, trust=trust, what="checkpoint")
    if isinstance(obj, torch.nn.Module):
        return Loaded(obj, None, None)
    if isinstance(obj, dict) and "config" in obj and "model" in obj:
        from spikelab.train.build import _CLASSES, make_model

        cfg = obj["config"]
        try:
            cls = _CLASSES[cfg["data"]["name"]]
        except (KeyError, TypeError):
            raise ValueError(f"{path}: the checkpoint's config names no known dataset (config.data.name: expected "
                             f"one of {sorted(_CLASSES)})") from None
        weights = obj["model"]
        if not isinstance(weights, dict):
            raise ValueError(f"{path}: 'model' holds a {type(weights).__name__}, expected a state_dict")
        matrices = [v for k, v in weights.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
        if not matrices:
            raise ValueError(f"{path}: the checkpoint's model has no linear readout to read the class count from")
        w, h, p = (int(s) for s in cls.sensor_size)
        model = make_model(cfg, cls.sensor_size, int(matrices[-1].shape[0]))
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(f"{path}: weights do not fit the configured model ({err})") from None
        return Loaded(model, (p, h, w), cfg)
    raise ValueError(f"{path}: expected a 'spikelab train' checkpoint (config + model) or a saved nn.Module")


def load_model(path: str, trust: bool = False):
    """(model, per-sample input shape or None) of :func:`load_checkpoint`."""
    loaded = load_checkpoint(path, trust=trust)
    return loaded.model, loaded.input_shape


def evaluate_accuracy(models: dict[str, nn.Module], config: dict, samples: int, batch_size: int = 64,
                      quiet: bool = False) -> tuple[dict[str, float], int]:
    """Accuracy of each of ``models`` on (at most) ``samples`` test samples of the checkpoint's
    configuration (evenly spaced over the test split, so every class is in; the validation part
    where the dataset has no test split); prediction: argmax of the outputs summed over time,
    each batch from a reset state (as :func:`~spikelab.export.quantize` measures it).
    Returns ({name: accuracy}, samples used)."""
    from tqdm.auto import tqdm

    from spikelab.export.hardware import _correct

    from spikelab.data.collate import pad_collate
    from spikelab.train import load_config, make_datasets

    _, test, _, _ = make_datasets(load_config(config), quiet=True)
    n = min(int(samples), len(test))
    if n <= 0:
        raise ValueError("the checkpoint's test split is empty")
    indices = np.unique(np.linspace(0, len(test) - 1, n).round().astype(int))
    correct = dict.fromkeys(models, 0)
    for m in models.values():
        m.eval()
    with tqdm(total=len(indices), desc="test accuracy", unit="sample", disable=quiet) as bar:
        for i in range(0, len(indices), batch_size):
            x, y, _ = pad_collate([test[int(j)] for j in indices[i:i + batch_size]])
            for name, m in models.items():
                correct[name] += _correct(m, x, y)
            bar.update(len(y))
    return {name: c / len(indices) for name, c in correct.items()}, len(indices)


def shape_error(model: nn.Module, input_shape: tuple[int, ...]) -> Optional[str]:
    """None where ``model`` runs on zeros of per-sample shape ``input_shape`` (one step, one
    sample), else a message naming the innermost layer that failed and the shape of its input.
    The model's streaming state is reset afterwards."""
    from spikelab.state import reset

    names = {id(m): name for name, m in model.named_modules()}
    running: list[tuple[nn.Module, tuple[int, ...]]] = []  # the modules entered and not yet left

    def enter(m, args):
        x = args[0] if args else None
        running.append((m, tuple(x.shape) if isinstance(x, torch.Tensor) else ()))

    def leave(m, args, out):
        running.pop()

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    x = torch.zeros(1, 1, *input_shape)
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, IndexError) as err:
        m, got = running[-1] if running else (model, tuple(x.shape))
        name = names.get(id(m)) or type(model).__name__
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (f"the model does not fit --input-shape {','.join(map(str, input_shape))}: on zeros of shape "
                f"{tuple(x.shape)} ([T, B, *input-shape]), layer '{name}' ({type(m).__name__}) fails on its input "
                f"of shape {got}: {reason}")
    finally:
        for h in hooks:
            h.remove()
        reset(model)
    return None


def _fail(message: str) -> int:
    print(f"spikelab export: {message}", file=sys.stderr)
    return 2


def _export(args: argparse.Namespace) -> int:
    import nir

    from spikelab.export import check, export_conflicts, quantize, to_nir
    from spikelab.export.peers import SNNTORCH_DT

    if args.quantize and not args.target:
        return _fail("--quantize needs --target: the chip whose weight width to round to (loihi2, speck or xylo)")
    if args.eval_samples < 0:
        return _fail(f"--eval-samples: expected a count >= 0, got {args.eval_samples}")
    if args.batch_size < 1:
        return _fail(f"--batch-size: expected a positive count, got {args.batch_size}")
    dt = args.dt if args.dt is not None else (SNNTORCH_DT if args.compat == "snntorch" else 1e-3)
    try:
        loaded = load_checkpoint(args.checkpoint, trust=args.trust)
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    model, shape = loaded.model, loaded.input_shape
    if args.input_shape:
        shape = tuple(int(s) for s in args.input_shape.split(","))
    if shape is None:
        return _fail("give --input-shape (per sample, e.g. 2,34,34) for a saved model")
    model.eval()
    problem = shape_error(model, shape)  # to_nir reads layers' sizes, not whether they fit together
    if problem:
        return _fail(problem)
    try:
        conflicts = export_conflicts(model, args.target, shape) if args.target else []
    except ValueError as err:
        return _fail(str(err))
    if conflicts:
        print(f"{args.target} and exact NIR export conflict in {len(conflicts)} layer(s):")
        for c in conflicts:
            print(f"  - {c}")
    try:  # before any data is read: a network NIR cannot hold stops here
        graph = to_nir(model, dt=dt, input_shape=shape, approximate=args.approximate, compat=args.compat)
    except ValueError as err:
        return _fail(str(err))
    exported, quantization = model, None
    if args.quantize:
        exported, q = quantize(model, args.target)
        quantization = {"bits": q["bits"], "scales": {k: v["scale"] for k, v in q["layers"].items()},
                        "rewrites": q["rewrites"]}
        for change in q["rewrites"]:
            print(f"for {args.target}: {change}")
        if args.eval_samples and loaded.config is not None:
            try:
                acc, n = evaluate_accuracy({"float": model, "quantized": exported}, loaded.config, args.eval_samples,
                                       args.batch_size, quiet=args.quiet)
            except (ValueError, FileNotFoundError) as err:  # a missing dataset is a ConfigError (ValueError)
                return _fail(f"{args.checkpoint}: cannot evaluate on the checkpoint's test data ({err}); "
                             "--eval-samples 0 skips the evaluation")
            quantization.update(accuracy_before=acc["float"], accuracy_after=acc["quantized"],
                                accuracy_change=acc["quantized"] - acc["float"], eval_samples=n)
            print(f"accuracy on {n} test samples: float {acc['float']:.4f}, {q['bits']}-bit "
                  f"{acc['quantized']:.4f} (change {acc['quantized'] - acc['float']:+.4f})")
        elif args.eval_samples:
            print("accuracy not measured: a saved module carries no dataset configuration")
        try:
            graph = to_nir(exported, dt=dt, input_shape=shape, approximate=args.approximate, compat=args.compat)
        except ValueError as err:
            return _fail(f"the network quantized for {args.target}: {err}")
        graph.metadata["quantized"] = f"{q['bits']}-bit weights for {args.target} (one scale per layer)"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nir.write(out, graph)
    print(f"wrote {out} ({len(graph.nodes)} nodes, dt = {dt} s"
          f"{', ' + str(quantization['bits']) + '-bit weights' if quantization else ''}"
          f"{', for ' + args.compat if args.compat else ''})")
    if not args.target:
        return 0
    try:
        report = check(exported, args.target, shape)
    except ValueError as err:
        return _fail(str(err))
    print(report)
    avg_pooling = any(v.rule == "layer type" and v.found == "AvgPool2d" for v in report.violations)
    if not args.quantize and ("weight bit width" in report.rules() or avg_pooling):
        print(f"  (add --quantize to deploy: it rounds the weights to {args.target}'s width and, where the chip "
              "pools by summing, writes average pooling as sum pooling with its 1/(kh*kw) moved into the next "
              "layer's weights)")
    summary = {"target": report.target, "ok": report.ok, "neurons": report.neurons,
               "violations": [vars(v) | {"found": str(v.found), "limit": str(v.limit)} for v in report.violations],
               "conflicts": [vars(c) for c in conflicts]}
    if quantization:
        summary["quantization"] = quantization
    out.with_suffix(f".{args.target}.json").write_text(json.dumps(summary, indent=2))
    return 0 if report.ok else 1


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to NIR (and check or quantize it for a chip)",
                       description="Write a trained network as a NIR graph (nir.read-able HDF5) for time step "
                                   "--dt. With --target, first name the layers where the chip and exact NIR "
                                   "export conflict (and the fix), then list every limit of that chip the network "
                                   "breaks (exit status 1 when it does not fit). With --quantize, round the "
                                   "weights to the chip's width, report the accuracy before and after on the "
                                   "checkpoint's test data, and write the quantized network. With --for, write "
                                   "the graph in the subset of NIR that Norse or snnTorch reads.")
    p.add_argument("checkpoint", help="best.pt/last.pt of 'spikelab train' (or 'spikelab demo'), or a torch.save'd "
                                      "model")
    p.add_argument("--trust", action="store_true", help="load files holding pickled Python objects (whole saved models); this runs code from the file: only for files you trust")
    p.add_argument("--format", choices=("nir",), default="nir", help="output format (default: nir)")
    p.add_argument("--out", required=True, help="output file, e.g. net.nir")
    p.add_argument("--dt", type=float, default=None,
                   help="time step in seconds (default: 1e-3; 1e-4 with --for snntorch, which reads that dt)")
    p.add_argument("--target", choices=("loihi2", "speck", "xylo"), help="hardware profile to check")
    p.add_argument("--quantize", action="store_true",
                   help="round weights to the --target's width (one scale per layer, BatchNorm folded first), "
                        "report the test accuracy before and after, and export the quantized network")
    p.add_argument("--eval-samples", type=int, default=512,
                   help="test samples for the accuracy before/after --quantize (default: 512; 0: skip)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of that evaluation (default: 64)")
    p.add_argument("--for", dest="compat", choices=("norse", "snntorch"),
                   help="write the graph in the NIR subset this peer's importer reads (Norse 1.1, snnTorch 1.0)")
    p.add_argument("--input-shape", help="per-sample input shape, e.g. 2,34,34 (read from a training checkpoint)")
    p.add_argument("--approximate", action="store_true",
                   help="write the nearest NIR node where the model cannot be expressed exactly (warns per change)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_export)


__all__ = ["Loaded", "load_checkpoint", "load_model", "evaluate_accuracy", "shape_error", "add_parser"]
