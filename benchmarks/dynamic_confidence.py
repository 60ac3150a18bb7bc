"""Dynamic Confidence against the oracle, the seed paper's setting and the AOI-SNN cutoff, one run.

Two workloads, every policy calibrated on held-out data (never the test split) for at most
``--budget`` accuracy points below the static accuracy at ``t_max``:

- ``events``: DigitsDVS at 1 ms bins, T = 300, a directly trained SNN (rate, TET and prefix losses)
  and a converted CNN (see ``dynamic_workloads.py``). Per network: static accuracy by
  T, the oracle, each policy's test accuracy and mean steps (and its share of the oracle's
  step saving), the same over 100 random re-splits of held-out + test (a 359-sample test
  split resolves 0.5 points as 1.8 samples), each policy's Pareto front on the test split,
  the risk-control simulation (violation rate against delta), live-mode wall time.
- ``images``: the converted count-image CNN at t_max = 64 (static input at every step, as
  before), with live-mode wall time at batch 256.

Writes ``dynamic_confidence.json`` and ``dynamic_confidence.png`` to ``--out``.

    python benchmarks/dynamic_confidence.py [--workload all|events|images] [--budget 0.5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from spikelab.dynamic import DynamicConfidence, calibrate_trace, oracle, pareto, simulate
from spikelab.dynamic.calibrate import candidates, schedule_weights
from spikelab.dynamic.cutoff import calibrate_top_k, top_k_thresholds


def policies(budget: float) -> dict:
    """name -> (controller factory, calibration on held-out traces)."""

    def dc(ctl_args: dict, **cal_args):
        return (lambda t_max: DynamicConfidence(t_max=t_max, **ctl_args),
                lambda ctl, trace, y: calibrate_trace(ctl, trace, y, max_accuracy_drop=budget, **cal_args))

    return {
        "seed paper: maxprob of the mean readout, temperature 1": dc(
            {"score": "maxprob", "temperature": 1.0, "evidence": "mean"}, delta=None, schedules=(0.0,)),
        "simple rule: accumulated top-1 minus top-2, constant": dc(
            {"score": "logit_margin"}, delta=None, schedules=(0.0,)),
        "AOI-SNN Top-K cutoff": (lambda t_max: DynamicConfidence("logit_margin", t_max=t_max),
                                 lambda ctl, trace, y: calibrate_top_k(ctl, trace, y, budget)),
        "maxprob of the sum, fitted temperature, certified": dc({"score": "maxprob"}, schedules=(0.0,)),
        "default score, uncertified (delta=None)": dc({}, delta=None),
        "default (certified, delta=0.1)": dc({}),
    }


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def evaluate(name: str, factory, calibration, held: torch.Tensor, yh, test: torch.Tensor, yt) -> dict:
    """Calibrate on held-out outputs, score on test outputs."""
    t_max = held.shape[0]
    ctl = factory(t_max)
    cal = quiet(calibration, ctl, ctl.trace_outputs(held), yh)
    trace = ctl.trace_outputs(test)
    result = ctl.decide(trace)
    static = (trace.prediction[-1] == yt).float().mean().item()
    best = oracle(trace, yt)["stable_mean_steps"]
    accuracy = (result.predictions == yt).float().mean().item()
    return {"policy": name, "controller": repr(ctl), "certified_delta": getattr(cal, "delta", None),
            "accuracy": accuracy, "static_accuracy": static,
            "drop_points": 100 * (static - accuracy), "mean_steps": result.mean_steps,
            "step_reduction": 1 - result.mean_steps / t_max,
            "share_of_oracle_saving": (t_max - result.mean_steps) / max(t_max - best, 1e-9)}


def resplits(factory, calibration, pool: torch.Tensor, labels, held: int, repeats: int, budget: float) -> dict:
    """Mean test drop and share of the oracle's saving over random calibration/test splits of a pool."""
    gen = torch.Generator().manual_seed(7)
    drops, shares, steps = [], [], []
    for _ in range(repeats):
        order = torch.randperm(pool.shape[1], generator=gen)
        h, t = order[:held], order[held:]
        row = evaluate("", factory, calibration, pool[:, h], labels[h], pool[:, t], labels[t])
        drops.append(row["drop_points"])
        shares.append(row["share_of_oracle_saving"])
        steps.append(row["mean_steps"])
    drops_np = np.array(drops)
    return {"repeats": repeats, "mean_drop_points": float(drops_np.mean()),
            "share_over_budget": float((drops_np > 100 * budget + 1e-9).mean()),
            "mean_share_of_oracle_saving": float(np.mean(shares)), "mean_steps": float(np.mean(steps))}


def fronts(test: torch.Tensor, yt) -> dict:
    """Pareto fronts on the test split over every threshold: the seed paper's score, the
    default family, and the AOI cutoff over epsilon."""
    t_max = test.shape[0]
    out = {}
    families = {"maxprob of the mean (seed paper)": (DynamicConfidence("maxprob", 1.0, t_max=t_max, evidence="mean"),
                                                      0.0),
                "default score and schedule": (DynamicConfidence(t_max=t_max), None)}
    for label, (ctl, gamma) in families.items():
        trace = ctl.trace_outputs(test)
        gamma = default_schedule() if gamma is None else gamma
        found = candidates(trace.confidence.double() * schedule_weights(gamma, t_max).unsqueeze(1),
                           trace.prediction, yt, ctl.t_min)
        out[label] = _front(found["steps"] / len(yt), found["correct"] / len(yt))
    ctl = DynamicConfidence("logit_margin", t_max=t_max)
    trace = ctl.trace_outputs(test)
    points = []
    for eps in [0.0] + np.geomspace(1e-3, 0.5, 25).tolist():
        result = ctl.decide(trace, top_k_thresholds(ctl, trace, yt, eps))
        points.append((result.mean_steps, (result.predictions == yt).float().mean().item()))
    steps, accs = zip(*points)
    out["AOI-SNN Top-K (epsilon sweep)"] = _front(np.array(steps), np.array(accs))
    return out


def default_schedule() -> float:
    from spikelab.dynamic.calibrate import SCHEDULES

    return float(SCHEDULES[0])


def _front(steps: np.ndarray, accs: np.ndarray) -> list:
    rows = [{"mean_steps": float(s), "accuracy": float(a)} for s, a in zip(steps, accs)]
    return [(r["mean_steps"], r["accuracy"]) for r in pareto(rows)]


def timed(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def live_speed(controller: DynamicConfidence, model, inputs: torch.Tensor, static: bool) -> dict:
    t_max = controller.t_max
    seq = inputs.unsqueeze(0).expand(t_max, *inputs.shape) if static else inputs[:t_max]

    def run_static():
        with torch.no_grad():
            model.reset()
            model(seq)
            model.reset()

    live = controller.run(model, inputs, mode="live", static=static)
    static_s = timed(run_static)
    live_s = timed(lambda: controller.run(model, inputs, mode="live", static=static))
    reduction = 1 - live.mean_steps / t_max
    return {"batch": int(seq.shape[1]), "static_ms": 1e3 * static_s, "live_ms": 1e3 * live_s,
            "speedup": static_s / live_s, "step_reduction": reduction, "ideal_speedup": 1 / (1 - reduction),
            "wall_saving_over_step_saving": (1 - live_s / static_s) / max(reduction, 1e-9)}


def events(args, log) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import dynamic_workloads as wl

    data = wl.workload(Path(args.cache), seed=args.seed, epochs=args.epochs, log=log)
    yh, yt = data["labels"]["held_out"], data["labels"]["test"]
    results = {}
    for net, outs in data["nets"].items():
        held, test = outs["held_out"], outs["test"]
        t_max = test.shape[0]
        probe = DynamicConfidence(t_max=t_max).trace_outputs(test)
        static_by_t = [(t + 1, (probe.prediction[t] == yt).float().mean().item()) for t in range(t_max)]
        orc = oracle(probe, yt)
        orc_held = oracle(DynamicConfidence(t_max=t_max).trace_outputs(held), yh)
        log(f"\n== {net}: static test accuracy {static_by_t[-1][1]:.4f} at T={t_max}; oracle: stays correct from "
            f"{orc['stable_mean_steps']:.1f} steps on average ({100 * (1 - orc['stable_mean_steps'] / t_max):.1f}% "
            f"fewer); 90% of its saving = {t_max - 0.9 * (t_max - orc['stable_mean_steps']):.1f} mean steps")
        rows = []
        pool, labels = torch.cat([held, test], 1), torch.cat([yh, yt])
        for name, (factory, calibration) in policies(args.budget / 100).items():
            row = evaluate(name, factory, calibration, held, yh, test, yt)
            row["resplits"] = resplits(factory, calibration, pool, labels, held.shape[1], args.resplits,
                                       args.budget / 100)
            rows.append(row)
            r = row["resplits"]
            if name.startswith(("default (certified", "maxprob of the sum")) and row["certified_delta"] is None:
                log("  (the next row fell back to the uncertified choice: too few held-out samples)")
            log(f"  {name:55s} test {row['accuracy']:.4f} ({-row['drop_points']:+.2f} pts) at "
                f"{row['mean_steps']:6.1f} steps: {100 * row['share_of_oracle_saving']:5.1f}% of the oracle's saving"
                f" | {r['repeats']} re-splits: {-r['mean_drop_points']:+.2f} pts mean, "
                f"{100 * r['share_over_budget']:.0f}% over budget, {100 * r['mean_share_of_oracle_saving']:.1f}%")
        results[net] = {"static_accuracy_by_t": static_by_t, "oracle": orc, "oracle_held_out": orc_held,
                        "policies": rows, "fronts": fronts(test, yt)}
        if net == "trained" or not args.quick:
            results[net]["risk"] = risk(pool, labels, held.shape[1], args, log)
        if outs.get("state") is not None and net in ("trained", "trained_prefix"):
            model = wl.trained_snn()
            model.load_state_dict(outs["state"])
            model.eval()
            ctl = DynamicConfidence(t_max=t_max)
            quiet(calibrate_trace, ctl, ctl.trace_outputs(held), yh, max_accuracy_drop=args.budget / 100)
            frames, _ = wl.test_frames()
            speed = live_speed(ctl, model, wl.as_sequence(frames[:args.live_batch]), static=False)
            results[net]["live"] = speed
            log(f"  live mode (batch {speed['batch']}): static {speed['static_ms']:.0f} ms, dynamic "
                f"{speed['live_ms']:.0f} ms -> {speed['speedup']:.2f}x for {100 * speed['step_reduction']:.1f}% fewer "
                f"steps; wall-time saving = {speed['wall_saving_over_step_saving']:.2f} x the step saving")
    for net in ("trained", "trained_tet", "trained_prefix"):
        if net in results:
            log(f"oracle mean steps, {net}: test {results[net]['oracle']['stable_mean_steps']:.1f}, held-out "
                f"{results[net]['oracle_held_out']['stable_mean_steps']:.1f} "
                f"(static test accuracy {results[net]['static_accuracy_by_t'][-1][1]:.4f})")
    return results


def risk(pool: torch.Tensor, labels: torch.Tensor, size: int, args, log) -> list:
    """Violation rate of the certified calibration (and of the uncertified one) by simulation."""
    ctl = DynamicConfidence(t_max=pool.shape[0])
    trace = ctl.trace_outputs(pool)
    rows = []
    for delta in (0.05, 0.1, 0.2):
        rows.append(simulate(ctl, trace, labels, args.budget / 100, delta, size, repeats=args.risk_repeats))
    rows.append(simulate(ctl, trace, labels, args.budget / 100, 0.1, size, repeats=args.risk_repeats,
                         certified=False))
    for r in rows:
        label = f"delta={r['delta']}" if r["delta"] is not None else "uncertified"
        log(f"  risk simulation, {label:12s}: expected drop over {args.budget:.2f} pts in "
            f"{100 * r['violation_rate']:.1f}% of {r['repeats']} calibrations (+-{100 * r['violation_stderr']:.1f}); "
            f"mean drop {100 * r['mean_drop']:.2f} pts at {r['mean_steps']:.1f} steps"
            + (f"; {r['uncertified_fallbacks']} fell back uncertified" if r["uncertified_fallbacks"] else ""))
    return rows


def images(args, log) -> dict:
    from spikelab.convert import convert
    from spikelab.data.datasets.digits import digits_dvs_images
    from spikelab.demo import count_image_cnn, fit_classifier

    xtr, ytr = digits_dvs_images("train")
    xte, yte = digits_dvs_images("test")
    order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(1234))  # files are sorted by class
    fit_idx, cal_idx = order[: -args.held_out], order[-args.held_out:]
    torch.manual_seed(args.seed)
    ann = fit_classifier(count_image_cnn(), xtr[fit_idx], ytr[fit_idx], epochs=10)
    snn = convert(ann, xtr[fit_idx][:512])
    t_max = 64
    with torch.no_grad():
        held = snn(xtr[cal_idx].unsqueeze(0).expand(t_max, *xtr[cal_idx].shape))
        test = snn(xte.unsqueeze(0).expand(t_max, *xte.shape))
    snn.reset()
    budget = args.image_budget / 100
    orc = oracle(DynamicConfidence(t_max=t_max).trace_outputs(test), yte)
    log(f"\n== images (converted count-image CNN, t_max={t_max}, budget {args.image_budget} pts, "
        f"{args.held_out} held-out): oracle {orc['stable_mean_steps']:.1f} steps")
    rows = []
    for name, (factory, calibration) in policies(budget).items():
        row = evaluate(name, factory, calibration, held, ytr[cal_idx], test, yte)
        rows.append(row)
        if name.startswith(("default (certified", "maxprob of the sum")) and row["certified_delta"] is None:
            log("  (the next row fell back to the uncertified choice: too few held-out samples)")
        log(f"  {name:55s} test {row['accuracy']:.4f} ({-row['drop_points']:+.2f} pts) at {row['mean_steps']:5.1f} "
            f"steps ({100 * row['step_reduction']:.1f}% fewer)")
    ctl = DynamicConfidence(t_max=t_max)
    quiet(calibrate_trace, ctl, ctl.trace_outputs(held), ytr[cal_idx], max_accuracy_drop=budget)
    speed = live_speed(ctl, snn, torch.cat([xte, xte])[:256], static=True)
    log(f"  live mode (batch 256): static {speed['static_ms']:.0f} ms, dynamic {speed['live_ms']:.0f} ms -> "
        f"{speed['speedup']:.2f}x for {100 * speed['step_reduction']:.1f}% fewer steps; wall-time saving = "
        f"{speed['wall_saving_over_step_saving']:.2f} x the step saving")
    return {"oracle": orc, "policies": rows, "live": speed, "fronts": fronts(test, yte)}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("trained", "trained_tet", "trained_prefix", "converted", "images") if k in results]
    has_risk = any("risk" in results[k] for k in panels)
    fig, axes = plt.subplots(1, len(panels) + has_risk, figsize=(4.4 * (len(panels) + has_risk), 3.8))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, panels):
        r = results[key]
        if "static_accuracy_by_t" in r:
            ts, accs = zip(*r["static_accuracy_by_t"])
            ax.plot(ts, accs, color="0.6", label="static, by T")
        for label, front in r["fronts"].items():
            steps, accs = zip(*front)
            ax.step(steps, accs, where="post", label=label, lw=1)
        for row in r["policies"]:
            if row["policy"] in ("default (certified, delta=0.1)", "seed paper: maxprob of the mean readout, temperature 1",
                                 "AOI-SNN Top-K cutoff"):
                ax.plot(row["mean_steps"], row["accuracy"], "*", ms=10, label=f"calibrated: {row['policy'][:24]}")
        ax.plot(r["oracle"]["stable_mean_steps"], r["oracle"]["stable_accuracy"], "ks", label="oracle")
        top = r["policies"][0]["static_accuracy"]
        ax.set_ylim(max(0.0, top - 0.25), min(1.0, top + 0.06))
        ax.set_title(key)
        ax.set_xlabel("mean steps (test)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=6)
    if has_risk:
        ax = axes[-1]
        for key in panels:
            rows = [row for row in results[key].get("risk", []) if row["delta"] is not None]
            if rows:
                ax.errorbar([row["delta"] for row in rows], [row["violation_rate"] for row in rows],
                            yerr=[2 * row["violation_stderr"] for row in rows], marker="o", label=key)
        ax.plot([0, 0.25], [0, 0.25], "k--", lw=1, label="violation = delta")
        ax.set_xlabel("delta")
        ax.set_ylabel("violation rate (simulated)")
        ax.set_title("risk control")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("all", "events", "images"), default="all")
    parser.add_argument("--budget", type=float, default=0.5, help="accuracy points below static (events)")
    parser.add_argument("--image-budget", type=float, default=0.3, help="accuracy points below static (images)")
    parser.add_argument("--held-out", type=int, default=400, help="held-out samples of the images workload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the event SNNs")
    parser.add_argument("--resplits", type=int, default=100)
    parser.add_argument("--risk-repeats", type=int, default=200)
    parser.add_argument("--live-batch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="risk simulation on the trained network only")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "spikelab" / "benchmarks"))
    parser.add_argument("--out", default="dynamic_confidence_out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"budget_points": args.budget, "image_budget_points": args.image_budget}
    if args.workload in ("all", "events"):
        results.update(events(args, print))
    if args.workload in ("all", "images"):
        results["images"] = images(args, print)
    (out / "dynamic_confidence.json").write_text(json.dumps(results, indent=1, default=float))
    plot(results, out / "dynamic_confidence.png")
    print(f"wrote {out / 'dynamic_confidence.json'} and {out / 'dynamic_confidence.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
