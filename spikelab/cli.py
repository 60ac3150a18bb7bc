"""The ``spikelab`` command."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _demo(args: argparse.Namespace) -> int:
    from spikelab.demo import run_demo

    summary = run_demo(args.out, epochs=args.epochs, seed=args.seed, quiet=args.quiet)
    print(f"test accuracy: {summary['test_accuracy']:.3f}  ({summary['train_seconds']} s training)")
    print(f"wrote {args.out}/summary.json, training_curve.png, raster.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikelab", description="Spiking neural networks on PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a small SNN on built-in generated data and write a report",
                          description="Train a small spiking network on generated spike patterns; write "
                                      "summary.json, a training curve and a spike raster.")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs (default: 8)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
