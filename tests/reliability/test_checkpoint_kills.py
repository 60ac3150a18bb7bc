"""kill -9 while checkpoints are written: ``last.pt`` is always a whole, loadable, finite
checkpoint (the old one or the new one), and the temporary files of killed writers are removed."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import signal
import time

import torch

import spikelab as sl
from spikelab.data import pad_collate
from spikelab.train import Trainer, load_config


def _trainer(out) -> Trainer:
    cfg = load_config({"out": str(out)})
    return Trainer(sl.models.SpikingMLP(64, 4, hidden=(256, 256)), [], [], cfg, pad_collate, quiet=True)


def _write_forever(out, ready) -> None:
    torch.set_num_threads(1)
    trainer = _trainer(out)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.zero_()
    while True:
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.add_(1.0)
        trainer.global_step += 1
        trainer.save("last.pt")
        ready.set()


def test_kill_9_during_checkpoint_writes(tmp_path):
    # imports that take seconds on a cold machine (torch._dynamo for the optimiser, the data
    # package for the lock helpers) happen once here, before forking
    warm = _trainer(tmp_path / "warm")
    warm.save("last.pt")
    shutil.rmtree(tmp_path / "warm")
    params = [name for name, _ in warm.model.named_parameters()]
    ctx = mp.get_context("fork")
    rng = random.Random(0)
    steps = []
    for _ in range(20):
        ready = ctx.Event()
        writer = ctx.Process(target=_write_forever, args=(tmp_path, ready))
        writer.start()
        assert ready.wait(60), "the writer wrote no checkpoint in 60 s"
        time.sleep(rng.uniform(0.0, 0.2))  # then kill it at a random point of its writing loop
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        # every weight was moved as many times as the step count says: one whole checkpoint
        step = state["global_step"]
        assert step >= 1 and all(torch.all(state["model"][name] == step) for name in params)
        steps.append(step)
    assert len(steps) == 20
    _trainer(tmp_path).save("last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the killed writers' temporary files are gone
