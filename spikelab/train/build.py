"""From a validated configuration to datasets, a model and a trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from spikelab import models
from spikelab.data import datasets as D
from spikelab.data.collate import pad_collate
from spikelab.data.transforms import ToFrame
from spikelab.train.config import ConfigError, load_config, neuron_factory

_CLASSES = {"digits_dvs": D.DigitsDVS, "nmnist": D.NMNIST, "ncaltech101": D.NCaltech101,
            "dvsgesture": D.DVSGesture, "cifar10dvs": D.CIFAR10DVS, "shd": D.SHD}


def make_datasets(cfg: dict, quiet: bool = False):
    """(train set, test set, sensor size, number of classes); a missing folder is a ConfigError."""
    d = cfg["data"]
    cls = _CLASSES[d["name"]]
    to_frames = ToFrame(tuple(cls.sensor_size), n_time_bins=d["time_bins"], dtype=np.float32)
    kwargs = dict(transform=to_frames, cache=bool(d["cache"]))
    try:
        if cls is D.DigitsDVS:
            train = cls(d["root"], "train", quiet=quiet, **kwargs)
            test = cls(d["root"], "test", quiet=True, **kwargs)
        else:
            train = cls(d["root"], "train", **kwargs)
            test = cls(d["root"], "test", **kwargs)
    except D.DatasetNotFoundError as err:
        raise ConfigError(f"data.root: {err}") from None
    return train, test, tuple(cls.sensor_size), len(train.classes)


def make_model(cfg: dict, sensor_size, classes: int) -> torch.nn.Module:
    spec = dict(cfg["model"])
    name = spec.pop("name")
    if "neuron" in spec:
        spec["neuron"] = neuron_factory(spec["neuron"])
    w, h, p = (int(v) for v in sensor_size)
    try:
        if name == "mlp":
            return models.SpikingMLP(in_features=w * h * p, classes=classes, **spec)
        return models.build_model(name, in_channels=p, classes=classes, input_size=w, **spec)
    except TypeError as err:
        raise ConfigError(f"model: {err}") from None


def trainer_from_config(source, out_dir: Optional[Path] = None, quiet: bool = False):
    """A ready :class:`~spikelab.train.trainer.Trainer` for a config dict or YAML file."""
    from spikelab.train.trainer import Trainer

    cfg = load_config(source)
    torch.manual_seed(cfg["train"]["seed"])
    np.random.seed(cfg["train"]["seed"])
    train, test, sensor, classes = make_datasets(cfg, quiet=quiet)
    model = make_model(cfg, sensor, classes)
    return Trainer(model, train, test, cfg, pad_collate, out_dir=out_dir, quiet=quiet)
