"""Packaging, the README quick start, and the CLI's demo."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import spikelab
from spikelab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_no_generic_top_level_modules_installed():
    import spikelab.kernels

    assert Path(spikelab.kernels.__file__).parent.name == "kernels"
    for generic in ("kernels", "datasets"):
        spec = importlib.util.find_spec(generic)
        # the repository root may be on sys.path when pytest runs from it; an installed
        # top-level module would live in site-packages
        assert spec is None or "site-packages" not in str(spec.origin), generic


def test_public_api_reexported():
    for name in ("LIF", "IF", "PLIF", "AdaptiveLIF", "CurrentLIF", "ProbabilisticLIF", "reset", "select_batch",
                 "layers", "surrogate", "neurons", "models", "data", "train", "convert"):
        assert hasattr(spikelab, name), name


def test_readme_quick_start_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has a python quick start"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["net"](namespace["x"]).shape == (25, 32, 10)


@pytest.mark.heavy(70)
def test_demo_trains_on_builtin_events_and_writes_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2", "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["history"]) == 2 and summary["test_samples"] == 359
    assert summary["test_accuracy"] > 0.85  # 10 classes: chance is 0.1 (5 epochs reach ~0.96)
    assert "test accuracy" in capsys.readouterr().out
    for png in ("training_curve.png", "raster.png", "membrane.png", "firing_rates.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert (tmp_path / "events.gif").read_bytes()[:6] == b"GIF89a"
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    conversion = summary["conversion"]
    assert conversion["snn_accuracy"]["64"] >= conversion["ann_accuracy"] - 0.02
    assert (tmp_path / "conversion" / "accuracy_vs_timesteps.png").exists()
    dynamic = conversion["dynamic"]
    assert dynamic["mean_steps"] < 64 and dynamic["accuracy"] >= conversion["snn_accuracy"]["64"] - 0.02
    assert (tmp_path / "dynamic" / "dynamic.png").exists()
    exported = summary["nir_export"]  # the demo's network goes to NIR and back unchanged
    assert exported["reimported_max_abs_difference"] == 0.0 and exported["reimported_same_predictions"]
    assert exported["batchnorm_folding_prediction_agreement"] >= 0.95
    assert (tmp_path / "snn.nir").exists()
    assert any("neuron type: LIF" in v for v in exported["hardware_8bit"]["speck"])
    assert not any("weight bit width" in v for vs in exported["hardware_8bit"].values() for v in vs)
    # the checkpoint evaluates and exports through the CLI
    assert main(["eval", str(tmp_path / "best.pt")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "cli.nir"), "--target", "speck"]) == 1
    out = capsys.readouterr().out
    assert "wrote" in out and "speck:" in out and "neuron type: LIF (allowed: IF)" in out
    import nir

    assert set(nir.read(tmp_path / "cli.nir", type_check=True).nodes) == set(nir.read(tmp_path / "snn.nir").nodes)
    assert (tmp_path / "cli.speck.json").exists()


def test_cli_convert(tmp_path, capsys):
    import torch
    from torch import nn

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.rand(64, 6)
    torch.save(ann, tmp_path / "ann.pt")
    torch.save(x, tmp_path / "calib.pt")
    torch.save({"x": x, "y": ann(x).argmax(1)}, tmp_path / "test.pt")
    # a whole pickled model runs code when loaded: refused unless the user says they trust it
    assert main(["convert", "--weights", str(tmp_path / "ann.pt"), "--calibration", str(tmp_path / "calib.pt")]) == 2
    assert "would run code from the file" in capsys.readouterr().err
    assert main(["convert", "--weights", str(tmp_path / "ann.pt"), "--calibration", str(tmp_path / "calib.pt"),
                 "--test", str(tmp_path / "test.pt"), "--timesteps", "4,32", "--out", str(tmp_path / "o"),
                 "--trust"]) == 0
    out = capsys.readouterr().out
    assert "ANN accuracy 1.0000" in out and "T=  32" in out
    assert (tmp_path / "o" / "snn.pt").exists() and (tmp_path / "o" / "conversion_report.json").exists()
    torch.save(ann.state_dict(), tmp_path / "sd.pt")
    assert main(["convert", "--weights", str(tmp_path / "sd.pt"), "--calibration", str(tmp_path / "calib.pt")]) == 2
    assert "needs the architecture" in capsys.readouterr().err
    deep = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    torch.save(deep, tmp_path / "deep.pt")
    assert main(["convert", "--weights", str(tmp_path / "deep.pt"), "--calibration", str(tmp_path / "calib.pt"),
                 "--spike-fed-start", "0", "--out", str(tmp_path / "d"), "--trust"]) == 0
    snn = spikelab.files.load(tmp_path / "d" / "snn.pt", trust=True)  # a whole model the test itself wrote
    assert [site.start for _, site in snn.sites()] == [0.5, 0.0]
    assert main(["convert", "--weights", str(tmp_path / "deep.pt"), "--calibration", str(tmp_path / "calib.pt"),
                 "--start", "2", "--out", str(tmp_path / "d"), "--trust"]) == 2
    assert "start: expected a fraction of the threshold" in capsys.readouterr().err


def test_cli_export_saved_model_and_refusal(tmp_path, capsys):
    import torch

    import spikelab as sl
    from spikelab import layers as L

    model = L.Sequential(L.Linear(6, 5), sl.IF(reset="zero"), L.Linear(5, 2))
    torch.save(model, tmp_path / "m.pt")
    assert main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.nir"), "--input-shape", "6"]) == 2
    assert "would run code from the file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.nir"), "--input-shape", "6",
                 "--trust"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "m.nir").exists()
    assert main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.nir"), "--trust"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    torch.save(L.Sequential(L.Linear(6, 5), sl.LIF(beta=0.9)), tmp_path / "soft.pt")
    assert main(["export", str(tmp_path / "soft.pt"), "--out", str(tmp_path / "s.nir"), "--input-shape", "6",
                 "--trust"]) == 2
    assert "reset by subtraction" in capsys.readouterr().err


def test_config_neuron_spec(tmp_path):
    from spikelab.train.build import make_model
    from spikelab.train.config import ConfigError, load_config

    cfg = load_config({"model": {"name": "mlp", "hidden": [8], "neuron": {"type": "cuba", "reset": "zero"}},
                       "data": {"name": "digits_dvs"}})
    model = make_model(cfg, (34, 34, 2), 10)
    import spikelab as sl

    neurons = [m for m in model.modules() if isinstance(m, sl.CurrentLIF)]
    assert len(neurons) == 1 and neurons[0].reset_mode == "hard"
    for bad, needle in (({"type": "hh"}, "model.neuron.type: unknown neuron 'hh'"),
                        ({"type": "lif", "tau": -1}, "model.neuron: "), ("lif", "expected a mapping")):
        with pytest.raises(ConfigError, match=needle):  # refused when the configuration is read
            load_config({"model": {"name": "cnn", "neuron": bad}, "data": {"name": "digits_dvs"}})


def test_cli_train_from_yaml_and_config_errors(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{name: mlp, hidden: [32]}}\ndata: {{name: digits_dvs, time_bins: 4}}\n"
                   f"train: {{epochs: 1, batch_size: 64}}\nout: {tmp_path / 'run'}\n")
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "run" / "log.csv").exists()
    cfg.write_text("train: {lr: -1}\n")
    assert main(["train", str(cfg)]) == 2
    assert "train.lr: expected a positive value" in capsys.readouterr().err


def test_cli_help_and_unknown_command(capsys):
    assert main([]) == 2
    for command, text in (("demo", "summary.json"), ("train", "CONFIG.yaml"), ("eval", "checkpoint")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert text in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "spikelab.cli", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_every_subpackage_is_declared_for_installation():
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "spikelab").rglob("__init__.py")}
    found |= {".".join(("spikelab",) + p.relative_to(ROOT).parent.parts)
              for p in (ROOT / "kernels").rglob("__init__.py")}
    assert found == declared
