"""Shared by the train_<dataset>.py examples: a command line around one training configuration."""

import argparse
import sys

from spikelab.train import ConfigError, trainer_from_config

PRESETS = {
    "nmnist": dict(model={"name": "cnn", "channels": [32, 64]}, time_bins=10,
                   card="datasets/nmnist.md: Train/ and Test/ folders"),
    "dvsgesture": dict(model={"name": "cnn", "channels": [32, 64], "dropout": 0.3}, time_bins=16,
                       card="datasets/dvsgesture.md: the DvsGesture/ folder"),
    "shd": dict(model={"name": "mlp", "hidden": [256, 256]}, time_bins=50,
                card="datasets/shd.md: shd_train.h5 and shd_test.h5"),
}


def main(dataset: str) -> int:
    preset = PRESETS[dataset]
    parser = argparse.ArgumentParser(
        description=f"Train a spiking {preset['model']['name']} on {dataset} from a local folder "
                    f"(spikelab never downloads data; see {preset['card']}).")
    parser.add_argument("root", help="folder holding the dataset in its published layout")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=f"runs/{dataset}")
    args = parser.parse_args()
    config = {
        "model": preset["model"],
        "data": {"name": dataset, "root": args.root, "time_bins": preset["time_bins"], "cache": True,
                 "num_workers": 2},
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
