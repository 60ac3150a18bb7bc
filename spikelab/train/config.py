"""Training configuration: a YAML/dict schema checked before anything runs, errors naming the key."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

DATASETS = ("digits_dvs", "nmnist", "ncaltech101", "dvsgesture", "cifar10dvs", "shd")
MODELS = ("mlp", "cnn", "sew_resnet")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
LOSSES = ("rate_ce", "membrane_ce", "tet", "count_mse")
NONFINITE = ("stop", "skip_batch")

DEFAULTS: dict[str, Any] = {
    "model": {"name": "cnn"},
    "data": {"name": "digits_dvs", "root": None, "time_bins": 10, "cache": True, "num_workers": 0},
    "train": {"epochs": 5, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0,
              "scheduler": "cosine", "step_size": 10, "gamma": 0.1, "loss": "rate_ce", "rate_reg": 0.0,
              "target_rate": 0.1, "grad_clip": None, "amp": False, "seed": 0, "checkpoint_every": 0,
              "tensorboard": False, "nonfinite": "stop"},
    "out": "runs/experiment",
}


class ConfigError(ValueError):
    """A configuration value is wrong; the message starts with its key (``train.lr: ...``)."""


def _merge(base: dict, override: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{path}: unknown key; expected one of {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
            if key == "model":
                out[key] = {**base[key], **value}  # model keys are the model's own arguments
            else:
                out[key] = _merge(base[key], value, prefix=f"{path}.")
        else:
            out[key] = value
    return out


def _number(cfg, section, key, positive=False, minimum=None, maximum=None, integer=False):
    value = cfg[section][key]
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{section}.{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{section}.{key}: expected a finite number, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{section}.{key}: expected a positive value, got {value}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{section}.{key}: expected >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{section}.{key}: expected <= {maximum}, got {value}")


def _choice(cfg, section, key, choices):
    if cfg[section][key] not in choices:
        raise ConfigError(f"{section}.{key}: unknown value {cfg[section][key]!r}; expected one of {list(choices)}")


NEURONS = {"lif": "LIF", "if": "IF", "plif": "PLIF", "alif": "AdaptiveLIF", "cuba": "CurrentLIF",
           "probabilistic": "ProbabilisticLIF"}


def neuron_factory(spec):
    """``model.neuron``: ``{"type": "lif", ...arguments}`` -> a factory making one neuron per layer
    (checked by building one)."""
    import spikelab.neurons as N

    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"model.neuron: expected a mapping with 'type' (one of {sorted(NEURONS)}) "
                          "and the neuron's arguments")
    args = dict(spec)
    kind = str(args.pop("type")).lower()
    if kind not in NEURONS:
        raise ConfigError(f"model.neuron.type: unknown neuron {kind!r}; expected one of {sorted(NEURONS)}")
    cls = getattr(N, NEURONS[kind])
    try:
        cls(**args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.neuron: {err}") from None
    return lambda: cls(**args)


def load_config(source) -> dict:
    """A validated configuration from a dict or a YAML file, defaults filled in."""
    if isinstance(source, (str, Path)):
        import yaml

        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config: no such file {path}")
        try:
            source = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config: {path} is not valid YAML ({err})") from None
    if not isinstance(source, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(source).__name__}")
    cfg = _merge(DEFAULTS, source)
    if cfg["model"].get("name") not in MODELS:
        raise ConfigError(f"model.name: unknown model {cfg['model'].get('name')!r}; expected one of {list(MODELS)}")
    if "neuron" in cfg["model"]:
        neuron_factory(cfg["model"]["neuron"])
    _choice(cfg, "data", "name", DATASETS)
    if cfg["data"]["name"] != "digits_dvs" and not cfg["data"]["root"]:
        raise ConfigError(f"data.root: the {cfg['data']['name']} dataset needs the folder that holds it")
    _number(cfg, "data", "time_bins", positive=True, integer=True, maximum=2 ** 31 - 1)
    _number(cfg, "data", "num_workers", minimum=0, maximum=1024, integer=True)
    _number(cfg, "train", "epochs", positive=True, integer=True, maximum=2 ** 31 - 1)
    _number(cfg, "train", "batch_size", positive=True, integer=True, maximum=2 ** 31 - 1)
    _number(cfg, "train", "lr", positive=True)
    _number(cfg, "train", "weight_decay", minimum=0)
    _number(cfg, "train", "rate_reg", minimum=0)
    _number(cfg, "train", "target_rate", minimum=0, maximum=1)
    _number(cfg, "train", "seed", minimum=0, maximum=2 ** 32 - 1, integer=True)
    _number(cfg, "train", "checkpoint_every", minimum=0, integer=True, maximum=2 ** 31 - 1)
    _number(cfg, "train", "step_size", positive=True, integer=True, maximum=2 ** 31 - 1)
    _number(cfg, "train", "gamma", positive=True)
    if cfg["train"]["grad_clip"] is not None:
        _number(cfg, "train", "grad_clip", positive=True)
    _choice(cfg, "train", "optimizer", OPTIMIZERS)
    _choice(cfg, "train", "scheduler", SCHEDULERS)
    _choice(cfg, "train", "loss", LOSSES)
    _choice(cfg, "train", "nonfinite", NONFINITE)
    if not isinstance(cfg["out"], str) or not cfg["out"]:
        raise ConfigError(f"out: expected an output folder path, got {cfg['out']!r}")
    return cfg
