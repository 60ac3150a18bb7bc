"""Dynamic Confidence: live mode equals trace mode, batch shrinking keeps the others' state,
calibration, oracle, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab.convert import convert
from spikelab.dynamic import DynamicConfidence, Trace, calibrate, oracle, report


@pytest.fixture(scope="module")
def converted():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.rand(48, 12)
    return convert(ann, torch.rand(200, 12)), x, ann(x).argmax(1)


@pytest.mark.parametrize("score", ["maxprob", "margin", "entropy"])
@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_live_mode_equals_trace_mode(converted, score, threshold):
    snn, x, _ = converted
    ctl = DynamicConfidence(score, temperature=0.5, threshold=threshold, t_min=2, t_max=24)
    live = ctl.run(snn, x, mode="live", static=True, keep_traces=True)
    traced = ctl.run(snn, x, mode="trace", static=True)
    assert torch.equal(live.predictions, traced.predictions)
    assert torch.equal(live.exit_steps, traced.exit_steps)
    assert live.exit_steps.min() >= 2 and live.exit_steps.max() <= 24
    for a, b in zip(live.confidences, traced.confidences):
        assert a == pytest.approx(b, abs=1e-6)


def test_live_mode_on_a_trained_network_with_frame_inputs():
    torch.manual_seed(1)
    net = sl.layers.Sequential(nn.Linear(10, 16), sl.LIF(tau=2.0), nn.Linear(16, 3))
    frames = (torch.rand(30, 20, 10) < 0.3).float()
    ctl = DynamicConfidence("maxprob", threshold=0.36, t_max=30)  # untrained: scores near 1/3
    live, traced = ctl.run(net, frames, mode="live"), ctl.run(net, frames, mode="trace")
    assert torch.equal(live.predictions, traced.predictions) and torch.equal(live.exit_steps, traced.exit_steps)
    assert live.mean_steps < 30


def test_removing_samples_leaves_the_others_untouched(converted):
    snn, x, _ = converted
    snn.reset()
    for _ in range(5):
        snn.step(x[:6])
    before = [s.neuron.state["v"].clone() for _, s in snn.sites()]
    keep = torch.tensor([1, 4, 5])
    snn.select_batch(keep)
    after = [s.neuron.state["v"] for _, s in snn.sites()]
    for b, a in zip(before, after):
        assert torch.equal(a, b[keep])
    continued = torch.stack([snn.step(x[keep]) for _ in range(5)])
    snn.reset()
    alone = torch.stack([snn.step(x[:6]) for _ in range(10)])[5:, keep]
    snn.reset()
    assert torch.equal(continued, alone)


def test_calibration_respects_the_budget_and_is_saved(converted):
    snn, x, y = converted
    ctl = DynamicConfidence("maxprob", t_max=32)
    cal = calibrate(ctl, snn, x, y, max_accuracy_drop=0.0, static=True, delta=None)
    result = ctl.run(snn, x, mode="trace", static=True)
    assert (result.predictions == y).float().mean().item() >= cal.static_accuracy
    assert ctl.threshold[0].item() == pytest.approx(cal.threshold)
    accs = [r["accuracy"] for r in cal.front]
    assert accs == sorted(accs)  # a Pareto front: more steps, more accuracy
    model = ctl.attach(snn)
    again = DynamicConfidence.from_state(model.dynamic_confidence)
    assert torch.equal(again.threshold, ctl.threshold) and again.t_max == 32
    quick = DynamicConfidence("maxprob", t_max=32)
    calibrate(quick, snn, x, y, max_accuracy_drop=None, target_steps=4, static=True)
    assert quick.run(snn, x, mode="trace", static=True).mean_steps <= 4


def test_oracle_and_report(tmp_path):
    pred = torch.tensor([[0, 1, 2], [1, 1, 2], [0, 1, 0], [0, 1, 0]])  # [t_max=4, B=3]
    trace = Trace(confidence=torch.rand(4, 3), prediction=pred)
    labels = torch.tensor([0, 1, 2])
    o = oracle(trace, labels)
    # sample 0: correct at 1, wrong at 2, correct from 3 on; sample 1: from 1; sample 2: correct 1-2, then never
    assert o["stable_accuracy"] == pytest.approx(2 / 3)
    assert o["stable_mean_steps"] == pytest.approx((3 + 1 + 4) / 3)
    assert o["first_correct_mean_steps"] == pytest.approx(1.0)
    ctl = DynamicConfidence(t_max=4, threshold=0.5)
    data = report(ctl, trace, labels, out_dir=tmp_path)
    assert len(data["exit_histogram"]) == 4 and sum(data["exit_histogram"]) == 3

    def strict(name):
        raise ValueError(f"{name} is not JSON")

    json.loads((tmp_path / "dynamic_report.json").read_text(), parse_constant=strict)  # no Infinity/NaN
    assert (tmp_path / "dynamic.png").read_bytes()[:4] == b"\x89PNG"


def test_threshold_set_later_counts_as_set_and_traces_only_on_request():
    """Assigning ``threshold`` (as calibrate does) silences the never-set warning; a live run keeps
    no per-step scores unless asked."""
    import warnings

    model = sl.layers.Sequential(nn.Linear(4, 3))
    ctl = DynamicConfidence("maxprob", temperature=1.0, t_max=4)
    with pytest.warns(UserWarning, match="never set"):
        ctl.run(model, torch.rand(2, 4), static=True)
    ctl.threshold = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ctl.run(model, torch.rand(2, 4), static=True)
    assert result.confidences == [[], []]


def test_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        DynamicConfidence("maxprob", threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        DynamicConfidence("entropy", threshold=[0.5] * 3, t_max=4)
    with pytest.raises(ValueError, match="t_min"):
        DynamicConfidence(t_min=10, t_max=5)
    with pytest.raises(ValueError, match="score"):
        DynamicConfidence("vibes")
    assert DynamicConfidence("maxprob", threshold=1.0).threshold[0] == 1.0  # [0, 1] includes 1
    assert DynamicConfidence("margin", threshold=0.0).threshold[0] == 0.0
    for bad in (-0.1, float("nan"), [0.2, -1.0, 0.2, 0.2]):
        with pytest.raises(ValueError, match="values >= 0"):
            DynamicConfidence("logit_margin", threshold=bad, t_max=4)
    for name, bad in (("t_min", 0), ("t_max", True), ("t_max", 2.5), ("t_min", -1)):
        with pytest.raises(ValueError, match=name):
            DynamicConfidence(**{name: bad})
    for bad in (0.0, -1.0, float("inf"), True, "2"):
        with pytest.raises(ValueError, match="temperature"):
            DynamicConfidence(temperature=bad)
    plain = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"select_batch|step"):
        DynamicConfidence(t_max=4).run(plain, torch.rand(3, 4), static=True)
    with pytest.raises(ValueError, match="static=True"):
        DynamicConfidence(t_max=8).run(sl.layers.Sequential(nn.Linear(4, 2)), torch.rand(3, 4))


def test_calibrate_and_infer_commands_round_trip(converted, tmp_path, capsys):
    """`spikelab calibrate` certifies (or says why not), saves the controller with the model, and
    `spikelab infer --dynamic` uses it: the same exit steps as the controller in Python."""
    from spikelab.cli import main

    snn, _, _ = converted
    torch.manual_seed(5)
    x = torch.rand(600, 12)
    with torch.no_grad():
        y = snn.run(x, 24).sum(0).argmax(1)
    y[:30] = (y[:30] + 1) % 4  # not one class, some wrong
    torch.save(snn, tmp_path / "snn.pt")
    torch.save({"x": x, "y": y}, tmp_path / "held.pt")
    torch.save({"x": x[:100], "y": y[:100]}, tmp_path / "test.pt")
    out = tmp_path / "out"
    argv = ["calibrate", str(tmp_path / "snn.pt"), "--trust", "--data", str(tmp_path / "held.pt"), "--t-max", "24",
            "--max-drop", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "logit_margin" in printed and (out / "snn_dynamic.pt").exists() and (out / "dynamic.png").exists()
    saved = torch.load(out / "snn_dynamic.pt", weights_only=False)
    ctl = DynamicConfidence.from_state(saved.dynamic_confidence)
    assert ctl.score == "logit_margin" and ctl.evidence == "sum" and ctl.t_max == 24
    assert main(["infer", str(out / "snn_dynamic.pt"), "--trust", "--dynamic", "--data", str(tmp_path / "test.pt")]) == 0
    expected = ctl.run(snn, x[:100], mode="live", static=True)
    assert f"at {expected.mean_steps:.1f} mean steps" in capsys.readouterr().out
    # too few held-out samples for the certificate: it says so and falls back
    torch.save({"x": x[:100], "y": y[:100]}, tmp_path / "small.pt")
    with pytest.warns(UserWarning, match="cannot certify"):
        assert main(argv[:4] + [str(tmp_path / "small.pt")] + argv[5:]) == 0
