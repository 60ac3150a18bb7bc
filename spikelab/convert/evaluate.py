"""Accuracy of a converted SNN at many simulation lengths from one run, with a report.

One simulation of ``max(timesteps)`` steps; the prediction at ``T`` is the argmax of the
readout averaged over the first ``T`` steps. Also reported: the thresholds and firing rate of
every neuron site (keyed by the site's name, the ANN call it replaces: ``layer1.0.relu``,
``relu_3``), the synaptic operations, and an energy estimate against the ANN.

Operation counts: every Conv/Linear input that is non-zero at a step costs one accumulate
(AC) per synapse it reaches, counted exactly with an all-ones copy of the layer (so borders,
strides and padding are right); the first layer, fed analog values, costs multiply-accumulates
(MAC) like the ANN. The ANN costs one MAC per synapse per input. Energy constants default to
Horowitz (ISSCC 2014), 45 nm, 32-bit float: 4.6 pJ per MAC, 0.9 pJ per AC; override them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from spikelab.convert.core import ConvertedSNN
from spikelab.stats import WEIGHTED, EnergyModel, OperationCounter, dense_operations

DEFAULT_TIMESTEPS = tuple(2 ** k for k in range(9))  # 1 .. 256


def _batches(data) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        yield data[0], data[1]
        return
    for batch in data:
        yield batch[0], batch[1]


@torch.no_grad()
def evaluate(snn: ConvertedSNN, data, timesteps: Sequence[int] = DEFAULT_TIMESTEPS, ann: Optional[nn.Module] = None,
             out_dir=None, energy: EnergyModel = EnergyModel()) -> dict:
    """Accuracy at every ``T`` in ``timesteps`` (one simulation), thresholds, firing rates,
    operations and energy; ``data`` is ``(x, y)`` tensors or an iterable of such batches.
    With ``out_dir``, writes ``conversion_report.json`` and ``accuracy_vs_timesteps.png``."""
    timesteps = sorted({int(t) for t in timesteps})
    if not timesteps or timesteps[0] < 1:
        raise ValueError(f"timesteps: expected positive integers, got {timesteps}")
    steps = timesteps[-1]
    correct = {t: 0 for t in timesteps}
    ann_correct, total = 0, 0
    sites = snn.sites()
    spikes = {name: 0.0 for name, _ in sites}
    units = {name: 0 for name, _ in sites}
    first_layer = next(n for n, m in snn.graph_module.named_modules() if isinstance(m, WEIGHTED))
    counter = OperationCounter(snn.graph_module, analog=[first_layer])  # the first layer sees the analog input
    hooks = [site.register_forward_hook(_spike_counter(name, spikes, units)) for name, site in sites]
    ann_ops = 0.0
    try:
        for x, y in _batches(data):
            snn.reset()
            running = None
            for t in range(1, steps + 1):
                out = snn.step(x)
                running = out.clone() if running is None else running + out
                if t in correct:
                    correct[t] += (running.argmax(1) == y).sum().item()
            snn.reset()
            total += len(y)
            if ann is not None:
                ann_correct += (ann.eval()(x).argmax(1) == y).sum().item()
                ann_ops += sum(dense_operations(ann, x).values())
    finally:
        counter.remove()
        for h in hooks:
            h.remove()
    ac = sum(counter.ac.values()) / max(total, 1) / steps  # per sample and step
    mac_first = sum(counter.mac.values()) / max(total, 1) / steps
    report = {
        "samples": total, "timesteps": timesteps,
        "accuracy": {str(t): correct[t] / max(total, 1) for t in timesteps},
        "ann_accuracy": ann_correct / total if ann is not None and total else None,
        "thresholds": {name: _listify(site.threshold) for name, site in sites},
        "firing_rate": {name: spikes[name] / max(units[name], 1) for name, _ in sites},
        "ops_per_sample_per_step": {"ac": ac, "mac_first_layer": mac_first},
        "energy_constants_pj": asdict(energy),
        "energy_per_sample_uj": {str(t): (t * (ac * energy.ac_pj + mac_first * energy.mac_pj)) * 1e-6
                                 for t in timesteps},
        "ann_energy_per_sample_uj": (ann_ops / total * energy.mac_pj * 1e-6) if ann is not None and total else None,
        "conversion": snn.report,
    }
    if out_dir is not None:
        _write(report, Path(out_dir))
    return report


def _spike_counter(name, spikes, units):
    def hook(module, args, output):
        spikes[name] += torch.count_nonzero(output).item()  # no boolean copy of the spike map
        units[name] += output.numel()
    return hook


def _listify(t: torch.Tensor):
    t = t.detach()
    return t.item() if t.numel() == 1 else t.tolist()


def _write(report: dict, out: Path) -> None:
    from spikelab.viz import accuracy_vs_timesteps

    out.mkdir(parents=True, exist_ok=True)
    (out / "conversion_report.json").write_text(json.dumps(report, indent=2))
    accuracy = {int(t): a for t, a in report["accuracy"].items()}
    accuracy_vs_timesteps(accuracy, report["ann_accuracy"], out / "accuracy_vs_timesteps.png",
                          title="converted SNN: accuracy vs simulation length")


__all__ = ["evaluate", "DEFAULT_TIMESTEPS"]
