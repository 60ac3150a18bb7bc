"""BPTT training over ``[T, B, ...]`` batches: metrics, logs, exact-resume checkpoints, DDP.

Batches follow a permutation seeded by ``(seed, epoch)``, so a run resumed from a checkpoint
written mid-epoch sees exactly the batches the interrupted run would have seen; together with
the saved model, optimiser, scheduler and RNG states it ends with the same weights. Under
``torch.distributed`` (``torchrun``) every global batch is split evenly across processes and
DDP averages the gradients: the same update as one process on the whole batch.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from spikelab.data.locks import remove_dead_temps, replaced_atomically
from spikelab.neurons.base import BaseNeuron
from spikelab.train.losses import LOSSES


def _dist():
    return torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None


def rank_and_world() -> tuple[int, int]:
    d = _dist()
    return (d.get_rank(), d.get_world_size()) if d else (0, 1)


class EpochBatches(torch.utils.data.Sampler):
    """This process's share of every global batch of a ``(seed, epoch)``-seeded permutation,
    from global batch ``skip`` on."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, skip: int = 0, shuffle: bool = True):
        self.size, self.batch_size, self.seed, self.epoch, self.skip, self.shuffle = (
            size, batch_size, seed, epoch, skip, shuffle)
        self.rank, self.world = rank_and_world()
        if batch_size % self.world:
            raise ValueError(f"train.batch_size: {batch_size} does not split evenly over {self.world} processes")

    def batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per = self.batch_size // self.world
        out = []
        for b in range(math.ceil(self.size / self.batch_size)):
            chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.world == 1:
                out.append(chunk)
            elif not self.shuffle:
                out.append(chunk[self.rank::self.world])  # evaluation: every sample, on some process
            elif len(chunk) == self.batch_size:
                out.append(chunk[self.rank * per:(self.rank + 1) * per])
            # training drops an uneven last batch: it cannot be split into equal shares
        return [b for b in out[self.skip:] if b]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class RateMonitor:
    """Mean firing rate of every spiking neuron layer during a forward pass (kept in the graph
    for the rate regulariser). It uses the neurons' ``rate_sink``, not forward hooks, so the
    neurons still run in fused batch-norm/pooling blocks."""

    def __init__(self, model: nn.Module) -> None:
        self.rates: dict[str, torch.Tensor] = {}
        self.neurons = {name: m for name, m in model.named_modules() if isinstance(m, BaseNeuron)}
        for name, m in self.neurons.items():
            m.rate_sink = self._sink(name)

    def _sink(self, name: str) -> Callable:
        def sink(rate: torch.Tensor) -> None:
            self.rates[name] = rate
        return sink

    def remove(self) -> None:
        for m in self.neurons.values():
            m.rate_sink = None


class NonFiniteError(FloatingPointError):
    """Training met a NaN or infinite value; the message names the step and where it appeared."""


def nonfinite_parameters(tensors: dict) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or infinite value."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]


def _all_finite(tensors) -> bool:
    """Every tensor free of NaN/inf, with one synchronisation."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


def _finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    return True


def first_nonfinite_layer(model: nn.Module, x: torch.Tensor, amp: bool = False) -> Optional[str]:
    """The first module (in execution order) that turns finite inputs into a NaN or infinite
    output, run on a copy of ``model`` so that its state (batch-norm statistics) is untouched;
    None when the values only come in with the input."""
    probe = copy.deepcopy(model)
    found: list[str] = []

    def hook(name):
        def check(module, inputs, output):
            if not found and _finite(inputs) and not _finite(output):
                found.append(f"{name} ({type(module).__name__})")
        return check

    for name, module in probe.named_modules():
        if name and not any(True for _ in module.children()):
            module.register_forward_hook(hook(name))
    with torch.no_grad(), torch.autocast(x.device.type, enabled=amp):
        probe(x)
    return found[0] if found else None


_EPOCH_PROGRESS = {"seen": 0, "loss_sum": 0.0, "correct": 0.0, "rate_sum": {}, "seconds": 0.0, "skipped": 0}


def capture_rng() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # numpy's key array as a tensor: the checkpoint then loads without unpickling arbitrary objects
    return {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                      gauss), "python": random.getstate()}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


class Trainer:
    """Fit ``model`` on ``train_set``, evaluating after every epoch.

    ``cfg`` is a configuration: a dict in the shape of the YAML file (checked and completed by
    :func:`spikelab.train.load_config`; None: every default). ``collate`` turns samples into
    ``(x [T, B, ...], labels, lengths)`` (default :func:`spikelab.data.pad_collate`). After each
    epoch the model is evaluated on ``val_set`` and ``test_set`` (either may be None, not both);
    ``best.pt`` holds the epoch with the best validation accuracy, or test accuracy without a
    ``val_set``. ``data.val_split``/``data.subset`` are applied by
    :func:`~spikelab.train.make_splits` (and ``trainer_from_config``); for your own datasets,
    :func:`~spikelab.train.split_dataset` makes the parts. ``out_dir`` receives ``best.pt``,
    ``last.pt``, ``log.csv``, ``history.json`` and ``training_curve.png``.
    """

    def __init__(self, model: nn.Module, train_set, test_set=None, cfg: Optional[dict] = None,
                 collate: Optional[Callable] = None, out_dir: Optional[Path] = None, quiet: bool = False,
                 val_set=None) -> None:
        from spikelab.train.config import load_config

        if test_set is None and val_set is None:
            raise ValueError("Trainer: expected a test_set or a val_set to evaluate on after every epoch")
        if collate is None:
            from spikelab.data.collate import pad_collate as collate
        cfg = load_config(cfg if cfg is not None else {})  # idempotent on a checked configuration
        self.cfg = cfg
        self.t = cfg["train"]
        self.collate = collate
        self.train_set, self.test_set, self.val_set = train_set, test_set, val_set
        self.select_on = "val_accuracy" if val_set is not None else "test_accuracy"  # chooses best.pt
        self.out = Path(out_dir or cfg["out"])
        self.quiet = quiet
        self.rank, self.world = rank_and_world()
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else \
            torch.device("cpu")
        self.model = model.to(self.device)
        self.net = model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(model)
        params = [p for p in model.parameters() if p.requires_grad]
        if self.t["optimizer"] == "sgd":
            self.opt = torch.optim.SGD(params, lr=self.t["lr"], momentum=0.9, weight_decay=self.t["weight_decay"])
        elif self.t["optimizer"] == "adamw":
            self.opt = torch.optim.AdamW(params, lr=self.t["lr"], weight_decay=self.t["weight_decay"])
        else:
            self.opt = torch.optim.Adam(params, lr=self.t["lr"], weight_decay=self.t["weight_decay"])
        if self.t["scheduler"] == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.t["epochs"])
        elif self.t["scheduler"] == "step":
            self.sched = torch.optim.lr_scheduler.StepLR(self.opt, self.t["step_size"], self.t["gamma"])
        else:
            self.sched = None
        self.loss_fn = LOSSES[self.t["loss"]]
        self.amp = bool(self.t["amp"]) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = -1.0
        self.history: list[dict] = []
        self.progress = copy.deepcopy(_EPOCH_PROGRESS)  # sums of the epoch in progress (saved for resume)
        self._amp_skips, self._amp_scale = 0, float("inf")

    # ----- checkpoints ----------------------------------------------------------------------------
    CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step_in_epoch",
                       "global_step", "best", "history", "config")

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched else None, "scaler":
                self.scaler.state_dict() if self.scaler else None, "rng": capture_rng(), "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "global_step": self.global_step, "best": self.best,
                "history": self.history, "config": self.cfg, "progress": self.progress, "select_on": self.select_on}

    def save(self, name: str) -> Optional[Path]:
        """Write a checkpoint atomically (on process 0); refuses (NonFiniteError, on every process
        together) weights or buffers that hold NaN/inf, so a good checkpoint is never replaced by
        a broken one."""
        bad = nonfinite_parameters(self.model.state_dict())
        if self.world > 1:  # batch-norm statistics may differ between processes: refuse together
            flag = torch.tensor([float(bool(bad))], device=self.device)
            _dist().all_reduce(flag, op=_dist().ReduceOp.MAX)
            if flag.item() and not bad:
                bad = ["(on another process)"]
        if bad:
            raise NonFiniteError(f"{self.out / name} not written: the weights {', '.join(bad[:5])} hold NaN or "
                                 "infinite values (the last good checkpoint is kept)")
        if self.rank != 0:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / name
        remove_dead_temps(self.out.glob(f".{name}.tmp*"))  # left by writers that were killed
        with replaced_atomically(path) as tmp:
            torch.save(self.state(), tmp)
        return path

    def resume(self, path, trust: bool = False) -> None:
        """Continue exactly where the checkpoint ``path`` left off (``trust``: see :func:`spikelab.files.load`)."""
        from spikelab import files

        # on the CPU: the RNG states must stay there; load_state_dict moves the rest to the model's device
        state = files.load(path, trust=trust, map_location="cpu", what="checkpoint")
        files.expect_keys(state, path, self.CHECKPOINT_KEYS, "a spikelab training checkpoint (last.pt or best.pt)")
        self._check_same_samples(state, path)
        if not isinstance(state["model"], dict):
            raise ValueError(f"{path}: 'model' holds a {type(state['model']).__name__}, expected a state_dict")
        bad = nonfinite_parameters(state["model"])
        if bad:
            raise ValueError(f"{path}: the weights {', '.join(bad[:5])} hold NaN or infinite values")
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: the checkpoint does not fit this model and optimiser "
                             f"({str(err).splitlines()[0]})") from None
        if self.sched and state["scheduler"]:
            self.sched.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.best, self.history = state["best"], state["history"]
        progress = state.get("progress")  # absent in checkpoints of older versions
        self.progress = copy.deepcopy(progress) if isinstance(progress, dict) and self.step_in_epoch else \
            copy.deepcopy(_EPOCH_PROGRESS)

    def _check_same_samples(self, state: dict, path) -> None:
        """Refuse to resume on other samples than the checkpoint's run: its split settings and the
        score that chose best.pt must be this run's (else the best score compares two splits)."""
        saved = state["config"] if isinstance(state["config"], dict) else {}
        keys = (("data", "val_split"), ("data", "subset"), ("train", "seed"))
        differ = [f"{a}.{b}: {saved.get(a, {}).get(b)!r} there, {self.cfg[a][b]!r} here" for a, b in keys
                  if isinstance(saved.get(a), dict) and saved[a].get(b) != self.cfg[a][b]]
        chosen = state.get("select_on")  # absent in checkpoints of older versions
        if chosen is not None and chosen != self.select_on:
            differ.append(f"best.pt chosen on {chosen} there, on {self.select_on} here")
        if differ:
            raise ValueError(f"{path}: the checkpoint's run used other training/validation samples ("
                             f"{'; '.join(differ)}); resume with the same settings, or start a new run")

    # ----- training -------------------------------------------------------------------------------
    def _loader(self, dataset, epoch: int, skip: int, shuffle: bool):
        sampler = EpochBatches(len(dataset), self.t["batch_size"], self.t["seed"], epoch, skip, shuffle)
        # a private generator: creating the loader's iterator must not draw from the global RNG,
        # or a resumed run would see different dropout masks and stochastic spikes
        generator = torch.Generator().manual_seed(self.t["seed"] * 7919 + epoch)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=self.collate,
                                           num_workers=self.cfg["data"]["num_workers"], generator=generator)

    def _step(self, x: torch.Tensor, y: torch.Tensor, monitor: RateMonitor) -> Optional[tuple[float, float, dict]]:
        """One optimiser step; None when a non-finite batch was skipped (``train.nonfinite: skip_batch``).

        The input, the loss and the gradients are checked with one synchronisation (and one
        all-reduce under DDP, so every process takes the same branch). A skipped batch leaves
        no trace: the buffers its forward pass moved (batch-norm statistics) are put back.
        """
        x, y = x.to(self.device), y.to(self.device)
        skip_mode = self.t["nonfinite"] == "skip_batch"
        saved = [b.clone() for b in self.model.buffers()] if skip_mode else None
        # one cheap reduction: the sum is finite when every value is (the count is for messages only)
        input_sum = x.sum(dtype=torch.float32) if x.is_floating_point() else torch.zeros((), device=x.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            out = self.net(x)
            loss = self.loss_fn(out.float(), y)
            if self.t["rate_reg"] and monitor.rates:
                reg = torch.stack([(r - self.t["target_rate"]) ** 2 for r in monitor.rates.values()]).mean()
                loss = loss + self.t["rate_reg"] * reg
        self.opt.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=x.device)
        # under AMP the scaler skips steps with overflowing gradients itself (and lowers its scale)
        grads_bad = torch.zeros((), dtype=torch.bool, device=x.device) if self.scaler else ~torch.isfinite(norm)
        flag = (~torch.isfinite(input_sum) | ~torch.isfinite(loss.detach()) | grads_bad).float().reshape(1)
        if self.world > 1:  # every process must take the same decision (DDP steps together)
            _dist().all_reduce(flag, op=_dist().ReduceOp.MAX)
        loss_value, bad = torch.cat([loss.detach().float().reshape(1), flag.to(x.device)]).tolist()
        if bad:
            if skip_mode and _all_finite(self.model.parameters()):
                with torch.no_grad():
                    for b, old in zip(self.model.buffers(), saved):
                        b.copy_(old)
                self.opt.zero_grad(set_to_none=True)
                if self.scaler:
                    self.scaler.update()  # closes this step's unscale_ (and lowers the scale on overflow)
                self.progress["skipped"] += 1
                return None
            self._stop(x, int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0, loss_value)
        if self.t["grad_clip"]:
            nn.utils.clip_grads_with_norm_(self.model.parameters(), self.t["grad_clip"], norm)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
            self._watch_scaler()
        else:
            self.opt.step()
        correct = (out.detach().mean(0).argmax(1) == y).float().sum().item()
        return loss_value * len(y), correct, {k: v.item() for k, v in monitor.rates.items()}

    def _watch_scaler(self) -> None:
        """Under AMP, gradients that stay non-finite make the grad scaler skip every step and
        shrink its scale without end: stop after ``AMP_PATIENCE`` skips in a row."""
        scale = self.scaler.get_scale()
        self._amp_skips = self._amp_skips + 1 if scale < self._amp_scale else 0
        self._amp_scale = scale
        if self._amp_skips >= self.AMP_PATIENCE:
            raise NonFiniteError(
                f"training stopped at {self._where()}: under AMP the gradients were non-finite in "
                f"{self._amp_skips} steps in a row (the grad scaler skipped them all; its scale is now {scale:g}). "
                "Check the data, lower train.lr or train without train.amp")

    AMP_PATIENCE = 50

    def _where(self) -> str:
        return (f"epoch {self.epoch + 1}, batch {self.step_in_epoch + 1} (global step {self.global_step + 1}, "
                f"process {self.rank})")

    def _stop(self, x: torch.Tensor, bad_input: int, loss_value: float) -> None:
        """Raise NonFiniteError naming where the NaN/inf first appeared (the optimiser has not
        stepped with it)."""
        causes = []
        if bad_input:
            causes.append(f"the input batch holds {bad_input} NaN/inf values")
        bad_weights = nonfinite_parameters(dict(self.model.named_parameters()))
        if bad_weights:
            causes.append(f"the weights {', '.join(bad_weights[:5])} are non-finite themselves (an earlier update "
                          "overflowed: lower train.lr)")
        try:
            layer = first_nonfinite_layer(self.model, x, self.amp)
        except Exception:  # a diagnosis only (e.g. no memory for the copy): the error below still holds
            layer = None
        if layer:
            causes.append(f"the first layer to turn finite inputs into NaN/inf is {layer}")
        if not math.isfinite(loss_value):
            causes.append(f"the loss is {loss_value}")
        grads = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
        bad_grads = nonfinite_parameters(grads)
        if bad_grads:
            causes.append(f"the gradient of {bad_grads[0]} is non-finite"
                          + (f" ({len(bad_grads)} parameters in all)" if len(bad_grads) > 1 else ""))
        if not causes:
            causes.append("another process met a non-finite value" if self.world > 1 else
                          "a sum overflowed (of the input batch or the gradient norm)")
        self.opt.zero_grad(set_to_none=True)
        hint = ("" if bad_weights else " train.nonfinite: skip_batch skips such batches instead.")
        raise NonFiniteError(
            f"training stopped at {self._where()}: {'; '.join(causes)}. No update was made with it and no "
            f"checkpoint was written from it. Check the data, lower train.lr or set train.grad_clip.{hint}")

    @torch.no_grad()
    def evaluate(self, dataset=None) -> dict:
        """Accuracy, loss and mean firing rate per layer on ``dataset`` (default: the test set,
        or the validation set where there is none)."""
        if dataset is None:
            dataset = self.test_set if self.test_set is not None else self.val_set
        self.model.eval()
        monitor = RateMonitor(self.model)
        total, correct, loss, rates = 0, 0.0, 0.0, {}
        for x, y, _ in self._loader(dataset, 0, 0, shuffle=False):
            x, y = x.to(self.device), y.to(self.device)
            out = self.model(x)
            loss += self.loss_fn(out.float(), y).item() * len(y)
            correct += (out.mean(0).argmax(1) == y).float().sum().item()
            total += len(y)
            for k, v in monitor.rates.items():
                rates[k] = rates.get(k, 0.0) + v.item() * len(y)
        monitor.remove()
        stats = torch.tensor([total, correct, loss], dtype=torch.float64)
        if self.world > 1:
            _dist().all_reduce(stats)
        total, correct, loss = stats.tolist()
        return {"accuracy": correct / max(total, 1), "loss": loss / max(total, 1),
                "rates": {k: v / max(total, 1) for k, v in rates.items()}}

    def fit(self, max_steps: Optional[int] = None) -> list[dict]:
        """Train to ``train.epochs`` (or stop after ``max_steps`` optimiser steps, checkpointed,
        as an interrupted run would be); returns the per-epoch history."""
        writer = self._tensorboard()
        self.out.mkdir(parents=True, exist_ok=True)
        while self.epoch < self.t["epochs"]:
            self.model.train()
            monitor = RateMonitor(self.model)
            loader = self._loader(self.train_set, self.epoch, self.step_in_epoch, shuffle=True)
            p = self.progress  # carries the sums of an epoch resumed mid-way
            start = time.perf_counter() - p["seconds"]
            bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{self.t['epochs']}", leave=False,
                       disable=self.quiet or self.rank != 0)
            for x, y, _ in bar:
                result = self._step(x, y, monitor)
                if result is not None:
                    loss, right, rates = result
                    p["seen"] += len(y)
                    p["loss_sum"] += loss
                    p["correct"] += right
                    for k, v in rates.items():
                        p["rate_sum"][k] = p["rate_sum"].get(k, 0.0) + v * len(y)
                self.step_in_epoch += 1
                self.global_step += 1
                p["seconds"] = time.perf_counter() - start
                seen = max(p["seen"], 1)
                bar.set_postfix(loss=f"{p['loss_sum'] / seen:.3f}", acc=f"{p['correct'] / seen:.3f}")
                if self.t["checkpoint_every"] and self.global_step % self.t["checkpoint_every"] == 0:
                    self.save("last.pt")
                if max_steps is not None and self.global_step >= max_steps:
                    monitor.remove()
                    self.save("last.pt")
                    return self.history
            monitor.remove()
            if p["skipped"] and self.rank == 0:
                warnings.warn(f"epoch {self.epoch + 1}: skipped {p['skipped']} batches with NaN/inf values "
                              "(train.nonfinite: skip_batch)", RuntimeWarning, stacklevel=2)
            if self.sched:
                with warnings.catch_warnings():  # a run resumed at an epoch's end steps the schedule first
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                    self.sched.step()
            scores = {}
            for split, dataset in (("val", self.val_set), ("test", self.test_set)):
                if dataset is not None:
                    result = self.evaluate(dataset)
                    scores.update({f"{split}_loss": result["loss"], f"{split}_accuracy": result["accuracy"]})
            seen = max(p["seen"], 1)
            record = {"epoch": self.epoch + 1, "step": self.global_step,
                      "train_loss": p["loss_sum"] / seen, "train_accuracy": p["correct"] / seen, **scores,
                      "lr": self.opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - start, 2),
                      "skipped_batches": p["skipped"], **{f"rate/{k}": v / seen for k, v in p["rate_sum"].items()}}
            self.history.append(record)
            self.epoch += 1
            self.step_in_epoch = 0
            self.progress = copy.deepcopy(_EPOCH_PROGRESS)
            self._log(record, writer)
            if record[self.select_on] > self.best:
                self.best = record[self.select_on]
                self.save("best.pt")
            self.save("last.pt")
        if writer:
            writer.close()
        return self.history

    def _plot(self) -> None:
        """Redraw ``training_curve.png`` from the history (a failure to draw warns, never stops training)."""
        try:
            from spikelab.viz import training_curve

            figure = training_curve(self.history)
            with replaced_atomically(self.out / "training_curve.png", fsync=False) as tmp:
                figure.savefig(tmp, format="png", dpi=100)
        except Exception as err:  # a plot is a convenience: the run and its logs matter more
            warnings.warn(f"{self.out / 'training_curve.png'} not drawn ({type(err).__name__}: {err})",
                          RuntimeWarning, stacklevel=2)

    def _tensorboard(self):
        if not self.t["tensorboard"] or self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out / "tensorboard"))

    def _log(self, record: dict, writer) -> None:
        """Rewrite ``log.csv`` and ``history.json`` from the whole history (atomically), so a
        resumed run's logs hold every epoch once, as the uninterrupted run's would."""
        if self.rank != 0:
            return
        fields: list[str] = []
        for row in self.history:
            fields += [k for k in row if k not in fields]
        with replaced_atomically(self.out / "log.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(self.history)
        with replaced_atomically(self.out / "history.json") as tmp:
            tmp.write_text(json.dumps(self.history, indent=2))
        self._plot()
        if writer:
            for k, v in record.items():
                if k not in ("epoch",):
                    writer.add_scalar(k, v, record["epoch"])


__all__ = ["rank_and_world", "RateMonitor", "NonFiniteError", "Trainer"]
