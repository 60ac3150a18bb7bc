import itertools
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
def fresh_dynamo():
    """torch.compile from empty caches: dynamo counts recompilations per code object for the whole
    process (8 at most, a hard failure with fullgraph=True), and every Sequential compiled by an
    earlier test on this worker counts against Sequential.forward."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def samples_dir() -> Path:
    """The real recordings in ../shared/samples (see tests/needs.py: skipped where absent, or a
    failure under SPIKELAB_REQUIRE_SAMPLES=1)."""
    from tests.needs import samples

    return samples()


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy(seconds): a test that takes `seconds` or more on one core; "
                                       "several xdist workers start these first (see below)")


def pytest_collection_modifyitems(config, items):
    """With several xdist workers, start the heavy tests first and spread them over the workers.

    xdist's worksteal scheduler hands worker k the k-th contiguous slice of the collection and
    later moves tests from the tail of a busy worker's queue; a heavy test left near the end of
    a slice can start when the other workers are nearly done and run alone. Each slice here
    begins with its share of the heavy tests (longest first, each to the slice with the least
    heavy time), then light tests in collection order. Every worker computes the same order."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    heavy = [item for item in items if item.get_closest_marker("heavy")]
    if workers < 2 or not heavy:
        return
    light = [item for item in items if not item.get_closest_marker("heavy")]
    seconds = lambda item: float(item.get_closest_marker("heavy").args[0])  # noqa: E731
    shares: list[list] = [[] for _ in range(workers)]
    for item in sorted(heavy, key=seconds, reverse=True):
        min(shares, key=lambda share: sum(map(seconds, share))).append(item)
    # the slice sizes of xdist's first distribution: worker k gets len(rest) // (workers - k)
    ordered, remaining, light_iter = [], len(items), iter(light)
    for k, share in enumerate(shares):
        size = remaining // (workers - k)
        ordered += share + list(itertools.islice(light_iter, max(0, size - len(share))))
        remaining -= max(size, len(share))
    ordered += list(light_iter)
    assert sorted(map(id, ordered)) == sorted(map(id, items))
    items[:] = ordered
