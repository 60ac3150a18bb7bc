"""The example scripts run end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deploy_checkpoint(tmp_path, capsys):
    deploy = _load("deploy_checkpoint")
    assert deploy.main(["--out", str(tmp_path), "--target", "speck", "--samples", "32"]) == 0
    summary = json.loads((tmp_path / "deploy.json").read_text())
    assert summary["round_trip_max_abs_difference"] == 0.0
    assert summary["quantization"]["bits"] == 8 and not summary["fits"]
    assert any("neuron type: LIF" in v for v in summary["violations"])
    assert summary["energy_per_sample_pj"]["snn"] > 0
    assert (tmp_path / "net.nir").exists() and (tmp_path / "firing_rates.png").exists()
    assert "speck:" in capsys.readouterr().out


def test_quickstart(capsys):
    """32 random spike patterns, 10 classes: the network memorises them (chance is 0.1)."""
    accuracy = _load("quickstart").main()
    assert accuracy >= 0.9
    assert f"training accuracy {accuracy:.2f}" in capsys.readouterr().out
