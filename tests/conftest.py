import os
from pathlib import Path

# Several xdist workers on a few cores: one compute thread each (torch, OpenMP, BLAS, Numba), or
# their thread pools oversubscribe the cores and spin against each other. Set before torch and
# NumPy start their pools; subprocesses the tests start inherit the setting.
SEVERAL_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
if SEVERAL_WORKERS:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if SEVERAL_WORKERS:
    torch.set_num_threads(1)  # in case a plugin imported torch first

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
