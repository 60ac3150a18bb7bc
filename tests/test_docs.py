"""Every Python block of the runnable documentation pages executes (in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
RUNNABLE = ["quickstart.md", "export.md", "custom-neurons.md", "training.md", "tutorials/train-on-events.md", "tutorials/convert.md"]
# tutorials/dynamic.md runs in test_dynamic_tutorial_results, which also checks its figures


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def _quickstart(ns, folder):
    assert ns["out"].shape == (25, 32, 10) and ns["scores"].shape == (32, 10)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ns["net"].parameters())


def _training(ns, folder):
    assert ns["history"][-1]["val_accuracy"] >= 0.5  # chance 0.25: one group of inputs per class
    assert (len(ns["trainer"].train_set), len(ns["trainer"].val_set), len(ns["trainer"].test_set)) == (256, 288, 359)
    assert (folder / "curve.png").read_bytes()[:4] == b"\x89PNG"


def _train_on_events(ns, folder):
    assert ns["history"][-1]["test_accuracy"] >= 0.3  # ten digits: chance 0.1
    for name in ("events.png", "events.gif", "raster.png", "membrane.png", "in_out.png", "rates.png"):
        assert (folder / name).stat().st_size > 0, name
    rates = ns["report"]["firing_rate"]
    assert rates and all(0 <= r <= 1 for r in rates.values()) and any(r > 0 for r in rates.values())


def _convert(ns, folder):
    report = ns["report"]
    assert report["ann_accuracy"] >= 0.5  # ten digits: chance 0.1
    assert report["accuracy"]["32"] >= report["ann_accuracy"] - 0.05 and report["accuracy"]["32"] >= report["accuracy"]["1"]
    assert ns["agree"] >= 0.8


# what each page's code must give, beyond running (export and custom-neurons assert in their own blocks)
RESULTS = {"quickstart.md": _quickstart, "training.md": _training, "tutorials/train-on-events.md": _train_on_events,
           "tutorials/convert.md": _convert}


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.heavy(13)) if p == "tutorials/convert.md" else p
                                  for p in RUNNABLE])
def test_page_code_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks(DOCS / page)
    assert blocks, f"{page} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page}"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page}[block {i}]", "exec"), namespace)
    if page in RESULTS:
        RESULTS[page](namespace, tmp_path)
    else:
        assert any("assert" in block for block in blocks), f"{page}: no result checked"


@pytest.mark.heavy(28)
def test_dynamic_tutorial_results(tmp_path, monkeypatch):
    """The tutorial's figures hold: a certified early stop that saves steps within the budget's reach."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_dynamic_results"}
    for i, block in enumerate(python_blocks(DOCS / "tutorials/dynamic.md")):
        exec(compile(block, f"dynamic.md[block {i}]", "exec"), namespace)
    assert namespace["cal"].delta == 0.1  # 500 held-out samples certify half a point
    assert namespace["result"].mean_steps < 0.6 * 32
    assert namespace["dynamic"] >= namespace["static"] - 0.02
    assert namespace["data"]["dynamic"]["mean_steps"] == namespace["result"].mean_steps
    assert (tmp_path / "dynamic_tutorial" / "dynamic.png").read_bytes()[:4] == b"\x89PNG"
