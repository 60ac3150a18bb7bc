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


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_code_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks(DOCS / page)
    assert blocks, f"{page} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page}"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page}[block {i}]", "exec"), namespace)


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
