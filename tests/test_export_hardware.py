"""Hardware profiles: one model that fits each target and one that breaks it in listed ways;
quantisation to the target's weight width (BatchNorm folded, average pooling as sum pooling);
conflicts between a target and exact NIR export; ``spikelab export --quantize``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab import layers as L
from spikelab.export import PROFILES, check, quantize


def _fits(model, target, shape):
    q, _ = quantize(model, target)
    report = check(q, target, shape)
    assert report.ok, str(report)
    assert report.neurons > 0
    return report


def test_loihi2_profile():
    good = L.Sequential(L.Linear(20, 16), sl.LIF(beta=0.9, reset="zero"), L.Linear(16, 4),
                        sl.CurrentLIF(reset="zero"))
    report = _fits(good, "loihi2", (20,))
    assert report.neurons == 20
    bad = L.Sequential(L.Linear(5000, 16), sl.LIF(beta=0.9), L.Linear(16, 4), sl.ProbabilisticLIF(reset="zero"))
    report = check(bad, "loihi2", (5000,))
    assert report.rules() == {"fan-in", "reset mode", "neuron type", "weight bit width"}
    assert any(v.layer == "0" and v.rule == "fan-in" and v.found == 5000 and v.limit == 4096 for v in report.violations)
    assert any(v.layer == "1" and v.found == "subtract" for v in report.violations)
    assert any(v.layer == "3" and v.found == "ProbabilisticLIF" for v in report.violations)


def test_speck_profile():
    good = L.Sequential(L.Conv2d(2, 8, 3, stride=2, padding=1), sl.IF(), L.SumPool2d(2),
                        L.Conv2d(8, 8, 3, padding=1), sl.IF(reset="zero"), L.Flatten(), L.Linear(8 * 16 * 16, 10),
                        sl.IF())
    _fits(good, "speck", (2, 64, 64))
    bad = L.Sequential(L.Conv2d(3, 16, 17, stride=3), sl.LIF(beta=0.9), L.AvgPool2d(2), L.Flatten())
    report = check(bad, "speck", (3, 256, 256))
    assert report.rules() == {"input channels", "input size", "kernel size", "stride", "neuron type", "layer type",
                              "weight bit width", "neurons in a layer"}
    assert {str(v).split(":")[0] for v in report.violations} == {"input", "0", "1", "2"}


def test_speck_layer_count():
    deep = L.Sequential(*[m for _ in range(10) for m in (L.Conv2d(2, 2, 3, padding=1), sl.IF())])
    q, _ = quantize(deep, "speck")
    report = check(q, "speck", (2, 16, 16))
    assert report.rules() == {"weighted layers"}
    assert report.violations[0].found == 10


def test_xylo_profile():
    good = L.Sequential(L.Linear(16, 64), L.Recurrent(sl.CurrentLIF(), nn.Linear(64, 64)), L.Linear(64, 8),
                        sl.CurrentLIF())
    report = _fits(good, "xylo", (16,))
    assert report.neurons == 72
    bad = L.Sequential(L.Conv1d(20, 4, 3), sl.CurrentLIF(reset="zero"), L.Flatten(), L.Linear(4 * 10, 1100),
                       sl.CurrentLIF(), L.Linear(1100, 10), sl.CurrentLIF())
    report = check(bad, "xylo", (20, 12))
    assert report.rules() == {"input channels", "layer type", "reset mode", "neuron count", "outputs",
                              "weight bit width"}
    assert any(v.rule == "neuron count" and v.found == 40 + 1100 + 10 for v in report.violations)


def test_custom_profile_and_unknown_target():
    model = L.Sequential(L.Linear(8, 4), sl.IF(reset="zero"))
    tight = dataclasses.replace(PROFILES["loihi2"], name="tiny", max_neurons=3)
    q, _ = quantize(model, tight)
    assert check(q, tight, (8,)).rules() == {"neuron count"}
    with pytest.raises(ValueError, match="unknown target 'truenorth'"):
        check(model, "truenorth", (8,))


def test_quantize_rounds_to_the_width_and_reports_accuracy():
    torch.manual_seed(0)
    model = L.Sequential(L.Linear(10, 32), sl.LIF(beta=0.9, reset="zero"), L.Linear(32, 3))
    x = torch.rand(20, 64, 10) * 2
    y = model(x).sum(0).argmax(-1)  # the float model's own predictions: accuracy 1 before
    original = model[0].weight.detach().clone()
    q, report = quantize(model, 4, data=(x, y))
    w = q[0].weight.detach()
    scale = report["layers"]["0"]["scale"]
    ints = w / scale
    assert torch.allclose(ints, ints.round(), atol=1e-4) and ints.abs().max() <= 7
    assert len(torch.unique(w)) <= 15
    assert report["accuracy_before"] == 1.0
    assert report["accuracy_change"] == pytest.approx(report["accuracy_after"] - 1.0)
    assert 0.0 <= report["accuracy_after"] <= 1.0
    assert torch.equal(model[0].weight, original)  # the original is untouched
    assert not torch.equal(q[0].weight, model[0].weight)
    _, eight = quantize(model, "loihi2", data=[(x, y)])
    assert eight["bits"] == 8 and eight["accuracy_after"] >= report["accuracy_after"] - 0.05


def test_residual_network_is_checked_layer_by_layer():
    from spikelab import models

    net = models.SEWResNet(in_channels=2, classes=10, input_size=32, stages=(8,), blocks=1,
                           neuron=lambda: sl.IF(reset="zero"))
    q, _ = quantize(net, "speck")
    report = check(q, "speck", (2, 32, 32))
    assert report.rules() == {"layer type"}  # only its average pooling: Speck pools by summing
    assert {v.layer for v in report.violations} == {"3"}
    assert report.neurons == 8 * 32 * 32 + 2 * 8 * 16 * 16


# ----- the network as deployed: BatchNorm folded, average pooling as sum pooling ----------------------

def _cnn(neuron=None, seed: int = 0):
    from spikelab import models

    torch.manual_seed(seed)
    net = models.SpikingCNN(2, 10, 16, (4, 8), neuron=neuron or (lambda: sl.LIF(tau=2.0, reset="zero")))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.5, 3.0)
    return net.eval()


def _on_8bit_grid(w: np.ndarray) -> bool:
    q = w / (np.abs(w).max() / 127)
    return bool(np.allclose(q, q.round(), atol=1e-3)) and np.abs(q).max() <= 127 + 1e-3


def test_quantized_weights_are_the_exported_ones():
    """BatchNorm is folded before rounding: the NIR file holds 8-bit weights, and reads back to
    the quantized network's outputs exactly."""
    import nir

    from spikelab.export import from_nir, to_nir

    net = _cnn()
    x = (torch.rand(8, 3, 2, 16, 16) < 0.3).float()
    q, report = quantize(net, "loihi2")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    assert check(q, "loihi2", (2, 16, 16)).ok
    graph = to_nir(q, dt=1e-3, sample_input=x)
    weighted = [n for n in graph.nodes.values() if isinstance(n, (nir.Conv2d, nir.Affine))]
    assert len(weighted) == 3 and all(_on_8bit_grid(n.weight) for n in weighted)
    assert {type(n).__name__ for n in graph.nodes.values()} >= {"SumPool2d"}  # loihi2 pools by summing
    assert report["rewrites"] == ["3: AvgPool2d as SumPool2d, its 1/4 moved into the weights of 4 (Conv2d)",
                                  "7: AvgPool2d as SumPool2d, its 1/4 moved into the weights of 9 (Linear)"]
    with torch.no_grad():
        ours = q(x)
        assert ours.abs().sum() > 0
        assert torch.equal(from_nir(graph, dt=1e-3)(x), ours)
    # the float network with BatchNorm is flagged layer by layer: its folded weights are floats
    assert {v.layer for v in check(net, "loihi2", (2, 16, 16)).violations if v.rule == "weight bit width"} == \
        {"0", "4", "9"}


def test_fold_avgpool_keeps_outputs_exactly():
    from spikelab.export import fold_avgpool

    net = _cnn()
    x = (torch.rand(8, 3, 2, 16, 16) < 0.3).float()
    folded, changes = fold_avgpool(net)
    assert len(changes) == 2 and isinstance(folded[3], L.SumPool2d) and isinstance(folded[7], L.SumPool2d)
    torch.testing.assert_close(folded[4].weight, net[4].weight / 4, rtol=0, atol=0)
    with torch.no_grad():
        assert torch.equal(folded(x), net(x))  # a 2x2 factor is a power of two: nothing rounds
    assert isinstance(net[3], L.AvgPool2d)  # the original is untouched
    into_neuron = L.Sequential(L.Conv2d(2, 4, 3), L.AvgPool2d(2), sl.IF(reset="zero"))
    assert fold_avgpool(into_neuron)[1] == []  # nowhere to move the factor: left as it is


# ----- where a target and exact NIR export disagree ---------------------------------------------

def test_xylo_subtract_reset_conflicts_with_exact_export():
    from spikelab.export import NIRExportError, export_conflicts, to_nir

    zero = L.Sequential(L.Linear(16, 32), sl.CurrentLIF(reset="zero"), L.Linear(32, 8), sl.CurrentLIF(reset="zero"))
    conflicts = export_conflicts(zero, "xylo", (16,))
    assert [c.layer for c in conflicts] == ["1", "3"]
    assert "xylo resets only by subtract, which exact NIR export cannot write" in conflicts[0].conflict
    assert "model.neuron.reset: subtract" in conflicts[0].fix and "--approximate" in conflicts[0].fix
    assert check(quantize(zero, "xylo")[0], "xylo", (16,)).rules() == {"reset mode"}
    subtract = L.Sequential(L.Linear(16, 32), sl.CurrentLIF(), L.Linear(32, 8), sl.CurrentLIF())
    conflicts = export_conflicts(subtract, "xylo", (16,))
    assert [c.layer for c in conflicts] == ["1", "3"]
    assert conflicts[0].conflict.startswith("xylo takes it (CubaLIF, reset subtract) but exact NIR export does not "
                                            "(reset by subtraction")
    assert "--approximate" in conflicts[0].fix and "reset: zero" not in conflicts[0].fix  # xylo has no zero reset
    assert check(quantize(subtract, "xylo")[0], "xylo", (16,)).ok
    with pytest.raises(NIRExportError, match="reset by subtraction"):
        to_nir(subtract, dt=1e-3, input_shape=(16,))
    with pytest.warns(UserWarning):
        to_nir(subtract, dt=1e-3, input_shape=(16,), approximate=True)  # the fix named above


def test_speck_subtract_if_conflict_and_agreements():
    from spikelab.export import export_conflicts

    net = L.Sequential(L.Conv2d(2, 4, 3), sl.IF(), L.Flatten(), L.Linear(4 * 6 * 6, 3), sl.IF(reset="zero"))
    (conflict,) = export_conflicts(net, "speck", (2, 8, 8))
    assert conflict.layer == "1" and "speck takes it (IF, reset subtract)" in conflict.conflict
    assert conflict.fix.startswith("train with model.neuron.reset: zero (speck takes it too")
    assert str(conflict).startswith("1: speck takes it") and ". Fix: train with" in str(conflict)
    # loihi2 and exact export agree: a subtract reset is refused by both (check and to_nir say so)
    assert export_conflicts(net, "loihi2", (2, 8, 8)) == []
    assert "reset mode" in check(net, "loihi2", (2, 8, 8)).rules()
    assert export_conflicts(_cnn(), "loihi2", (2, 16, 16)) == []


# ----- the command line: one-command deployment ------------------------------------------------------

def _checkpoint(tmp_path, neuron: dict, name: str = "best.pt"):
    """A checkpoint in the format 'spikelab train' and 'spikelab demo' write (random weights)."""
    from spikelab.train import load_config, make_model

    cfg = load_config({"model": {"name": "cnn", "channels": [4, 8], "neuron": neuron},
                       "data": {"name": "digits_dvs", "time_bins": 6}, "out": str(tmp_path)})
    torch.manual_seed(0)
    model = make_model(cfg, (34, 34, 2), 10)
    torch.save({"config": cfg, "model": model.state_dict()}, tmp_path / name)
    return tmp_path / name, cfg


def test_cli_quantize_needs_a_target(tmp_path, capsys):
    from spikelab.cli import main

    path, _ = _checkpoint(tmp_path, {"type": "lif", "tau": 2.0, "reset": "zero"})
    assert main(["export", str(path), "--quantize", "--out", str(tmp_path / "n.nir")]) == 2
    assert "--quantize needs --target" in capsys.readouterr().err
    assert not (tmp_path / "n.nir").exists()


def test_cli_deploys_in_one_command(tmp_path, capsys):
    import json

    import nir

    from spikelab.cli import main
    from spikelab.data.collate import pad_collate
    from spikelab.export import from_nir
    from spikelab.export.cli import load_checkpoint
    from spikelab.train import make_datasets

    path, cfg = _checkpoint(tmp_path, {"type": "lif", "tau": 2.0, "reset": "zero"})
    out = tmp_path / "net.nir"
    assert main(["export", str(path), "--target", "loihi2", "--out", str(out)]) == 1  # float weights, avg pooling
    printed = capsys.readouterr().out
    assert "weight bit width: float" in printed and "layer type: AvgPool2d" in printed
    assert "add --quantize to deploy" in printed
    assert main(["export", str(path), "--target", "loihi2", "--quantize", "--eval-samples", "24", "--quiet",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy on 24 test samples: float" in printed and "loihi2: fits" in printed
    summary = json.loads(out.with_suffix(".loihi2.json").read_text())
    q = summary["quantization"]
    assert summary["ok"] and q["bits"] == 8 and q["eval_samples"] == 24 and len(q["rewrites"]) == 2
    # the same accuracies from quantize()'s own evaluation, on the evenly spaced test samples
    _, test, _, _ = make_datasets(cfg, quiet=True)
    idx = np.unique(np.linspace(0, len(test) - 1, 24).round().astype(int))
    x, y, _ = pad_collate([test[int(i)] for i in idx])
    model = load_checkpoint(str(path)).model.eval()
    quantized, report = quantize(model, "loihi2", data=(x, y))
    assert (q["accuracy_before"], q["accuracy_after"]) == (report["accuracy_before"], report["accuracy_after"])
    assert f"float {report['accuracy_before']:.4f}, 8-bit {report['accuracy_after']:.4f}" in printed
    # the file holds the quantized network
    graph = nir.read(out, type_check=True)
    assert "8-bit" in graph.metadata["quantized"]
    assert all(_on_8bit_grid(n.weight) for n in graph.nodes.values() if isinstance(n, (nir.Conv2d, nir.Affine)))
    with torch.no_grad():
        assert torch.equal(from_nir(graph, dt=1e-3)(x), quantized(x))


def test_cli_names_conflicts_before_exporting(tmp_path, capsys):
    from spikelab.cli import main

    path, _ = _checkpoint(tmp_path, {"type": "if"})  # the default reset: subtract
    out = tmp_path / "net.nir"
    assert main(["export", str(path), "--target", "speck", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("speck and exact NIR export conflict in 2 layer(s):\n  - 2: speck takes it (IF, "
                                   "reset subtract)")
    assert "Fix: train with model.neuron.reset: zero" in captured.out
    assert "reset by subtraction" in captured.err and not out.exists()
    # the fix it names: --approximate (the file records the change); --quantize makes it fit Speck
    with pytest.warns(UserWarning, match="reset to 0"):
        assert main(["export", str(path), "--target", "speck", "--approximate", "--quantize", "--eval-samples", "0",
                     "--out", str(out)]) == 0
    assert "speck: fits" in capsys.readouterr().out
    import nir

    assert "reset by subtraction" in nir.read(out).metadata["approximations"]


def test_cli_refuses_an_input_shape_the_model_does_not_fit(tmp_path, capsys):
    """A saved module whose layers do not fit --input-shape: exit status 2 naming the layer and the
    shapes, with or without --target, and no file written (to_nir and check refuse it too)."""
    from spikelab.cli import main
    from spikelab.export import NIRExportError, to_nir

    net = L.Sequential(L.Conv2d(2, 4, 3), sl.LIF(tau=2.0, reset="zero"), L.Flatten(), L.Linear(144, 3))
    torch.save(net, tmp_path / "m.pt")
    out = tmp_path / "x.nir"
    for extra in (["--target", "loihi2"], []):
        assert main(["export", str(tmp_path / "m.pt"), "--trust", "--input-shape", "2,9,9", "--out", str(out)]
                    + extra) == 2
        err = capsys.readouterr().err
        assert "does not fit --input-shape 2,9,9" in err and "layer '3' (Linear)" in err, err
        assert "(1, 1, 196)" in err and "144x3" in err, err
        assert not out.exists()
    with pytest.raises(NIRExportError, match=r"3: Linear takes 144 input features.*per-sample shape \(196,\)"):
        to_nir(net, dt=1e-3, input_shape=(2, 9, 9))
    with pytest.raises(NIRExportError, match=r"0: Conv2d does not take its input of per-sample shape \(3, 9, 9\)"):
        check(net, "loihi2", (3, 9, 9))
    assert main(["export", str(tmp_path / "m.pt"), "--trust", "--input-shape", "2,8,8", "--out", str(out)]) == 0


class _Stale(nn.Module):
    """Predicts class 0 on its first call after a reset, class 9 after that (a streaming state)."""

    _spikelab_stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = torch.zeros(x.shape[0], x.shape[1], 10)
        out[..., 0 if self.calls == 1 else 9] = 1.0
        return out


def test_cli_accuracy_is_quantizes_measure():
    """evaluate_accuracy (spikelab export --quantize) and quantize(data=...) measure accuracy the
    same way: every batch from a reset state."""
    from spikelab.data.collate import pad_collate
    from spikelab.export.cli import evaluate_accuracy
    from spikelab.export.hardware import _accuracy
    from spikelab.train import load_config, make_datasets

    cfg = load_config({"model": {"name": "cnn", "channels": [4, 8]},
                       "data": {"name": "digits_dvs", "time_bins": 2}})
    _, test, _, _ = make_datasets(cfg, quiet=True)
    idx = np.unique(np.linspace(0, len(test) - 1, 40).round().astype(int))
    batches = [pad_collate([test[int(i)] for i in idx[j:j + 8]])[:2] for j in range(0, len(idx), 8)]
    labels = torch.cat([y for _, y in batches])
    expected = int((labels == 0).sum()) / len(labels)  # class 0 on every batch
    stale = (int((batches[0][1] == 0).sum()) + int((labels[8:] == 9).sum())) / len(labels)
    assert stale != expected  # what carrying the state over between batches would measure
    assert _accuracy(_Stale(), batches) == expected
    acc, n = evaluate_accuracy({"stale": _Stale()}, cfg, 40, batch_size=8, quiet=True)
    assert n == len(labels) and acc["stale"] == expected
