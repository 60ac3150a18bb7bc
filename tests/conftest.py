import os
from pathlib import Path

import pytest
import torch

# Without a GPU, the Triton kernels are checked on CPU tensors in Triton's interpreter; the
# variable must be set before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


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
