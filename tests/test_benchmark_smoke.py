"""The speed benchmark runs and finds every peer (timings are not asserted: they belong in
benchmarks/, not in tests)."""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_neuron_speed_runs_with_all_peers():
    import neuron_speed

    results = neuron_speed.bench_size(4, 2, 64, repeats=1, device="cpu", skip=set(), memory=False)
    assert set(results) == {"spikelab", "spikelab-torch-reference", "snntorch", "spikingjelly", "norse"}
    for name, r in results.items():
        assert r["train_ms"] > 0 and r["infer_ms"] > 0, name
    # spikelab saves one float per neuron-step (plus per-neuron parameters) for backward
    assert results["spikelab"]["saved_MB"] * 1e6 <= 4 * 4 * 2 * 64 + 4 * 2 * 64 * 4
