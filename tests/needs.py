"""What some tests need from outside the repository: the shared sample recordings and the peer
libraries (snnTorch, Norse, sinabs, Triton, TensorBoard).

A missing one skips the test, cleanly, on a developer's machine. Under
``SPIKELAB_REQUIRE_SAMPLES=1`` / ``SPIKELAB_REQUIRE_PEERS=1`` it fails instead, naming what is
missing, so a CI run cannot pass while silently skipping the checks against independent tools.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

SAMPLES = Path(os.environ.get("SPIKELAB_SAMPLES", Path(__file__).resolve().parents[2] / "shared" / "samples"))


def _required(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0")


def samples() -> Path:
    """The real recordings folder (``$SPIKELAB_SAMPLES``, else ``../shared/samples``)."""
    if not SAMPLES.is_dir():
        message = f"the sample recordings folder {SAMPLES} is absent (set SPIKELAB_SAMPLES to its path)"
        if _required("SPIKELAB_REQUIRE_SAMPLES"):
            pytest.fail(f"SPIKELAB_REQUIRE_SAMPLES=1: {message}", pytrace=False)
        pytest.skip(message)
    return SAMPLES


def peer(module: str) -> ModuleType:
    """Import a peer library (or one of its modules) for a comparison test."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        message = f"peer package {module!r} is not installed ({err})"
        if _required("SPIKELAB_REQUIRE_PEERS"):
            pytest.fail(f"SPIKELAB_REQUIRE_PEERS=1: {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)
