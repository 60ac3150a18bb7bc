"""Training: exact resume, DDP equivalence, config validation, losses."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import spikelab as sl
from spikelab.data import pad_collate
from spikelab.train import ConfigError, Trainer, load_config, losses
from tests.needs import peer


class Patterns(torch.utils.data.Dataset):
    """Spike patterns [T, F] whose class sets the rate of one group of inputs."""

    def __init__(self, n: int, seed: int, steps: int = 8, groups: int = 4, width: int = 6):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, groups, (n,), generator=g)
        rates = torch.full((n, groups, width), 0.1)
        rates[torch.arange(n), self.y] = 0.6
        self.x = torch.bernoulli(rates.flatten(1).unsqueeze(1).expand(n, steps, groups * width).contiguous(),
                                 generator=g)
        self.classes = tuple(range(groups))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _trainer(out, batch_size=16, epochs=2, dropout=0.2, seed=0):
    cfg = load_config({"train": {"epochs": epochs, "batch_size": batch_size, "lr": 5e-3, "seed": seed,
                                 "scheduler": "step", "step_size": 1, "gamma": 0.5, "rate_reg": 0.01},
                       "out": str(out)})
    torch.manual_seed(seed)
    model = sl.models.SpikingMLP(24, 4, hidden=(32,), dropout=dropout)
    return Trainer(model, Patterns(96, 1), Patterns(32, 2), cfg, pad_collate, quiet=True)


def test_resume_mid_epoch_reaches_the_same_weights(tmp_path):
    full = _trainer(tmp_path / "full")
    full.fit()
    interrupted = _trainer(tmp_path / "cut")
    interrupted.fit(max_steps=8)  # 6 steps per epoch: killed in the middle of epoch 2
    assert (tmp_path / "cut" / "last.pt").exists() and interrupted.global_step == 8
    resumed = _trainer(tmp_path / "cut")
    torch.manual_seed(12345)  # the resumed process starts from other RNG states
    resumed.resume(tmp_path / "cut" / "last.pt")
    resumed.fit()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history[-1]["test_accuracy"] == full.history[-1]["test_accuracy"]
    log = (tmp_path / "full" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,step,train_loss") and len(log) == 3
    assert (tmp_path / "full" / "best.pt").exists()


def test_checkpoint_mismatch_is_reported(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.fit(max_steps=1)
    other = Trainer(sl.models.SpikingMLP(24, 4, hidden=(8,)), Patterns(8, 1), Patterns(8, 2), trainer.cfg,
                    pad_collate, quiet=True)
    with pytest.raises(ValueError, match="does not fit this model"):
        other.resume(tmp_path / "last.pt")


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = _trainer(out, dropout=0.0)
        trainer.fit()
        if rank == 0:
            torch.save(trainer.model.state_dict(), os.path.join(out, "ddp.pt"))
        torch.distributed.barrier()  # neither process leaves the group while the other still uses it
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.heavy(14)
def test_ddp_two_processes_match_one(tmp_path):
    torch.set_num_threads(1)
    single = _trainer(tmp_path / "single", dropout=0.0)
    single.fit()
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("config, key", [
    ({"model": {"name": "transformer"}}, "model.name"),
    ({"train": {"lr": -0.1}}, "train.lr"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"optimizer": "lbfgs"}}, "train.optimizer"),
    ({"train": {"batch_size": 3.5}}, "train.batch_size"),
    ({"data": {"name": "mnist"}}, "data.name"),
    ({"data": {"name": "nmnist"}}, "data.root"),
    ({"trian": {}}, "trian"),
    ({"train": {"learning_rate": 1}}, "train.learning_rate"),
])
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        load_config(config)


def test_missing_dataset_folder_fails_before_training(tmp_path):
    from spikelab.train import trainer_from_config

    with pytest.raises(ConfigError, match=r"^data.root: .*no 'Train' folder"):
        trainer_from_config({"data": {"name": "nmnist", "root": str(tmp_path)}, "out": str(tmp_path / "o")})
    assert not (tmp_path / "o").exists()


def test_yaml_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: mlp\n  hidden: [64]\ntrain:\n  lr: 0.01\n")
    cfg = load_config(path)
    assert cfg["model"] == {"name": "mlp", "hidden": [64]} and cfg["train"]["lr"] == 0.01
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5.0e-4\n")  # YAML 1.2 numbers, not strings
    cfg = load_config(path)
    assert cfg["train"]["lr"] == 0.001 and cfg["train"]["weight_decay"] == 0.0005
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_trainer_takes_a_plain_dict_and_selects_best_on_validation(tmp_path):
    from spikelab.train import split_dataset

    train, val = split_dataset(Patterns(48, 1), val_split=0.25, seed=0)
    assert len(train) == 36 and len(val) == 12
    trainer = Trainer(sl.models.SpikingMLP(24, 4, hidden=(8,)), train, val_set=val, quiet=True,
                      cfg={"train": {"epochs": 2, "batch_size": 12}, "out": str(tmp_path)})  # not load_config'd
    history = trainer.fit()
    assert trainer.select_on == "val_accuracy" and "test_accuracy" not in history[0]
    assert trainer.best == max(r["val_accuracy"] for r in history)
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="expected a test_set or a val_set"):
        Trainer(trainer.model, train, cfg={})
    with pytest.raises(ConfigError, match=r"^train\.lr: expected a positive value"):
        Trainer(trainer.model, train, val, {"train": {"lr": -1}})


def test_best_checkpoint_follows_validation_with_a_test_set_too_and_resume_checks_the_split(tmp_path):
    from spikelab.train import split_dataset

    torch.manual_seed(1)
    train, val = split_dataset(Patterns(48, 1), val_split=0.25, seed=0)
    test = Patterns(16, 2)
    cfg = {"train": {"epochs": 4, "batch_size": 12, "lr": 0.05}, "data": {"val_split": 0.25}, "out": str(tmp_path)}
    trainer = Trainer(sl.models.SpikingMLP(24, 4, hidden=(8,)), train, test, cfg, val_set=val, quiet=True)
    history = trainer.fit()
    assert {"val_accuracy", "test_accuracy"} <= set(history[0])
    val_acc = [r["val_accuracy"] for r in history]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert len(best["history"]) == val_acc.index(max(val_acc)) + 1  # the first epoch of best validation
    assert best["select_on"] == "val_accuracy" and best["best"] == max(val_acc)
    # resuming on other samples (another hold-out, or best chosen on test) is refused, naming why
    other = Trainer(sl.models.SpikingMLP(24, 4, hidden=(8,)), train, test, dict(cfg, data={"val_split": 0.5}),
                    val_set=val, quiet=True)
    with pytest.raises(ValueError, match=r"last\.pt: .*data\.val_split: 0\.25 there, 0\.5 here"):
        other.resume(tmp_path / "last.pt")
    no_val = Trainer(sl.models.SpikingMLP(24, 4, hidden=(8,)), train, test, cfg, quiet=True)
    with pytest.raises(ValueError, match="chosen on val_accuracy there, on test_accuracy here"):
        no_val.resume(tmp_path / "last.pt")
    same = Trainer(sl.models.SpikingMLP(24, 4, hidden=(8,)), train, test, cfg, val_set=val, quiet=True)
    same.resume(tmp_path / "last.pt")
    assert same.best == max(val_acc) and len(same.history) == 4


def test_losses_on_hand_inputs():
    out = torch.zeros(4, 2, 3)
    out[:, 0, 1] = 2.0
    y = torch.tensor([1, 0])
    ce = losses.rate_ce(out, y)
    expected = (torch.nn.functional.cross_entropy(torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), y))
    torch.testing.assert_close(ce, expected)
    torch.testing.assert_close(losses.tet(out, y), expected)  # the same every step
    torch.testing.assert_close(losses.membrane_ce(out, y), torch.nn.functional.cross_entropy(out.sum(0), y))
    counts = torch.zeros(4, 1, 2)
    counts[:, 0, 0] = 0.8
    counts[:, 0, 1] = 0.2
    assert losses.count_mse(counts, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-7)


def test_prefix_ce_is_the_mean_cross_entropy_of_the_running_means():
    # two samples, two classes, three steps; the running means worked out by hand
    out = torch.tensor([[[2.0, 0.0], [0.0, 0.0]],
                        [[0.0, 0.0], [0.0, 3.0]],
                        [[1.0, 0.0], [0.0, 0.0]]])
    y = torch.tensor([0, 1])
    # sample 0: means [2, 0], [1, 0], [1, 0]; sample 1: [0, 0], [0, 1.5], [0, 1]
    ce = lambda margin: math.log1p(math.exp(-margin))  # noqa: E731  two classes, the label ahead by margin
    expected = (ce(2) + ce(1) + ce(1) + ce(0) + ce(1.5) + ce(1)) / 6
    assert losses.prefix_ce(out, y).item() == pytest.approx(expected, rel=1e-6)
    # the mean over t of the rate loss of the first t steps, on random outputs
    z = torch.randn(7, 5, 4)
    labels = torch.tensor([0, 3, 1, 1, 2])
    by_prefix = torch.stack([losses.rate_ce(z[:t], labels) for t in range(1, 8)]).mean()
    torch.testing.assert_close(losses.prefix_ce(z, labels), by_prefix)
    assert losses.prefix_ce(z.bfloat16(), labels).dtype == torch.float32  # no half-precision step counts
    assert losses.LOSSES["prefix_ce"] is losses.prefix_ce
    from spikelab.train import config

    assert set(config.LOSSES) == set(losses.LOSSES)  # every loss can be named in a config file


def test_a_config_trains_with_prefix_ce(tmp_path):
    cfg = load_config({"train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "loss": "prefix_ce"},
                       "out": str(tmp_path)})
    torch.manual_seed(0)
    trainer = Trainer(sl.models.SpikingMLP(24, 4, hidden=(32,)), Patterns(96, 1), Patterns(64, 2), cfg, pad_collate,
                      quiet=True)
    assert trainer.loss_fn is losses.prefix_ce
    history = trainer.fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] >= 0.8  # four classes: chance 0.25 (seeds 0-2 reach 1.0)


def test_config_path_for_shd_layout(tmp_path):
    from spikelab.data import make_events, write_shd
    from spikelab.train import trainer_from_config

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        labels = rng.integers(0, 20, n)
        samples = [make_events(rng.integers(0, 700, 50) // 35 * 35 + lab, np.zeros(50, int),
                               np.sort(rng.integers(0, 800_000, 50)), np.ones(50, int)) for lab in labels]
        write_shd(tmp_path / f"shd_{split}.h5", samples, labels)
    trainer = trainer_from_config({"model": {"name": "mlp", "hidden": [16]},
                                   "data": {"name": "shd", "root": str(tmp_path), "time_bins": 5, "cache": False},
                                   "train": {"epochs": 1, "batch_size": 8}, "out": str(tmp_path / "o")}, quiet=True)
    history = trainer.fit()
    assert len(history) == 1 and 0.0 <= history[0]["test_accuracy"] <= 1.0


def test_tensorboard_logs(tmp_path):
    peer("tensorboard")
    cfg = load_config({"train": {"epochs": 1, "batch_size": 16, "tensorboard": True}, "out": str(tmp_path)})
    trainer = Trainer(sl.models.SpikingMLP(24, 4, hidden=(8,)), Patterns(32, 1), Patterns(16, 2), cfg, pad_collate,
                      quiet=True)
    trainer.fit()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert files
    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    assert {"test_accuracy", "train_loss", "lr"} <= set(acc.Tags()["scalars"])
