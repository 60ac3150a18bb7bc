"""Hardware profiles: one model that fits each target and one that breaks it in listed ways;
quantisation to the target's weight width."""

from __future__ import annotations

import dataclasses

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
