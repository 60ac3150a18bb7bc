"""The researcher's day: `spikelab train --set`, a validation hold-out, subsets, a train-only
dataset folder and the training curve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from spikelab import viz
from spikelab.cli import main
from spikelab.data import make_events, write_atis_bin
from spikelab.train import ConfigError, load_config, make_splits, split_dataset, split_indices

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES, PER_CLASS = (0, 1, 2), 6


def _train_only_nmnist(root):
    """An N-MNIST folder with ``Train/<digit>/*.bin`` and no ``Test/``: 6 short recordings of each of
    three digits, the digit setting where the events fall."""
    rng = np.random.default_rng(0)
    for digit in CLASSES:
        folder = root / "Train" / str(digit)
        folder.mkdir(parents=True)
        for k in range(PER_CLASS):
            n = 40
            write_atis_bin(folder / f"{k:05d}.bin", make_events(
                digit * 10 + rng.integers(0, 8, n), rng.integers(0, 34, n), np.sort(rng.integers(0, 100_000, n)),
                rng.integers(0, 2, n)))
    return root


@pytest.fixture
def run(tmp_path):
    """(config file, dataset root, output folder) of a tiny MLP on a train-only N-MNIST folder."""
    root = _train_only_nmnist(tmp_path / "nmnist")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "mlp", "hidden": [8]},
        "data": {"name": "nmnist", "root": str(root), "time_bins": 2, "cache": False},
        "train": {"epochs": 3, "batch_size": 8, "scheduler": "none"},
        "out": str(tmp_path / "run")}))
    return cfg, root, tmp_path / "run"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_train_on_a_train_only_folder_with_val_split_writes_the_curve(run, capsys):
    cfg, root, out = run
    assert main(["train", str(cfg), "--quiet", "--set", "train.epochs=1", "--set", "data.val_split=0.2"]) == 0
    printed = capsys.readouterr().out
    assert "validation accuracy" in printed and "test accuracy" not in printed
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1]  # the override beat the file's 3 epochs
    assert 0 <= history[0]["val_accuracy"] <= 1 and "test_accuracy" not in history[0]
    png = (out / "training_curve.png").read_bytes()
    assert png[:8] == PNG and len(png) > 2000
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    # the checkpoint's configuration rebuilds the same hold-out: eval defaults to it
    assert main(["eval", str(out / "best.pt")]) == 0
    assert "val accuracy" in capsys.readouterr().out
    assert main(["eval", str(out / "best.pt"), "--split", "test"]) == 2
    assert "no test split" in _one_line_error(capsys)
    # a moved dataset: point the checkpoint's configuration at it
    moved = root.parent / "moved"
    root.rename(moved)
    assert main(["eval", str(out / "best.pt")]) == 2
    assert "data.root" in _one_line_error(capsys)
    assert main(["eval", str(out / "best.pt"), "--set", f"data.root={moved}"]) == 0
    assert "val accuracy" in capsys.readouterr().out
    assert main(["eval", str(out / "best.pt"), "--set", "data.val_split=2"]) == 2
    assert "data.val_split: expected a fraction" in _one_line_error(capsys)


def test_missing_test_folder_says_to_set_val_split(run, capsys):
    cfg, _, out = run
    assert main(["train", str(cfg), "--quiet", "--set", "train.epochs=1"]) == 2
    err = _one_line_error(capsys)
    assert "data.root: " in err and "no 'Test' folder" in err and "set data.val_split" in err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("override, file_value, message", [
    ("train.epochs=two", {"train": {"epochs": "two"}}, "train.epochs: expected an integer, got 'two'"),
    ("train.batch_size=3.5", {"train": {"batch_size": 3.5}}, "train.batch_size: expected an integer, got 3.5"),
    ("train.lr=-1e-3", {"train": {"lr": -0.001}}, "train.lr: expected a positive value, got -0.001"),
    ("data.val_split=1.5", {"data": {"val_split": 1.5}}, "data.val_split: expected a fraction between 0 and 1"),
    ("data.subset=0", {"data": {"subset": 0}}, "data.subset: expected a number of training samples >= 1"),
    ("train.optimizer=lbfgs", {"train": {"optimizer": "lbfgs"}}, "train.optimizer: unknown value 'lbfgs'"),
])
def test_override_errors_match_the_yaml_file(tmp_path, override, file_value, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(file_value))
    with pytest.raises(ConfigError) as from_file:
        load_config(path)
    with pytest.raises(ConfigError) as from_override:
        load_config({}, [override])
    assert str(from_file.value).startswith(message)
    assert str(from_override.value) == f"{from_file.value} (from --set {override})"


def test_overrides_are_typed_and_later_ones_win():
    cfg = load_config({"train": {"epochs": 7}}, [
        "train.epochs=2", "train.lr=1e-3", "model.hidden=[64, 32]", "model.name=mlp", "train.grad_clip=null",
        "train.amp=true", "data.val_split=0.2", "data.subset=0.5", "out=runs/x", "train.epochs=4"])
    assert cfg["train"]["epochs"] == 4 and cfg["train"]["lr"] == 0.001 and isinstance(cfg["train"]["lr"], float)
    assert cfg["model"] == {"name": "mlp", "hidden": [64, 32]}
    assert cfg["train"]["grad_clip"] is None and cfg["train"]["amp"] is True
    assert cfg["data"]["val_split"] == 0.2 and cfg["data"]["subset"] == 0.5 and cfg["out"] == "runs/x"


def test_unknown_override_key_lists_the_known_ones(run, capsys):
    with pytest.raises(ConfigError, match=r"^train\.learning_rate: unknown key; expected one of \[.*'lr'.*\]"):
        load_config({}, ["train.learning_rate=0.1"])
    with pytest.raises(ConfigError, match=r"^data\.val: unknown key; expected one of \[.*'subset'.*'val_split'"):
        load_config({}, ["data.val=0.1"])
    with pytest.raises(ConfigError, match=r"^train\.epochs: a value, not a section"):
        load_config({}, ["train.epochs.max=3"])
    cfg, _, _ = run
    assert main(["train", str(cfg), "--quiet", "--set", "trian.epochs=1"]) == 2
    err = _one_line_error(capsys)
    assert "trian: unknown key; expected one of ['data', 'model', 'out', 'train'] (from --set trian.epochs=1)" in err


@pytest.mark.parametrize("bad", ["train.epochs", "=2", "train..epochs=2", "model.hidden=[64"])
def test_malformed_set_is_a_clear_error_with_status_2(run, capsys, bad):
    cfg, _, out = run
    assert main(["train", str(cfg), "--quiet", "--set", bad]) == 2
    err = _one_line_error(capsys)
    assert bad in err
    assert ("expected KEY=VALUE" in err) if "[" not in bad else ("model.hidden: not valid YAML" in err)
    assert not out.exists()


def test_subset_size():
    train, val = split_indices(100, subset=30, seed=0)
    assert val is None and len(train) == 30 and len(set(train)) == 30
    train, val = split_indices(100, val_split=0.2, subset=0.25, seed=0)
    assert len(val) == 20 and len(train) == 20  # a quarter of the 80 left for training
    labels = np.repeat([0, 1, 2, 3], 25)
    train, _ = split_indices(100, subset=40, seed=3, labels=labels)
    assert np.bincount(labels[train]).tolist() == [10, 10, 10, 10]  # stratified
    with pytest.raises(ConfigError, match=r"^data\.subset: 90 training samples asked, but the training set holds 80"):
        split_indices(100, val_split=0.2, subset=90)
    assert len(split_indices(100, subset=np.int64(7))[0]) == 7  # a NumPy integer is a count
    # the public function checks its arguments as the configuration does
    for bad in (dict(val_split=20), dict(val_split=-0.5), dict(val_split=1.0)):
        with pytest.raises(ConfigError, match="^data.val_split: expected a fraction"):
            split_indices(100, **bad)
    for bad in (dict(subset=-3), dict(subset=0), dict(subset=True), dict(subset=1.5), dict(subset="10")):
        with pytest.raises(ConfigError, match="^data.subset: expected"):
            split_indices(100, **bad)


def test_dataset_view_passes_on_only_its_own_samples():
    class Labelled:
        targets = np.arange(10) % 3
        samples = [(f"f{i}", i % 3) for i in range(10)]
        classes = ["a", "b", "c"]

        def __len__(self):
            return 10

        def __getitem__(self, i):
            return i, int(self.targets[i])

    train, val = split_dataset(Labelled(), val_split=0.3, seed=0)
    assert val.targets.tolist() == [Labelled.targets[i] for i in val.indices]
    assert val.samples == [Labelled.samples[i] for i in val.indices]
    assert len(train.targets) == len(train) == 7 and train.classes == ["a", "b", "c"]


def test_val_split_is_deterministic_stratified_and_disjoint(run):
    _, root, out = run
    base = {"model": {"name": "mlp"}, "data": {"name": "nmnist", "root": str(root), "cache": False,
                                               "val_split": 0.5}, "out": str(out)}
    a, b = make_splits(load_config(base)), make_splits(load_config(base))
    assert a.test is None and len(a.val) == 9 and len(a.train) == 9
    assert a.val.indices.tolist() == b.val.indices.tolist() and a.train.indices.tolist() == b.train.indices.tolist()
    assert not set(a.train.indices) & set(a.val.indices)
    assert sorted([*a.train.indices, *a.val.indices]) == list(range(len(CLASSES) * PER_CLASS))
    labels = [a.val.events(i)[1] for i in range(len(a.val))]
    assert sorted(np.bincount(labels).tolist()) == [3, 3, 3]  # half of each digit held out
    other = make_splits(load_config(base, ["train.seed=1"]))
    assert other.val.indices.tolist() != a.val.indices.tolist()
    # a subset of the training part leaves the held-out samples as they were
    small = make_splits(load_config(base, ["data.subset=3"]))
    assert small.val.indices.tolist() == a.val.indices.tolist() and len(small.train) == 3
    assert set(small.train.indices) <= set(a.train.indices)
    frames, label = small.train[0]
    assert frames.shape == (10, 2, 34, 34) and label in CLASSES  # the view yields what the dataset does


def test_training_curve_from_history_json(tmp_path):
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.3 * e, "val_loss": 2.2 / e,
                "val_accuracy": acc, "test_loss": 2.3 / e, "test_accuracy": 0.25 * e}
               for e, acc in ((1, 0.3), (2, 0.7), (3, 0.6))]
    (tmp_path / "history.json").write_text(json.dumps(history))
    fig = viz.training_curve(tmp_path / "history.json", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG
    acc, loss = fig.axes
    assert [line.get_label() for line in loss.get_lines()] == ["train", "validation", "test"]
    assert loss.get_lines()[0].get_xydata().tolist() == [[1, 2.0], [2, 1.0], [3, 2.0 / 3]]
    best = [line for line in acc.get_lines() if line.get_label().startswith("best.pt")]
    assert best[0].get_label() == "best.pt (epoch 2)"  # the best validation accuracy
    assert viz.training_curve(tmp_path).axes[0].get_ylabel() == "accuracy"  # a run folder works too
    (tmp_path / "bad.json").write_text(json.dumps({"epochs": 3}))
    with pytest.raises(ValueError, match="bad.json: expected a non-empty list of per-epoch records"):
        viz.training_curve(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        viz.training_curve(tmp_path / "nope.json")
