"""From a validated configuration to datasets, a model and a trainer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch

from spikelab import models
from spikelab.data import datasets as D
from spikelab.data.collate import pad_collate
from spikelab.data.transforms import ToFrame
from spikelab.train.config import ConfigError, load_config, neuron_factory
from spikelab.train.splits import split_dataset

_CLASSES = {"digits_dvs": D.DigitsDVS, "nmnist": D.NMNIST, "ncaltech101": D.NCaltech101,
            "dvsgesture": D.DVSGesture, "cifar10dvs": D.CIFAR10DVS, "shd": D.SHD}


class DataSplits(NamedTuple):
    """What :func:`make_splits` returns: the training part, the validation part (None without
    ``data.val_split``), the test split (None where the dataset folder has none), the sensor size
    and the number of classes."""

    train: Any
    val: Any
    test: Any
    sensor_size: tuple
    classes: int


def make_splits(cfg: dict, quiet: bool = False) -> DataSplits:
    """The configured dataset's splits, with ``data.val_split`` held out of the training split
    and ``data.subset`` of the rest kept (deterministic in ``train.seed``, stratified by label).

    A missing folder is a ConfigError (``data.root: ...``); so is a dataset without a test split
    (N-MNIST's ``Test/``, ``shd_test.h5``, ...) unless ``data.val_split`` is set: the held-out
    part is then the evaluation set.
    """
    d = cfg["data"]
    cls = _CLASSES[d["name"]]
    to_frames = ToFrame(tuple(cls.sensor_size), n_time_bins=d["time_bins"], dtype=np.float32)
    kwargs = dict(transform=to_frames, cache=bool(d["cache"]))
    digits = cls is D.DigitsDVS
    try:
        train = cls(d["root"], "train", **(dict(quiet=quiet) if digits else {}), **kwargs)
    except D.DatasetNotFoundError as err:
        raise ConfigError(f"data.root: {err}") from None
    try:
        test = cls(d["root"], "test", **(dict(quiet=True) if digits else {}), **kwargs)
    except D.DatasetNotFoundError as err:
        if d["val_split"] is None:
            raise ConfigError(f"data.root: {err} Without a test split, set data.val_split (e.g. 0.2, or "
                              "--set data.val_split=0.2 on the command line) to hold out that share of the "
                              "training set for evaluation.") from None
        test = None
    train_part, val = split_dataset(train, d["val_split"], d["subset"], cfg["train"]["seed"])
    return DataSplits(train_part, val, test, tuple(cls.sensor_size), len(train.classes))


def make_datasets(cfg: dict, quiet: bool = False):
    """(train set, test set, sensor size, number of classes) of :func:`make_splits`: the training
    part, and the test split (or the validation part where the dataset has no test split)."""
    s = make_splits(cfg, quiet=quiet)
    return s.train, s.test if s.test is not None else s.val, s.sensor_size, s.classes


def make_model(cfg: dict, sensor_size, classes: int) -> torch.nn.Module:
    """The configured model for samples of ``sensor_size`` (W, H, P) and ``classes`` outputs."""
    spec = dict(cfg["model"])
    name = spec.pop("name")
    if "neuron" in spec:
        spec["neuron"] = neuron_factory(spec["neuron"])
    w, h, p = (int(v) for v in sensor_size)
    try:
        if name == "mlp":
            return models.SpikingMLP(in_features=w * h * p, classes=classes, **spec)
        return models.build_model(name, in_channels=p, classes=classes, input_size=w, **spec)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None


def output_folder(path) -> Path:
    """The run's output folder, checked (not created) before anything runs: a path that is a
    file, or under a file, or that cannot be created or written is a ConfigError."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out: {path} exists and is not a folder; give a folder for checkpoints and logs")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"out: cannot create the output folder {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"out: cannot write the output folder {path}: {existing} is not writable")
    return path


def _memory_available(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activations_per_step(model: torch.nn.Module, sample_shape: tuple, device: torch.device) -> int:
    """Values one sample produces in one time step: the input plus every leaf layer's output
    (a probe of one step of one sample on ``device``, in eval mode, so batch-norm statistics are
    untouched)."""
    counts = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            counts[0] += output[0, 0].numel() if output.ndim >= 2 else output.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, *sample_shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return counts[0] + int(np.prod(sample_shape))


def check_memory(cfg: dict, model: torch.nn.Module, sample_shape: tuple, device: torch.device,
                 world: int = 1) -> int:
    """Refuse a ``time_bins`` x ``batch_size`` whose training step cannot fit in this machine's
    memory (about two floats per value of every layer per step: forward and its gradient; each
    of ``world`` processes holds its share of the batch); returns the estimate in bytes. A
    model that cannot run on the data's sample shape is a ConfigError too."""
    try:
        per_step = activations_per_step(model, sample_shape, device)
    except Exception as err:  # the model does not fit the data, or its backend cannot run here
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"model: cannot run {cfg['model'].get('name')} on samples of shape {tuple(sample_shape)} "
                          f"from {cfg['data']['name']} on {device.type} ({type(err).__name__}: {first})") from None
    T, B = cfg["data"]["time_bins"], max(cfg["train"]["batch_size"] // max(world, 1), 1)
    need = 2 * 4 * per_step * T * B
    have = _memory_available(device)
    if need > have:
        raise ConfigError(
            f"data.time_bins, train.batch_size: a training step at time_bins={T}, batch_size={B}"
            f"{' per process' if world > 1 else ''} needs about {need / 2 ** 30:.1f} GiB ({per_step} values per "
            f"sample and step), more than the {have / 2 ** 30:.1f} GiB of this {device.type} device; lower "
            "time_bins or batch_size")
    return need


def trainer_from_config(source, out_dir: Optional[Path] = None, quiet: bool = False,
                        overrides: Sequence[str] = ()):
    """A ready :class:`~spikelab.train.trainer.Trainer` for a config dict or YAML file
    (``overrides``: ``KEY=VALUE`` strings, see :func:`~spikelab.train.config.load_config`)."""
    from spikelab.train.trainer import Trainer

    cfg = load_config(source, overrides)
    torch.manual_seed(cfg["train"]["seed"])
    np.random.seed(cfg["train"]["seed"])
    out = output_folder(out_dir or cfg["out"])
    data = make_splits(cfg, quiet=quiet)
    model = make_model(cfg, data.sensor_size, data.classes)
    w, h, p = (int(v) for v in data.sensor_size)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    from spikelab.train.trainer import rank_and_world

    check_memory(cfg, model.to(device), (p, h, w), device, world=rank_and_world()[1])
    return Trainer(model, data.train, data.test, cfg, pad_collate, out_dir=out, quiet=quiet, val_set=data.val)


__all__ = ["DataSplits", "make_splits", "make_datasets", "make_model", "trainer_from_config"]
