"""Training configuration: a YAML/dict schema checked before anything runs, errors naming the key."""

from __future__ import annotations

import copy
import functools
import math
import numbers
import re
from pathlib import Path
from typing import Any, Sequence

DATASETS = ("digits_dvs", "nmnist", "ncaltech101", "dvsgesture", "cifar10dvs", "shd")
MODELS = ("mlp", "cnn", "sew_resnet")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
LOSSES = ("rate_ce", "membrane_ce", "tet", "prefix_ce", "count_mse")
NONFINITE = ("stop", "skip_batch")

DEFAULTS: dict[str, Any] = {
    "model": {"name": "cnn"},
    "data": {"name": "digits_dvs", "root": None, "time_bins": 10, "cache": True, "num_workers": 0,
             "val_split": None, "subset": None},
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


def check_split(val_split, subset) -> None:
    """``data.val_split``: None or a fraction in (0, 1); ``data.subset``: None, a count >= 1 or a
    fraction in (0, 1]. A ConfigError names the key and what was expected."""
    if val_split is not None and (isinstance(val_split, bool) or not isinstance(val_split, numbers.Real)
                                  or not 0 < val_split < 1):
        raise ConfigError(f"data.val_split: expected a fraction between 0 and 1 (exclusive) of the training set "
                          f"to hold out for validation, e.g. 0.2, got {val_split!r}")
    if subset is None:
        return
    if isinstance(subset, bool) or not isinstance(subset, numbers.Real):
        raise ConfigError(f"data.subset: expected a number of training samples (an integer >= 1) or a fraction "
                          f"in (0, 1], got {subset!r}")
    if isinstance(subset, numbers.Integral) and subset < 1:
        raise ConfigError(f"data.subset: expected a number of training samples >= 1, got {subset}")
    if not isinstance(subset, numbers.Integral) and not 0 < subset <= 1:
        raise ConfigError(f"data.subset: expected a fraction in (0, 1] of the training set (or an integer count), "
                          f"got {subset!r}")


def _fraction_or_count(cfg) -> None:
    check_split(cfg["data"]["val_split"], cfg["data"]["subset"])


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


@functools.lru_cache(maxsize=None)
def _yaml_loader():
    """PyYAML's safe loader, reading ``1e-3`` as the number YAML 1.2 says it is (PyYAML alone,
    following YAML 1.1, reads it as a string)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return Loader


def parse_yaml(text: str, where: str):
    """``text`` read as YAML (see :func:`_yaml_loader`); a ConfigError starting with ``where`` if it is not."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as err:
        problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
        detail = f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if problem and mark else \
            " ".join(str(err).split())
        raise ConfigError(f"{where}: not valid YAML ({detail})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=2"`` -> ``(["train", "epochs"], 2)``: a dotted key and a YAML value
    (``[64, 32]`` is a list, ``1e-3`` a float, ``null`` None, ``abc`` a string)."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or not all(p.strip() for p in parts):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY, e.g. --set train.epochs=2 "
                          "or --set model.hidden=[64,32]")
    try:
        return [p.strip() for p in parts], parse_yaml(value, key) if value.strip() else None
    except ConfigError as err:
        raise ConfigError(f"{err} (from --set {text})") from None


def apply_overrides(source: dict, overrides: Sequence[str]) -> dict:
    """A copy of the raw configuration ``source`` with every ``KEY=VALUE`` of ``overrides`` set
    (later ones win). Keys are not checked here: :func:`load_config` checks the result."""
    out = copy.deepcopy(source)
    for text in overrides:
        parts, value = parse_override(text)
        node, default = out, DEFAULTS
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[:i + 1])
            if isinstance(default, dict) and part in default and default[part] is not None \
                    and not isinstance(default[part], dict):
                raise ConfigError(f"{where}: a value, not a section; cannot set {'.'.join(parts)} (from --set {text})")
            if node.get(part) is None:
                node[part] = {}
            elif not isinstance(node[part], dict):
                raise ConfigError(f"{where}: holds {node[part]!r}, not a mapping; cannot set {'.'.join(parts)} "
                                  f"(from --set {text})")
            node = node[part]
            default = default.get(part) if isinstance(default, dict) else None
        node[parts[-1]] = value
    return out


def _override_of(err: ConfigError, overrides: Sequence[str]) -> str:
    """The override that set the key an error names, as `` (from --set KEY=VALUE)``, or ''."""
    keys = [k.strip() for k in str(err).split(":", 1)[0].split(",")]
    for text in reversed(list(overrides)):
        key = str(text).partition("=")[0].strip()
        if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys):
            return f" (from --set {text})"
    return ""


def load_config(source, overrides: Sequence[str] = ()) -> dict:
    """A validated configuration from a dict or a YAML file, defaults filled in.

    ``overrides`` are ``KEY=VALUE`` strings (``"train.epochs=2"``, ``"model.hidden=[64,32]"``),
    applied to the file's values before the check, so a wrong value is refused with the same
    message as in the file (plus the override that set it).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config: no such file {path}")
        source = parse_yaml(path.read_text(), f"config: {path}")
        if source is None:
            source = {}
    if not isinstance(source, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(source).__name__}")
    if overrides:
        source = apply_overrides(source, overrides)
        try:
            return _check(source)
        except ConfigError as err:
            raise ConfigError(f"{err}{_override_of(err, overrides)}") from None
    return _check(source)


def _check(source: dict) -> dict:
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
    _fraction_or_count(cfg)
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


__all__ = ["ConfigError", "neuron_factory", "apply_overrides", "check_split", "load_config"]
