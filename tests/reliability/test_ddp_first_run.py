"""The first data-parallel run on an empty cache: both ranks open the same dataset at once; one
builds the cache while the other waits on its lock, then both train. The run also starts from an
empty kernel cache, so both ranks generate, write and compile the same neuron kernels into one
folder at the same moment. (Many builders racing for one dataset cache, repeatedly:
tests/reliability/test_cache.py; data-parallel training on compiled kernels: tests/test_train.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spikelab.data.datasets.digits import VERSION, build_digits_dvs
from spikelab.data.cache import default_cache_root

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.heavy(25)
def test_first_torchrun_on_an_empty_cache_succeeds(tmp_path):
    root = build_digits_dvs(default_cache_root() / f"digits-dvs-v{VERSION}", quiet=True)  # the recordings, made once
    cache, kernels, cfg = tmp_path / "cache", tmp_path / "kernels", tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "mlp", "hidden": [16]}, "data": {"root": str(root), "time_bins": 4},
        "train": {"epochs": 1, "batch_size": 128, "scheduler": "none"}, "out": str(tmp_path / "run")}))
    env = {**os.environ, "SPIKELAB_CACHE": str(cache), "SPIKELAB_CACHE_DIR": str(kernels),
           "OMP_NUM_THREADS": "1", "SPIKELAB_TUNE_ALLOCATOR": "0"}
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "spikelab.cli", "train",
                           str(cfg), "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "last.pt").exists()
    built = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(built) == 2 and all(n.startswith(("DigitsDVS-train-", "DigitsDVS-test-")) for n in built), built
    # the ranks' kernel sources are in place and no temporary file is left
    written = sorted(p.name for p in (kernels / "kernels").iterdir())
    sources = [n for n in written if n.startswith("spikelab_generated_numba_") and n.endswith(".py")]
    assert sources and not [n for n in written if n.endswith(".tmp")], written
