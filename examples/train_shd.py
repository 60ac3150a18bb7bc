"""Train a spiking mlp on Spiking Heidelberg Digits (shd_train.h5, shd_test.h5; see datasets/shd.md).

    python examples/train_shd.py /path/to/dataset [--epochs N] [--out runs/shd]

spikelab never downloads data: the dataset card in datasets/ says where to get the files
and how to lay them out. A missing or incomplete folder stops the script with that message.
"""

import argparse
import sys

from spikelab.train import ConfigError, trainer_from_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder holding the dataset in its published layout")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="runs/shd")
    args = parser.parse_args()
    config = {
        "model": {"name": "mlp", "hidden": [256, 256]},
        "data": {"name": "shd", "root": args.root, "time_bins": 50, "cache": True, "num_workers": 2},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "scheduler": "cosine"},
        "out": args.out,
    }
    try:
        trainer = trainer_from_config(config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    history = trainer.fit()
    print(f"best test accuracy {trainer.best:.4f} after {len(history)} epochs; checkpoints in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
