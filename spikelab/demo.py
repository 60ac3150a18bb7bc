"""The main job: train a spiking CNN on the built-in DigitsDVS events, evaluate, report.

DigitsDVS (generated on first use, see ``datasets/digits_dvs.md``) is read back from N-MNIST
``.bin`` files through the loader, cut into frames, and fed to a spiking CNN running on the
fused kernels. Then a ReLU CNN trained on the same recordings as count images is converted
to IF neurons and evaluated over simulation lengths. Writes ``summary.json``,
``training_curve.png``, ``raster.png``, ``membrane.png``, ``firing_rates.png``, ``events.gif``,
the checkpoints and ``conversion/`` (report and
accuracy-vs-T plot) and ``dynamic/`` (Dynamic Confidence calibrated on held-out data: accuracy
and mean steps, the oracle, exit-step histogram) into the output folder. Finally the trained SNN
is exported to NIR (``snn.nir``), read back and compared, and checked against chip profiles.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from spikelab.neurons.base import BaseNeuron
from spikelab.train import trainer_from_config

DEMO_CONFIG = {
    # reset to zero: the network exports to NIR (and neuromorphic chips) exactly
    "model": {"name": "cnn", "channels": [16, 32],
              "neuron": {"type": "lif", "tau": 2.0, "reset": "zero", "detach_reset": True}},
    "data": {"name": "digits_dvs", "time_bins": 10, "cache": True},
    "train": {"epochs": 5, "batch_size": 32, "lr": 2e-3, "scheduler": "cosine", "loss": "rate_ce", "seed": 0},
}


def _plots(out: Path, trainer, history) -> None:
    import matplotlib

    from spikelab import viz
    from spikelab.data.collate import pad_collate
    from spikelab.monitor import Monitor
    from spikelab.stats import firing_rates

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    viz.training_curve(history, out / "training_curve.png", title="spikelab demo: spiking CNN on DigitsDVS")

    events, label = trainer.test_set.events(0)
    frames, _ = trainer.test_set[0]
    model = trainer.model.eval()
    first = next(n for n, m in model.named_modules() if isinstance(m, BaseNeuron))
    with torch.no_grad(), Monitor(model, layers=[first], membrane=True) as mon:
        scores = model(torch.as_tensor(frames).unsqueeze(1))
    spikes = mon.spikes[first][:, 0].flatten(1)  # [T, neurons]
    busiest = spikes.sum(0).argsort(descending=True)[:3]
    threshold = float(model.get_submodule(first).threshold.max())
    viz.membrane_trace(mon.membrane[first][:, 0].flatten(1)[:, busiest], threshold, spikes[:, busiest],
                       out / "membrane.png", title=f"membrane of three first-layer neurons ({first})")
    viz.event_animation(events, trainer.test_set.sensor_size, out / "events.gif", n_frames=12)
    x, _, _ = pad_collate([trainer.test_set[i] for i in range(64)])
    viz.rate_histogram(firing_rates(model, x, per_neuron=True), out / "firing_rates.png")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    on = events["p"]
    a1.scatter(events["t"][on] / 1000, (events["y"] * 34 + events["x"])[on], s=0.3, c="tab:red", label="ON")
    a1.scatter(events["t"][~on] / 1000, (events["y"] * 34 + events["x"])[~on], s=0.3, c="tab:blue", label="OFF")
    a1.set_xlabel("time (ms)")
    a1.set_ylabel("pixel (y * 34 + x)")
    a1.set_title(f"input events, test digit {label}")
    a1.legend(markerscale=10, loc="upper right")
    shown = spikes[:, :400]
    t_idx, n_idx = shown.nonzero(as_tuple=True)
    a2.scatter(t_idx.numpy(), n_idx.numpy(), s=4, marker="|", c="black")
    a2.set_xlabel("time step")
    a2.set_ylabel("neuron (first conv layer)")
    a2.set_xlim(-0.5, spikes.shape[0] - 0.5)
    a2.set_title(f"output spikes; predicted {int(scores.mean(0).argmax())}")
    fig.tight_layout()
    fig.savefig(out / "raster.png", dpi=100)
    plt.close(fig)


def _dynamic_on_trained(out: Path, trainer) -> dict:
    """Dynamic Confidence on the directly trained SNN (frame inputs, t_max = the frames)."""
    from spikelab.data.collate import pad_collate
    from spikelab.dynamic import DynamicConfidence, calibrate
    from spikelab.dynamic import report as dynamic_report

    def frames(dataset, indices):
        x, y, _ = pad_collate([dataset[int(i)] for i in indices])
        return x, y

    held = torch.randperm(len(trainer.train_set), generator=torch.Generator().manual_seed(99))[:400]
    x_cal, y_cal = frames(trainer.train_set, held)  # part of the train split: never the test split
    x_test, y_test = frames(trainer.test_set, range(len(trainer.test_set)))
    model = trainer.model.eval()
    controller = DynamicConfidence(t_max=x_test.shape[0])
    # the calibration samples were seen in training (the model is more confident on them than on new
    # data), so ask for no drop at all there; a zero budget cannot be certified (delta=None)
    calibrate(controller, model, x_cal, y_cal, max_accuracy_drop=0.0, delta=None)
    data = dynamic_report(controller, controller.trace(model, x_test), y_test, out_dir=out / "dynamic_trained")
    return {"controller": controller.state(), **data["dynamic"], "oracle": data["oracle"]}


def count_image_cnn() -> "torch.nn.Module":
    """The ReLU CNN the demo converts: DigitsDVS count images [2, 34, 34] -> 10 classes."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(2, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def fit_classifier(model, x, y, epochs: int, lr: float = 2e-3, batch: int = 64):
    """Plain ANN training (Adam, cross-entropy, shuffled mini-batches from the global RNG)."""
    from torch.nn import functional as F

    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _conversion(out: Path, seed: int, quiet: bool) -> dict:
    """Train a ReLU CNN on DigitsDVS count images, convert it to IF neurons, evaluate it over T."""
    from spikelab.convert import convert, evaluate
    from spikelab.data.datasets.digits import digits_dvs_images

    from spikelab.dynamic import DynamicConfidence, calibrate
    from spikelab.dynamic import report as dynamic_report

    xtr, ytr = digits_dvs_images("train")
    xte, yte = digits_dvs_images("test")
    order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(1234))  # files are sorted by class
    fit_idx, held_idx = order[:-400], order[-400:]
    torch.manual_seed(seed)
    ann = fit_classifier(count_image_cnn(), xtr[fit_idx], ytr[fit_idx], epochs=10)
    snn = convert(ann, xtr[fit_idx][:512], method="robust", percentile=99.9)
    batches = [(xte[i:i + 128], yte[i:i + 128]) for i in range(0, len(xte), 128)]
    t_max = 64
    steps = []  # the test simulation's per-step outputs, kept for Dynamic Confidence (no second run)
    keep = snn.graph_module.register_forward_hook(lambda module, args, output: steps.append(output.clone()))
    try:
        report = evaluate(snn, batches, timesteps=[1, 2, 4, 8, 16, 32, t_max], ann=ann, out_dir=out / "conversion")
    finally:
        keep.remove()
    if len(steps) != t_max * len(batches):
        raise RuntimeError(f"demo: expected {t_max} steps of {len(batches)} test batches, recorded {len(steps)}")
    # evaluate runs each batch for t_max steps in turn: [t_max, N, classes] in test order
    test_outputs = torch.cat([torch.stack(steps[i:i + t_max]) for i in range(0, len(steps), t_max)], 1)
    # Dynamic Confidence: threshold from the held-out part of the train split, then the test split
    controller = DynamicConfidence(t_max=t_max)
    # 400 held-out samples cannot certify a 0.3-point budget (766 could): the uncertified choice
    calibrate(controller, snn, xtr[held_idx], ytr[held_idx], max_accuracy_drop=0.003, static=True, delta=None)
    dynamic = dynamic_report(controller, controller.trace_outputs(test_outputs), yte, out_dir=out / "dynamic")
    return {"ann_accuracy": report["ann_accuracy"], "snn_accuracy": report["accuracy"],
            "energy_per_sample_uj": report["energy_per_sample_uj"],
            "ann_energy_per_sample_uj": report["ann_energy_per_sample_uj"],
            "dynamic": {"controller": controller.state(), **dynamic["dynamic"], "oracle": dynamic["oracle"]}}


def _export(out: Path, trainer) -> dict:
    """Export the trained SNN to NIR, read it back, and compare its outputs with the (BatchNorm-folded)
    network; check the 8-bit network against chip profiles."""
    import nir

    from spikelab.data.collate import pad_collate
    from spikelab.export import check, fold_batchnorm, from_nir, quantize, to_nir

    model = trainer.model.eval()
    x, y, _ = pad_collate([trainer.test_set[i] for i in range(64)])
    graph = to_nir(model, dt=1e-3, sample_input=x)
    path = out / "snn.nir"
    nir.write(path, graph)
    back = from_nir(nir.read(path, type_check=True), dt=1e-3)
    with torch.no_grad():  # the graph holds the network with BatchNorm folded into its convolutions
        original, ours, theirs = model(x), fold_batchnorm(model)(x), back(x)
    quantized, q = quantize(model, "loihi2", data=(x, y))
    shape = tuple(x.shape[2:])
    predict = lambda scores: scores.sum(0).argmax(-1)  # noqa: E731
    return {"file": str(path), "nodes": len(graph.nodes),
            "reimported_max_abs_difference": (ours - theirs).abs().max().item(),
            "reimported_same_predictions": bool((predict(ours) == predict(theirs)).all()),
            "batchnorm_folding_prediction_agreement": (predict(original) == predict(ours)).float().mean().item(),
            "loihi2_8bit_accuracy_change_on_64": q["accuracy_change"],
            "hardware_8bit": {t: [str(v) for v in check(quantized, t, shape).violations]
                              for t in ("loihi2", "speck", "xylo")}}


def run_demo(out_dir="demo_out", epochs: int = 5, seed: int = 0, quiet: bool = False) -> dict:
    """Train, evaluate and write the report; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(DEMO_CONFIG))
    cfg["train"].update(epochs=int(epochs), seed=int(seed))
    cfg["out"] = str(out)
    start = time.perf_counter()
    trainer = trainer_from_config(cfg, quiet=quiet)
    prepared = time.perf_counter() - start
    history = trainer.fit()
    trained = time.perf_counter() - start - prepared
    _plots(out, trainer, history)
    trained_dynamic = _dynamic_on_trained(out, trainer)
    conversion = _conversion(out, seed, quiet)
    exported = _export(out, trainer)
    final = history[-1]
    summary = {
        "dataset": "DigitsDVS (scikit-learn digits through spikelab's event-camera emulator, N-MNIST .bin layout)",
        "train_samples": len(trainer.train_set), "test_samples": len(trainer.test_set),
        "model": repr(trainer.model), "backend": "fused kernels (backend='auto')", "epochs": len(history),
        "test_accuracy": final["test_accuracy"], "train_accuracy": final["train_accuracy"],
        "firing_rates": {k: v for k, v in final.items() if k.startswith("rate/")},
        "history": history, "data_seconds": round(prepared, 1), "train_seconds": round(trained, 1),
        "dynamic_trained": trained_dynamic, "conversion": conversion, "nir_export": exported,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["DEMO_CONFIG", "count_image_cnn", "fit_classifier", "run_demo"]
