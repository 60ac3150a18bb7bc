"""Nothing trained goes silently to NaN: settings checked before training, non-finite batches
stopped or skipped, checkpoints never hold a non-finite weight, logs right after a resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

import spikelab as sl
from spikelab.cli import main
from spikelab.data import pad_collate
from spikelab.train import ConfigError, NonFiniteError, Trainer, load_config


class Patterns(torch.utils.data.Dataset):
    """Spike patterns [T, F]: the class raises the rate of one group of inputs. ``poison`` puts
    ``value`` into those samples."""

    def __init__(self, n: int, seed: int, poison=(), value=math.inf):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        rates = torch.full((n, 4, 6), 0.1)
        rates[torch.arange(n), self.y] = 0.6
        self.x = torch.bernoulli(rates.flatten(1).unsqueeze(1).expand(n, 8, 24).contiguous(), generator=g)
        for i in poison:
            self.x[i, 3, 5] = value
        self.classes = tuple(range(4))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _trainer(out: Path, poison=(), epochs=2, **train) -> Trainer:
    cfg = load_config({"train": {"epochs": epochs, "batch_size": 16, "lr": 5e-3, "seed": 0, **train},
                       "out": str(out)})
    torch.manual_seed(0)
    model = sl.models.SpikingMLP(24, 4, hidden=(32,))
    return Trainer(model, Patterns(96, 1, poison), Patterns(32, 2), cfg, pad_collate, quiet=True)


def _all_finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)
    return all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


# ----- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("lr", math.nan), ("lr", math.inf), ("grad_clip", math.nan),
                                        ("grad_clip", math.inf), ("gamma", math.nan), ("weight_decay", math.inf),
                                        ("target_rate", 2.0), ("rate_reg", -math.inf)])
def test_nonfinite_settings_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^train\.{key}: expected"):
        load_config({"train": {key: value}})


@pytest.mark.parametrize("text, key", [("lr: .nan", "train.lr"), ("lr: .inf", "train.lr"),
                                       ("grad_clip: .nan", "train.grad_clip")])
def test_cli_refuses_nonfinite_yaml_before_training(tmp_path, capsys, text, key):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"train:\n  {text}\nout: {tmp_path / 'run'}\n")
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert f"{key}: expected a finite number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, message", [({"name": "mlp", "hidden": [-5]}, "hidden: expected a list of positive"),
                                            ({"name": "cnn", "channels": [16, 0]}, "channels: expected"),
                                            ({"name": "cnn", "dropout": 1.5}, "dropout: expected a probability")])
def test_bad_model_sizes_are_config_errors(tmp_path, model, message):
    from spikelab.train import trainer_from_config

    with pytest.raises(ConfigError, match=rf"^model: {message}"):
        trainer_from_config({"model": model, "out": str(tmp_path / "o")}, quiet=True)


def test_absurd_time_bins_refused_with_the_memory_it_needs(tmp_path):
    from spikelab.train import trainer_from_config

    with pytest.raises(ConfigError, match=r"^data.time_bins, train.batch_size: .*time_bins=100000000.* GiB"):
        trainer_from_config({"data": {"time_bins": 100_000_000}, "out": str(tmp_path / "o")}, quiet=True)


def test_output_path_that_is_a_file_is_refused(tmp_path):
    from spikelab.train import trainer_from_config

    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^out: .*taken exists and is not a folder"):
        trainer_from_config({"out": str(tmp_path / "taken")}, quiet=True)
    with pytest.raises(ConfigError, match=r"^out: cannot create .*taken is a file"):
        trainer_from_config({"out": str(tmp_path / "taken" / "run")}, quiet=True)


# ----- non-finite values during training ---------------------------------------------------------
def test_inf_input_stops_training_naming_the_step_and_layer(tmp_path):
    good = _trainer(tmp_path / "run", epochs=1)
    good.fit()
    before = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    # epoch 2 meets a poisoned sample; the checkpoint of epoch 1 must survive untouched
    bad = _trainer(tmp_path / "run", poison=[int(i) for i in range(96)][::17], epochs=2)
    bad.resume(tmp_path / "run" / "last.pt")
    with pytest.raises(NonFiniteError, match=r"training stopped at epoch 2, batch 1 \(global step 7, process 0\): "
                                             r"the input batch holds 1 NaN/inf values.*No weight was updated"):
        bad.fit()
    after = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(p).all() for p in bad.model.parameters())  # no step was taken with it


def test_skip_batch_keeps_training_and_checkpoints_finite(tmp_path):
    trainer = _trainer(tmp_path / "run", poison=[5, 40], nonfinite="skip_batch")
    with pytest.warns(RuntimeWarning, match="skipped 2 batches with NaN/inf"):
        history = trainer.fit()
    assert history[0]["skipped_batches"] == 2 and history[1]["skipped_batches"] == 2
    assert math.isfinite(history[-1]["train_loss"])
    assert _all_finite(tmp_path / "run" / "last.pt") and _all_finite(tmp_path / "run" / "best.pt")


def test_nan_input_stops_the_cli_with_exit_1(tmp_path):
    trainer = _trainer(tmp_path / "run", poison=[0, 1, 2, 3], epochs=1)
    trainer.train_set.x[0, 0, 0] = math.nan
    with pytest.raises(NonFiniteError, match="epoch 1, batch"):
        trainer.fit()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_overflowing_layer_is_named(tmp_path):
    trainer = _trainer(tmp_path / "run", epochs=1)
    with torch.no_grad():
        trainer.model[1].weight.fill_(3e38)  # finite weights whose sums overflow to inf
    with pytest.raises(NonFiniteError, match=r"first layer to turn finite inputs into NaN/inf is 1 \(Linear\)"):
        trainer.fit()


def test_exploding_lr_never_writes_nonfinite_weights(tmp_path):
    # SGD at a huge (finite) learning rate overflows the weights to inf within a few steps
    trainer = _trainer(tmp_path / "run", optimizer="sgd", lr=1e38, epochs=3)
    with pytest.raises(NonFiniteError, match="training stopped at epoch 1"):
        trainer.fit()
    for name in ("last.pt", "best.pt"):
        path = tmp_path / "run" / name
        assert not path.exists() or _all_finite(path)


def test_save_refuses_nonfinite_weights(tmp_path):
    trainer = _trainer(tmp_path / "run")
    trainer.save("last.pt")
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = math.nan
    with pytest.raises(NonFiniteError, match=r"last.pt not written: the weights 1.weight hold NaN"):
        trainer.save("last.pt")
    assert _all_finite(tmp_path / "run" / "last.pt")


# ----- resume ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [3, 6, 8])  # mid-epoch, at the very end of epoch 1, in epoch 2
def test_logs_after_resume_match_the_uninterrupted_run(tmp_path, stop):
    full = _trainer(tmp_path / "full")
    full.fit()
    cut = _trainer(tmp_path / "cut", checkpoint_every=1)
    cut.fit(max_steps=stop)
    resumed = _trainer(tmp_path / "cut")
    resumed.resume(tmp_path / "cut" / "last.pt")
    resumed.fit()
    keys = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")
    for a, b in zip(full.history, resumed.history, strict=True):
        for k in keys:
            assert a[k] == pytest.approx(b[k], rel=1e-6), (k, a, b)
        assert b["train_loss"] > 0
    full_log = (tmp_path / "full" / "log.csv").read_text().splitlines()
    cut_log = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert len(cut_log) == len(full_log) == 3 and cut_log[0] == full_log[0]
    assert [r["epoch"] for r in __import__("json").loads((tmp_path / "cut" / "history.json").read_text())] == [1, 2]


# ----- checkpoint files -----------------------------------------------------------------------------
def _cli_resume(tmp_path, checkpoint: Path, capsys) -> str:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"epochs": 1}, "out": str(tmp_path / "run")}))
    assert main(["train", str(cfg), "--quiet", "--resume", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("kind, expected", [
    ("truncated", "truncated or damaged"), ("random", "not a torch checkpoint"),
    ("empty", "not a torch checkpoint: .*an empty file"), ("wrong keys", "lacks optimizer"),
    ("a tensor", "got a file holding a Tensor"), ("nan weights", "hold NaN or infinite values")])
def test_bad_checkpoints_get_one_line_naming_the_file(tmp_path, capsys, kind, expected):
    good = _trainer(tmp_path / "src", epochs=1)
    path = good.save("last.pt")
    bad = tmp_path / "bad.pt"
    if kind == "truncated":
        bad.write_bytes(path.read_bytes()[:3000])
    elif kind == "random":
        bad.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "wrong keys":
        torch.save({"model": good.model.state_dict()}, bad)
    elif kind == "a tensor":
        torch.save(torch.ones(3), bad)
    else:
        state = torch.load(path, weights_only=True)
        state["model"]["1.weight"][0, 0] = math.nan
        torch.save(state, bad)
    trainer = _trainer(tmp_path / "run")
    with pytest.raises(ValueError, match=rf"bad.pt: .*{expected}"):
        trainer.resume(bad)
    if kind in ("truncated", "random", "empty"):  # the CLI path: one line, exit 2
        assert "bad.pt" in _cli_resume(tmp_path, bad, capsys)
