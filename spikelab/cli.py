"""The ``spikelab`` command: ``demo``, ``train``, ``eval``, ``convert``, ``calibrate``, ``infer``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


def _demo(args: argparse.Namespace) -> int:
    from spikelab.demo import run_demo
    from spikelab.runtime import tune_for_command

    tune_for_command()
    summary = run_demo(args.out, epochs=args.epochs, seed=args.seed, quiet=args.quiet)
    print(f"test accuracy: {summary['test_accuracy']:.3f} on {summary['test_samples']} DigitsDVS test samples "
          f"({summary['train_seconds']} s training, {summary['data_seconds']} s data)")
    conv = summary["conversion"]
    print(f"converted ReLU CNN: ANN {conv['ann_accuracy']:.3f}, SNN " +
          ", ".join(f"T={t}: {a:.3f}" for t, a in conv["snn_accuracy"].items() if t in ("4", "16", "64")))
    trained = summary["dynamic_trained"]
    print(f"dynamic confidence on the trained SNN: accuracy {trained['accuracy']:.3f} at "
          f"{trained['mean_steps']:.1f} mean steps of {trained['controller']['t_max']}")
    dyn = conv["dynamic"]
    print(f"dynamic confidence on the converted SNN: accuracy {dyn['accuracy']:.3f} at {dyn['mean_steps']:.1f} "
          f"mean steps ({100 * dyn['step_reduction']:.0f}% fewer than 64)")
    print(f"wrote {args.out}/summary.json, training_curve.png, raster.png, membrane.png, firing_rates.png, "
          "events.gif, best.pt, last.pt, snn.nir, conversion/, dynamic/")
    return 0


def _init_distributed() -> None:
    """Join the process group that ``torchrun`` describes in the environment."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend)


def _leave_distributed() -> None:
    """Leave the process group before the interpreter exits: a gloo group torn down by the
    interpreter's shutdown instead can abort the process ("terminate called without an
    active exception") after training has finished."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _train(args: argparse.Namespace) -> int:
    from spikelab.runtime import tune_for_command

    tune_for_command()
    _init_distributed()
    try:
        return _train_in_group(args)
    finally:
        _leave_distributed()


def _train_in_group(args: argparse.Namespace) -> int:
    from spikelab.train import ConfigError, trainer_from_config
    from spikelab.train.trainer import NonFiniteError

    try:
        trainer = trainer_from_config(args.config, out_dir=args.out, quiet=args.quiet, overrides=args.set or ())
    except ConfigError as err:  # a malformed --set names itself; other errors name the file too
        print(f"spikelab train: {err}" if str(err).startswith("--set") else
              f"spikelab train: {args.config}: {err}", file=sys.stderr)
        return 2
    if args.resume:
        try:
            trainer.resume(args.resume, trust=args.trust)
        except (ValueError, FileNotFoundError) as err:
            print(f"spikelab train: --resume {err}", file=sys.stderr)
            return 2
    try:
        history = trainer.fit()
    except NonFiniteError as err:
        print(f"spikelab train: {err}", file=sys.stderr)
        return 1
    if trainer.rank == 0 and history:
        last = history[-1]
        names = {"val": "validation", "test": "test"}
        scores = ", ".join(f"{name} accuracy {last[f'{split}_accuracy']:.4f}"
                           for split, name in names.items() if f"{split}_accuracy" in last)
        chosen = names[trainer.select_on.split("_")[0]]
        print(f"epoch {last['epoch']}: {scores}; best {chosen} accuracy {trainer.best:.4f}; "
              f"checkpoints, log.csv, history.json and training_curve.png in {trainer.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from spikelab.data.collate import pad_collate
    from spikelab.train import ConfigError, load_config, make_model, make_splits
    from spikelab.train.trainer import Trainer

    from spikelab import files

    try:
        state = files.load(args.checkpoint, trust=args.trust, what="checkpoint")
    except (ValueError, FileNotFoundError) as err:
        print(f"spikelab eval: {err}", file=sys.stderr)
        return 2
    try:
        files.expect_keys(state, args.checkpoint, ("config", "model"), "a spikelab training checkpoint")
        cfg = load_config(state["config"], args.set or ())
        data = make_splits(cfg, quiet=True)
        model = make_model(cfg, data.sensor_size, data.classes)
    except (ValueError, FileNotFoundError) as err:  # ConfigError is a ValueError
        print(f"spikelab eval: {args.checkpoint}: {err}" if isinstance(err, ConfigError) else
              f"spikelab eval: {err}", file=sys.stderr)
        return 2
    split = args.split or ("test" if data.test is not None else "val")
    dataset = {"train": data.train, "val": data.val, "test": data.test}[split]
    if dataset is None:
        why = ("the configuration has no data.val_split" if split == "val" else
               f"{cfg['data']['name']} has no test split under data.root; use --split val")
        print(f"spikelab eval: {args.checkpoint}: no {split} split: {why}", file=sys.stderr)
        return 2
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        print(f"spikelab eval: {args.checkpoint}: weights do not fit the configured model ({err})", file=sys.stderr)
        return 2
    trainer = Trainer(model, data.train, data.test, cfg, pad_collate, quiet=True, val_set=data.val)
    result = trainer.evaluate(dataset)
    print(f"{split} accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} ({len(dataset)} samples)")
    for layer, rate in result["rates"].items():
        print(f"  firing rate of layer {layer}: {rate:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikelab", description="Spiking neural networks on PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a spiking CNN on the built-in DigitsDVS events and write a report",
                          description="Generate the built-in DigitsDVS event dataset (once), train a spiking CNN "
                                      "on the fused kernels, evaluate it, and write summary.json, training_curve.png, "
                                      "raster.png, membrane.png, firing_rates.png, events.gif; then convert an ANN, "
                                      "calibrate Dynamic Confidence and export the SNN to NIR.")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train from a YAML configuration",
                           description="Train from CONFIG.yaml (keys: model, data, train, out; see "
                                       "docs/training.md), writing best.pt, last.pt, log.csv, history.json and "
                                       "training_curve.png to the output folder. Under torchrun, trains "
                                       "data-parallel.")
    train.add_argument("config", help="YAML configuration file")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one configuration value, a dotted key and a YAML value, e.g. "
                            "--set train.epochs=2 --set data.val_split=0.2 --set model.hidden=[64,32] "
                            "(repeatable; checked like the file)")
    train.add_argument("--out", help="output folder (overrides the config's 'out')")
    train.add_argument("--resume", help="checkpoint (last.pt) to continue from")
    train.add_argument("--trust", action="store_true", help="load files holding pickled Python objects (whole saved models); this runs code from the file: only for files you trust")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a training checkpoint",
                        description="Rebuild the model and data of a checkpoint's configuration and report "
                                    "accuracy, loss and per-layer firing rates.")
    ev.add_argument("checkpoint", help="best.pt or last.pt written by 'spikelab train'")
    ev.add_argument("--split", choices=("test", "val", "train"),
                    help="test (default where the dataset has a test split), val (the part held out by "
                         "data.val_split; the default otherwise) or train (the training part)")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a value of the checkpoint's configuration, e.g. --set data.root=/new/place "
                         "for a moved dataset (repeatable; checked like the file)")
    ev.add_argument("--trust", action="store_true", help="load files holding pickled Python objects (whole saved models); this runs code from the file: only for files you trust")
    ev.set_defaults(func=_eval)

    from spikelab.convert.cli import add_parser as add_convert

    add_convert(sub)
    from spikelab.dynamic.cli import add_parsers as add_dynamic

    add_dynamic(sub)
    from spikelab.export.cli import add_parser as add_export

    add_export(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


__all__ = ["main"]


if __name__ == "__main__":
    sys.exit(main())
