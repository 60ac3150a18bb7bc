import os
from pathlib import Path

import pytest
import torch

# Without a GPU, the Triton kernels are checked on CPU tensors in Triton's interpreter; the
# variable must be set before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def samples_dir() -> Path:
    """The real recordings in ../shared/samples (skip cleanly where absent)."""
    path = Path(os.environ.get("SPIKELAB_SAMPLES", SAMPLES))
    if not path.is_dir():
        pytest.skip(f"real sample recordings not found at {path}")
    return path
