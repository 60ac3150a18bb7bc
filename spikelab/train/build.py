"""From a validated configuration to datasets, a model and a trainer."""

from __future__ import annotations

import os
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


def trainer_from_config(source, out_dir: Optional[Path] = None, quiet: bool = False):
    """A ready :class:`~spikelab.train.trainer.Trainer` for a config dict or YAML file."""
    from spikelab.train.trainer import Trainer

    cfg = load_config(source)
    torch.manual_seed(cfg["train"]["seed"])
    np.random.seed(cfg["train"]["seed"])
    out = output_folder(out_dir or cfg["out"])
    train, test, sensor, classes = make_datasets(cfg, quiet=quiet)
    model = make_model(cfg, sensor, classes)
    w, h, p = (int(v) for v in sensor)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    from spikelab.train.trainer import rank_and_world

    check_memory(cfg, model.to(device), (p, h, w), device, world=rank_and_world()[1])
    return Trainer(model, train, test, cfg, pad_collate, out_dir=out, quiet=quiet)
