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
                                             r"the input batch holds 1 NaN/inf values.*No update was made"):
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


# ----- what a skipped or stopped batch must leave untouched -------------------------------------------
class Frames(torch.utils.data.Dataset):
    """Random 2x8x8 frames [T, 2, 8, 8] for the CNN (batch norm); ``poison`` samples get a NaN."""

    def __init__(self, n: int, poison=()):
        g = torch.Generator().manual_seed(3)
        self.x = (torch.rand(n, 4, 2, 8, 8, generator=g) < 0.3).float()
        self.y = torch.randint(0, 4, (n,), generator=g)
        for i in poison:
            self.x[i, 1, 0, 2, 2] = math.nan
        self.classes = tuple(range(4))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_skipped_batch_leaves_batch_norm_statistics_untouched(tmp_path):
    cfg = load_config({"train": {"epochs": 2, "batch_size": 16, "nonfinite": "skip_batch"}, "out": str(tmp_path)})
    torch.manual_seed(0)
    model = sl.models.SpikingCNN(in_channels=2, classes=4, input_size=8, channels=(4,))
    trainer = Trainer(model, Frames(64, poison=[3]), Frames(16), cfg, pad_collate, quiet=True)
    with pytest.warns(RuntimeWarning, match="skipped 1 batches"):
        trainer.fit()
    buffers = dict(model.named_buffers())
    assert all(torch.isfinite(b).all() for b in buffers.values() if b.is_floating_point())
    assert int(buffers["1.num_batches_tracked"]) == 2 * 3  # the skipped batches are not counted
    assert _all_finite(tmp_path / "best.pt") and _all_finite(tmp_path / "last.pt")


def test_nan_gradient_alone_is_named(tmp_path):
    trainer = _trainer(tmp_path / "run", epochs=1)
    weight = trainer.model[3].weight
    weight.register_hook(lambda g: torch.full_like(g, math.nan))
    with pytest.raises(NonFiniteError, match=r"epoch 1, batch 1 .*the gradient of 3.weight is non-finite") as err:
        trainer.fit()
    assert "input batch" not in str(err.value) and "another process" not in str(err.value)


def _amp(trainer: Trainer) -> Trainer:
    """Mixed precision as on CUDA, with CPU autocast and the same grad scaler code."""
    trainer.amp, trainer.scaler = True, torch.amp.GradScaler("cpu")
    return trainer


def test_amp_skip_batch_continues_after_a_skip(tmp_path):
    trainer = _amp(_trainer(tmp_path / "run", poison=[5], nonfinite="skip_batch"))
    with pytest.warns(RuntimeWarning, match="skipped 1 batches"):
        history = trainer.fit()
    assert [h["skipped_batches"] for h in history] == [1, 1]
    assert _all_finite(tmp_path / "run" / "last.pt")


def test_amp_gradients_that_stay_nonfinite_stop_training(tmp_path):
    trainer = _amp(_trainer(tmp_path / "run", epochs=3))
    trainer.AMP_PATIENCE = 4
    trainer.model[3].weight.register_hook(lambda g: torch.full_like(g, math.inf))
    with pytest.raises(NonFiniteError, match="under AMP the gradients were non-finite in 4 steps in a row"):
        trainer.fit()


def test_refused_checkpoint_leaves_the_model_untouched(tmp_path):
    trainer = _trainer(tmp_path / "run", epochs=1)
    path = trainer.save("last.pt")
    state = torch.load(path, weights_only=True)
    state["model"]["3.weight"][0, 0] = math.nan
    torch.save(state, tmp_path / "nan.pt")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ValueError, match="nan.pt: the weights 3.weight hold NaN"):
        trainer.resume(tmp_path / "nan.pt")
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize("config, match", [
    ({"data": {"name": "shd", "root": "."}, "model": {"name": "cnn"}}, None),
    ({"model": {"name": "cnn", "channels": [4, 4, 4, 4, 4, 4, 4]}}, r"^model: input_size: 34 pixels"),
    ({"train": {"batch_size": 10 ** 400}}, r"^train.batch_size: expected <= 2147483647"),
    ({"train": {"seed": 2 ** 40}}, r"^train.seed: expected <= 4294967295"),
])
def test_settings_that_cannot_run_are_config_errors(tmp_path, config, match):
    from spikelab.train import trainer_from_config

    if match is None:  # SHD's (700, 1, 1) samples are too small for the CNN's poolings
        import numpy as np

        from spikelab.data.events import make_events
        from spikelab.data.formats.shd import write_shd

        events = make_events(np.arange(5), np.zeros(5), np.arange(5) * 1000, np.ones(5))
        for split in ("train", "test"):
            write_shd(tmp_path / f"shd_{split}.h5", [events, events], [0, 1])
        config["data"]["root"] = str(tmp_path)
        match = r"^model: cannot run cnn on samples of shape \(1, 1, 700\) from shd on cpu"
    with pytest.raises(ConfigError, match=match):
        trainer_from_config({**config, "out": str(tmp_path / "o")}, quiet=True)


# ----- data-parallel: a NaN in one process's share -----------------------------------------------------
def _ddp_worker(rank, world, port, out, modes):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for mode in modes:  # one process group for every mode: starting processes costs more than training
            trainer = _trainer(Path(out) / mode, epochs=1, nonfinite=mode)
            first = trainer._loader(trainer.train_set, 0, 0, shuffle=True).batch_sampler.batches()[0]
            if rank == 1:  # only this process's share of the first batch holds a NaN
                trainer.train_set.x[first[0], 2, 2] = math.nan
            try:
                trainer.fit()
                result = "finished " + str(trainer.history[0]["skipped_batches"])
            except NonFiniteError as err:
                result = "stopped " + str(err)
            weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
            torch.save({"result": result, "weights": weights}, os.path.join(out, f"{mode}-rank{rank}.pt"))
            torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.heavy(10)
def test_ddp_processes_take_the_same_branch(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    modes = ("stop", "skip_batch")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path), modes), nprocs=2, join=True)
    for mode in modes:
        r0, r1 = (torch.load(tmp_path / f"{mode}-rank{r}.pt", weights_only=True) for r in (0, 1))
        if mode == "stop":
            assert r0["result"].startswith("stopped training stopped at epoch 1, batch 1")
            # DDP averages the gradients: process 0 sees the NaN there, process 1 also in its input
            assert "input batch" not in r0["result"] and "the gradient of 1.weight is non-finite" in r0["result"]
            assert "the input batch holds 1 NaN/inf values" in r1["result"]
        else:
            assert r0["result"] == r1["result"] == "finished 1"
        assert torch.equal(r0["weights"], r1["weights"]), mode
