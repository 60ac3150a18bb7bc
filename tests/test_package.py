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
                 "layers", "surrogate", "neurons"):
        assert hasattr(spikelab, name), name


def test_readme_quick_start_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has a python quick start"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["net"](namespace["x"]).shape == (25, 32, 10)


def test_demo_writes_report(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "3", "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["history"]) == 3
    assert summary["test_accuracy"] > 0.8  # 4 classes: chance is 0.25
    for png in ("training_curve.png", "raster.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_cli_help_and_unknown_command(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "summary.json" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "spikelab.cli", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_every_subpackage_is_declared_for_installation():
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "spikelab").rglob("__init__.py")}
    found |= {".".join(("spikelab",) + p.relative_to(ROOT).parent.parts)
              for p in (ROOT / "kernels").rglob("__init__.py")}
    assert found == declared
