import os
from pathlib import Path

import pytest
import torch

# Without a GPU, the Triton kernels are checked on CPU tensors in Triton's interpreter; the
# variable must be set before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Several xdist workers on a few cores: one compute thread each (torch, OpenMP, Numba), or
# their thread pools oversubscribe the cores and spin against each other. Subprocesses the
# tests start inherit the setting.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def samples_dir() -> Path:
    """The real recordings in ../shared/samples (see tests/needs.py: skipped where absent, or a
    failure under SPIKELAB_REQUIRE_SAMPLES=1)."""
    from tests.needs import samples

    return samples()
