"""Dynamic Confidence calibration: exact candidate thresholds (against brute force), the
certified choice (binomial test by hand), temperature fitting, the AOI-SNN Top-K cutoff, the
risk simulation, warnings and errors naming the argument."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from spikelab.dynamic import DynamicConfidence, Trace, calibrate_trace, candidates, fit_temperature, simulate
from spikelab.dynamic.calibrate import schedule_weights
from spikelab.dynamic.cutoff import calibrate_top_k, optimal_cutoff_steps, top_k_thresholds
from spikelab.dynamic.risk import certified_prefix, samples_needed


def random_outputs(t_max: int, batch: int, classes: int, seed: int, drift: float = 0.15, ties: bool = False):
    """Per-step outputs whose true class slowly wins (so early exits trade accuracy for steps)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (batch,), generator=gen)
    out = torch.randn(t_max, batch, classes, generator=gen)
    out[:, torch.arange(batch), labels] += drift
    if ties:
        out = out.round()  # integer outputs: many equal scores
    return out, labels


def brute_force(scores: torch.Tensor, prediction: torch.Tensor, labels: torch.Tensor, threshold: float,
                t_min: int) -> tuple[int, int, int]:
    """Correct samples, sum of exit steps and flips, straight from the definition."""
    t_max, batch = scores.shape
    scores, prediction, labels = scores.tolist(), prediction.tolist(), labels.tolist()
    correct = steps = flips = 0
    for b in range(batch):
        exit_t = t_max
        for t in range(t_min, t_max + 1):
            if scores[t - 1][b] >= threshold:
                exit_t = t
                break
        right = prediction[exit_t - 1][b] == labels[b]
        correct += right
        steps += exit_t
        flips += prediction[-1][b] == labels[b] and not right
    return correct, steps, flips


@pytest.mark.parametrize("t_max,batch,t_min,ties", [(12, 30, 1, False), (20, 17, 4, False), (9, 40, 1, True),
                                                    (1, 5, 1, False)])
def test_candidates_are_exact_against_brute_force(t_max, batch, t_min, ties):
    out, labels = random_outputs(t_max, batch, 4, seed=t_max + batch, ties=ties)
    ctl = DynamicConfidence("logit_margin", t_max=t_max, t_min=t_min)
    trace = ctl.trace_outputs(out)
    found = candidates(trace.confidence, trace.prediction, labels, t_min)
    assert found["threshold"][0] == math.inf
    assert (np.diff(found["threshold"][1:]) < 0).all()  # distinct, decreasing
    for i, thr in enumerate(found["threshold"]):
        expected = brute_force(trace.confidence, trace.prediction, labels, thr, t_min)
        assert (found["correct"][i], found["steps"][i], found["flips"][i]) == expected, thr
        # any threshold strictly between two candidates decides like the higher one
        if 0 < i < len(found["threshold"]) - 1:
            between = (thr + found["threshold"][i + 1]) / 2
            assert brute_force(trace.confidence, trace.prediction, labels, between, t_min) == expected
    # and the controller's own decide agrees at every candidate
    for i in range(1, len(found["threshold"]), max(1, len(found["threshold"]) // 7)):
        result = ctl.decide(trace, torch.tensor(found["threshold"][i]).float())
        assert int(result.exit_steps.sum()) == found["steps"][i]
    # every score that changes a decision is a candidate: none missing
    all_values = set(trace.confidence[t_min - 1:-1].double().flatten().tolist())
    outcomes = {brute_force(trace.confidence, trace.prediction, labels, v, t_min) for v in all_values}
    assert outcomes <= set(zip(found["correct"].tolist(), found["steps"].tolist(), found["flips"].tolist()))


def test_uncertified_calibration_picks_the_fewest_steps_within_the_budget():
    out, labels = random_outputs(10, 100, 3, seed=3)
    ctl = DynamicConfidence("logit_margin", t_max=10)
    trace = ctl.trace_outputs(out)
    cal = calibrate_trace(ctl, trace, labels, max_accuracy_drop=0.04, delta=None, schedules=(0.0,))
    static = int((trace.prediction[-1] == labels).sum())
    best = None
    for v in set(trace.confidence.double().flatten().tolist()) | {math.inf}:
        correct, steps, _ = brute_force(trace.confidence, trace.prediction, labels, v, 1)
        if correct >= static - 4 and (best is None or steps < best):  # 4% of 100 = 4 samples
            best = steps
    assert cal.mean_steps == pytest.approx(best / 100)
    assert round(cal.accuracy * 100) >= static - 4
    assert cal.delta is None and cal.samples == 100


def test_schedule_thresholds_equal_the_scaled_score_rule():
    """threshold(t) = base * (t_max / t) ** gamma on the score equals base on score * (t / t_max) ** gamma."""
    out, labels = random_outputs(24, 120, 5, seed=11)
    for gamma in (-0.5, 0.5):
        ctl = DynamicConfidence("logit_margin", t_max=24)
        trace = ctl.trace_outputs(out)
        cal = calibrate_trace(ctl, trace, labels, max_accuracy_drop=0.05, delta=None, schedules=(gamma,))
        assert cal.schedule == gamma
        scaled = trace.confidence.double() * schedule_weights(gamma, 24).unsqueeze(1)
        expected = brute_force(scaled, trace.prediction, labels, cal.threshold, 1)
        result = ctl.decide(trace)
        assert int(result.exit_steps.sum()) == expected[1]
        assert int((result.predictions == labels).sum()) == expected[0]
        thr = ctl.threshold
        if gamma < 0:
            assert (thr[1:] >= thr[:-1]).all()  # grows with t
        else:
            assert (thr[1:] <= thr[:-1]).all()  # relaxes with t


def test_binomial_fixed_sequence_by_hand():
    n, budget, delta = 500, 0.01, 0.1

    def p_value(k):  # P(Binomial(n, budget) <= k), from the definition
        return sum(math.comb(n, i) * budget ** i * (1 - budget) ** (n - i) for i in range(k + 1))

    assert p_value(0) < delta < p_value(3)
    passing = max(k for k in range(10) if p_value(k) <= delta)
    flips = np.array([0, 0, passing, passing + 1, 0, 0])  # the test stops at the first failure
    assert certified_prefix(flips, n, budget, delta) == 3
    assert certified_prefix(np.array([0, passing + 1, 0]), n, budget, delta) == 1
    assert certified_prefix(np.array([0, 0, 0]), n, 0.0, delta) == 1  # a zero budget certifies nothing
    need = samples_needed(budget, delta)
    assert (1 - budget) ** need <= delta < (1 - budget) ** (need - 1)


def test_certified_calibration_has_no_more_flips_than_the_test_allows():
    out, labels = random_outputs(20, 800, 4, seed=5, drift=0.3)
    ctl = DynamicConfidence(t_max=20)
    trace = ctl.trace_outputs(out)
    cal = calibrate_trace(ctl, trace, labels, max_accuracy_drop=0.01, delta=0.1)
    assert cal.delta == 0.1 and cal.mean_steps < 20
    result = ctl.decide(trace)
    right_static = trace.prediction[-1] == labels
    flips = int((right_static & (result.predictions != labels)).sum())
    cdf = np.cumsum([math.comb(800, i) * 0.01 ** i * 0.99 ** (800 - i) for i in range(20)])
    allowed = int(np.nonzero(cdf <= 0.1)[0][-1])  # the most flips the binomial test at 0.1 passes
    assert 0 < flips <= allowed
    loose = DynamicConfidence(t_max=20)
    calibrate_trace(loose, trace, labels, max_accuracy_drop=0.01, delta=None)
    assert loose.decide(trace).mean_steps <= result.mean_steps  # the guarantee costs steps


def test_risk_simulation_stays_within_delta():
    out, labels = random_outputs(16, 1500, 4, seed=8, drift=0.25)
    ctl = DynamicConfidence(t_max=16)
    trace = ctl.trace_outputs(out)
    certified = simulate(ctl, trace, labels, budget=0.01, delta=0.1, calibration_size=400, repeats=40, seed=1)
    loose = simulate(ctl, trace, labels, budget=0.01, delta=0.1, calibration_size=400, repeats=40, seed=1,
                     certified=False)
    assert certified["violation_rate"] <= 0.1 + 2 * certified["violation_stderr"] + 1e-9
    assert loose["violation_rate"] > certified["violation_rate"]
    assert certified["mean_steps"] > loose["mean_steps"]


def test_fitted_temperature_recovers_the_generating_one():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(1, 20000, 5, generator=gen)
    labels = torch.multinomial(torch.softmax(logits[0] / 2.0, -1), 1, generator=gen)[:, 0]
    ctl = DynamicConfidence("maxprob", t_max=1)
    assert fit_temperature(ctl, logits, labels) == pytest.approx(2.0, rel=0.05)
    calibrate_trace(ctl, ctl.trace_outputs(logits), labels, max_accuracy_drop=None, delta=None)
    assert ctl.temperature == pytest.approx(2.0, rel=0.05)
    fixed = DynamicConfidence("maxprob", temperature=0.7, t_max=1)
    calibrate_trace(fixed, fixed.trace_outputs(logits), labels, max_accuracy_drop=None, delta=None)
    assert fixed.temperature == 0.7  # a given temperature is kept


def test_sum_evidence_and_logit_margin_by_hand():
    """Outputs [T=3, B=2, C=2]; summed readouts and their top-1 minus top-2 gap:
      A: [2, 0], [0, 1], [3, 0] -> sums [2,0], [2,1], [5,1] -> gaps 2, 1, 4
      B: [0, 1], [0, 1], [0, 1] -> sums [0,1], [0,2], [0,3] -> gaps 1, 2, 3
    Thresholds [2.5, 1.5, 3.5]: A: 2 < 2.5, 1 < 1.5, 4 >= 3.5 -> step 3, class 0;
    B: 1 < 2.5, 2 >= 1.5 -> step 2, class 1. With the mean (gaps 2, .5, 1.33 and 1, 1, 1) both run to 3."""
    out = torch.tensor([[[2.0, 0], [0, 1]], [[0, 1], [0, 1]], [[3, 0], [0, 1]]])
    ctl = DynamicConfidence("logit_margin", threshold=[2.5, 1.5, 3.5], t_max=3)
    trace = ctl.trace_outputs(out)
    torch.testing.assert_close(trace.confidence, torch.tensor([[2.0, 1], [1, 2], [4, 3]]))
    result = ctl.decide(trace)
    assert result.exit_steps.tolist() == [3, 2] and result.predictions.tolist() == [0, 1]
    mean = DynamicConfidence("logit_margin", threshold=[2.5, 1.5, 3.5], t_max=3, evidence="mean")
    assert mean.decide(mean.trace_outputs(out)).exit_steps.tolist() == [3, 3]


def test_top_k_cutoff_by_hand():
    """Summed readouts of four samples (two classes), labels [0, 1, 0, 1]:
      A: [3,0] [5,0] [6,0] -> class 0 throughout: right, optimal cutoff step (OCT) 1
      B: [2,0] [4,0] [5,0] -> class 0: always wrong, OCT inf
      C: [0,1] [1,0] [2,0] -> right from step 2: OCT 2
      D: [0,0] throughout -> argmax 0: always wrong, OCT inf
    Gaps: step 1 [3, 2, 1, 0], step 2 [5, 4, 1, 0].
    epsilon = 0, step 1: ready (OCT <= 1) = {A}; by decreasing gap, only the set {A} is all
    ready -> beta = 2 (B's gap). Step 2: ready = {A, C}; only {A} -> beta = 4.
    epsilon = 0.5, step 2: {A, B, C, D} has 2 of 4 ready -> beta below every gap (0)."""
    # two classes, outputs chosen so the accumulated gaps are as above; labels all 0
    acc = torch.tensor([[[3.0, 0], [2, 0], [0, 1], [0, 0]],
                        [[5, 0], [4, 0], [1, 0], [0, 0]],
                        [[6, 0], [5, 0], [2, 0], [0, 0]]])  # [T=3, B=4, 2] summed readouts
    out = torch.cat([acc[:1], acc[1:] - acc[:-1]])
    labels = torch.zeros(4, dtype=torch.long)
    ctl = DynamicConfidence("logit_margin", t_max=3)
    trace = ctl.trace_outputs(out)
    # predictions: B is right at 1 but D ties (argmax 0 = right) every step; C wrong at step 1
    assert optimal_cutoff_steps(trace, labels).tolist() == [1, 1, 2, 1]
    labels_b = torch.tensor([0, 1, 0, 1])  # B and D wrong throughout: OCT inf
    assert optimal_cutoff_steps(trace, labels_b).tolist()[1] == math.inf
    thr = top_k_thresholds(ctl, trace, labels_b, epsilon=0.0)
    # step 1: ready = [A] (C's OCT is 2); sorted gaps [3 A, 2 B, 1 C, 0 D] -> top-1 only -> beta = 2
    assert thr[0].item() == pytest.approx(2.0) and thr[0].item() > 2.0
    # step 2: ready = A, C; sorted [5 A, 4 B, 1 C, 0 D]: only {A} qualifies -> beta = 4
    assert thr[1].item() == pytest.approx(4.0) and thr[1].item() > 4.0
    half = top_k_thresholds(ctl, trace, labels_b, epsilon=0.5)
    assert half[1].item() == 0.0  # {A,B,C,D}: 2 of 4 ready >= 0.5 -> everyone may stop
    with pytest.raises(ValueError, match="logit_margin"):
        top_k_thresholds(DynamicConfidence("maxprob", t_max=3), trace, labels_b, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        top_k_thresholds(ctl, trace, labels_b, 1.5)
    chosen = calibrate_top_k(ctl, trace, labels_b, max_accuracy_drop=0.0)
    assert chosen["accuracy"] >= (trace.prediction[-1] == labels_b).float().mean().item()


def test_bad_calibration_inputs_name_the_argument():
    out, labels = random_outputs(10, 50, 3, seed=2)
    ctl = DynamicConfidence(t_max=10)
    trace = ctl.trace_outputs(out)
    with pytest.raises(ValueError, match="labels: the held-out set holds one class"):
        calibrate_trace(ctl, trace, torch.zeros(50, dtype=torch.long))
    with pytest.raises(ValueError, match="labels: expected 50 integer"):
        calibrate_trace(ctl, trace, labels[:20])
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        calibrate_trace(ctl, trace, labels, max_accuracy_drop=5)
    with pytest.raises(ValueError, match="delta"):
        calibrate_trace(ctl, trace, labels, delta=1.5)
    with pytest.raises(ValueError, match="threshold: expected one value or one per step \\(10\\)"):
        DynamicConfidence(t_max=10, threshold=[1.0, 2.0])
    with pytest.raises(ValueError, match="outputs: expected per-step outputs"):
        ctl.trace_outputs(out[:4])
    with pytest.raises(ValueError, match="evidence"):
        DynamicConfidence(evidence="max")
    nan = out.clone()
    nan[3, 2, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        calibrate_trace(ctl, ctl.trace_outputs(nan), labels)


def test_warnings_for_budgets_the_data_cannot_support():
    out, labels = random_outputs(10, 100, 3, seed=4)
    ctl = DynamicConfidence(t_max=10)
    trace = ctl.trace_outputs(out)
    with pytest.warns(UserWarning, match=r"max_accuracy_drop=0.005, delta=0.1: 100 held-out samples cannot certify"):
        cal = calibrate_trace(ctl, trace, labels, max_accuracy_drop=0.005)
    assert cal.delta is None  # fell back, and says so
    with pytest.warns(UserWarning, match="zero budget cannot be certified"):
        calibrate_trace(ctl, trace, labels, max_accuracy_drop=0.0)
    with pytest.warns(UserWarning, match="cannot resolve it"):
        calibrate_trace(ctl, trace, labels, max_accuracy_drop=0.005, delta=None)
    # a network whose prediction only settles at the last step: no early exit, and a warning
    late = torch.zeros(10, 100, 3)
    late[:-1, torch.arange(100), (labels + 1) % 3] = 5.0  # confidently wrong until the last step
    late[-1, torch.arange(100), labels] = 100.0
    with pytest.warns(UserWarning, match="never stops early"):
        calibrate_trace(ctl, ctl.trace_outputs(late), labels, max_accuracy_drop=0.0, delta=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate_trace(ctl, trace, labels, max_accuracy_drop=0.05, delta=None)  # nothing to warn about


def test_state_is_json_safe_and_old_states_load_with_mean_evidence():
    ctl = DynamicConfidence(t_max=4, threshold=[math.inf, 3.0, 2.0, 1.0])
    state = json.loads(json.dumps(ctl.state()))
    again = DynamicConfidence.from_state(state)
    assert torch.equal(again.threshold, ctl.threshold) and again.score == "logit_margin"
    old = {"score": "maxprob", "temperature": 1.0, "threshold": [0.9] * 4, "t_min": 1, "t_max": 4}
    assert DynamicConfidence.from_state(old).evidence == "mean"
    with pytest.raises(ValueError, match="missing settings"):
        DynamicConfidence.from_state({"score": "maxprob"})
    with pytest.raises(ValueError, match="temperature"):
        DynamicConfidence.from_state({**old, "temperature": float("nan")})


@pytest.mark.parametrize("score,evidence", [("logit_margin", "sum"), ("maxprob", "sum"), ("margin", "mean")])
def test_live_mode_equals_trace_mode_with_per_step_thresholds(score, evidence):
    from spikelab.convert import convert

    torch.manual_seed(0)
    ann = torch.nn.Sequential(torch.nn.Linear(8, 24), torch.nn.ReLU(), torch.nn.Linear(24, 4)).eval()
    snn = convert(ann, torch.rand(100, 8))
    x = torch.rand(40, 8)
    ctl = DynamicConfidence(score, t_max=20, evidence=evidence)
    trace = ctl.trace(snn, x, static=True)
    labels = trace.prediction[-1].clone()
    labels[:3] = (labels[:3] + 1) % 4  # not one class, a few wrong
    calibrate_trace(ctl, trace, labels, max_accuracy_drop=None, target_steps=8, delta=None, schedules=(-0.5,))
    live = ctl.run(snn, x, mode="live", static=True)
    traced = ctl.run(snn, x, mode="trace", static=True)
    assert torch.equal(live.predictions, traced.predictions) and torch.equal(live.exit_steps, traced.exit_steps)
    assert live.mean_steps <= 8


@pytest.mark.parametrize("gamma", [-0.5, 0.0, 0.7])
def test_per_step_thresholds_decide_exactly_as_every_candidate(gamma):
    """The float32 per-step thresholds set on the controller reproduce the calibrated outcome of
    every candidate, including scores that sit exactly on a scaled boundary (sqrt(2) at step 2
    of 4 with gamma = -0.5 scales to exactly 1)."""
    from spikelab.dynamic.calibrate import _per_step

    out, labels = random_outputs(16, 60, 3, seed=21)
    ctl = DynamicConfidence("logit_margin", t_max=16)
    trace = ctl.trace_outputs(out)
    scores = trace.confidence.clone()
    scores[3, :5] = torch.tensor(2.0).sqrt()  # on a boundary for gamma = -0.5 (w_4 = 1/2 of t_max = 16)
    found = candidates(scores.double() * schedule_weights(gamma, 16).unsqueeze(1), trace.prediction, labels)
    for i in range(1, len(found["threshold"])):
        result = ctl.decide(Trace(scores, trace.prediction), _per_step(float(found["threshold"][i]), gamma, ctl))
        assert int(result.exit_steps.sum()) == found["steps"][i], found["threshold"][i]
        assert int((result.predictions == labels).sum()) == found["correct"][i]


def test_live_traces_equal_trace_mode_with_a_membrane_readout():
    """A non-spiking readout (a plain Linear last): live and trace mode sum the same way (float64),
    so every sample's scores agree to float32 rounding of the layer outputs (a matrix product
    over fewer rows may round differently), and the exits exactly."""
    import spikelab as sl

    torch.manual_seed(4)
    net = sl.layers.Sequential(torch.nn.Linear(6, 32), sl.LIF(beta=0.9), torch.nn.Linear(32, 5))
    x = torch.rand(120, 50, 6)
    ctl = DynamicConfidence(t_max=120)
    trace = ctl.trace(net, x)
    labels = torch.arange(50) % 5  # an untrained net: arbitrary labels are fine for a mechanics check
    calibrate_trace(ctl, trace, labels, max_accuracy_drop=None, target_steps=40, delta=None)
    live = ctl.run(net, x, mode="live", keep_traces=True)
    traced = ctl.run(net, x, mode="trace")
    assert torch.equal(live.exit_steps, traced.exit_steps) and torch.equal(live.predictions, traced.predictions)
    assert len(live.confidences) == len(traced.confidences)
    for a, b in zip(live.confidences, traced.confidences):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh runs it)")
def test_live_mode_on_cuda_equals_trace_mode():
    import spikelab as sl

    torch.manual_seed(6)
    net = sl.layers.Sequential(torch.nn.Linear(6, 32), sl.LIF(beta=0.9), torch.nn.Linear(32, 5), sl.LIF(beta=0.9))
    net = net.cuda()
    x = (torch.rand(60, 40, 6, device="cuda") < 0.5).float()
    ctl = DynamicConfidence(t_max=60, threshold=3.0)
    live, traced = ctl.run(net, x, mode="live"), ctl.run(net, x, mode="trace")
    assert torch.equal(live.exit_steps, traced.exit_steps) and torch.equal(live.predictions, traced.predictions)
    # calibration and its report on the GPU model's trace, labels on the GPU too
    from spikelab.dynamic.calibrate import calibrate, report

    labels = torch.arange(40, device="cuda") % 5
    result = calibrate(ctl, net, x, labels)
    assert result.samples == 40 and len(ctl.threshold) == 60
    assert report(ctl, ctl.trace(net, x), labels)["dynamic"]["mean_steps"] >= 1


def test_an_uncalibrated_controller_says_it_will_not_stop_early():
    import spikelab as sl

    net = sl.layers.Sequential(torch.nn.Linear(4, 3), sl.LIF(beta=0.9))
    with pytest.warns(UserWarning, match="threshold: never set"):
        result = DynamicConfidence(t_max=5).run(net, torch.rand(5, 2, 4), mode="trace")
    assert result.exit_steps.tolist() == [5, 5]
    calibrated_to_never = DynamicConfidence(t_max=5, threshold=math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrated_to_never.run(net, torch.rand(5, 2, 4), mode="live")  # set on purpose: no warning
