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


def test_streaming_benchmark_steps_the_same_neurons_as_every_peer():
    """Each peer's stepped IF and LIF give spikelab's spikes (bench raises otherwise), and all
    four libraries are found (Norse has no IF)."""
    import streaming_speed

    for kind, peers in (("if", {"snnTorch", "SpikingJelly"}), ("lif", {"snnTorch", "SpikingJelly", "Norse"})):
        per_step = streaming_speed.bench(kind, (3, 4, 6, 6), steps=6, repeats=1)
        assert set(per_step) == {"spikelab"} | peers
        assert all(ms > 0 for ms in per_step.values())
