"""Datasets over local folders in their published layouts, the decoded cache, collate."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from spikelab import data
from spikelab.data import DatasetNotFoundError, make_events
from spikelab.data.formats import aedat2, aedat3, atis


def test_nmnist_train60_yields_the_60_digits_with_labels(samples_dir):
    ds = data.NMNIST(samples_dir / "nmnist_train60", split="train")
    assert len(ds) == 60
    manifest = {e["file"]: e for e in json.loads((samples_dir / "MANIFEST.json").read_text())}
    for i, (path, label) in enumerate(ds.samples):
        events, got = ds[i]
        entry = manifest[str(path.relative_to(samples_dir))]
        assert got == label == int(entry["note"].split("label ")[1].split(",")[0])
        assert len(events) == entry["expected"]["events"]


def test_missing_folders_say_what_and_where(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"NMNIST \(test\): no 'Test' folder.*N-MNIST page.*nmnist.md"):
        data.NMNIST(tmp_path, split="test")
    (tmp_path / "Train" / "3").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no '<digit>/\\*.bin' recordings"):
        data.NMNIST(tmp_path, split="train")
    with pytest.raises(DatasetNotFoundError, match="DvsGesture"):
        data.DVSGesture(tmp_path, split="train")
    with pytest.raises(DatasetNotFoundError, match="shd_train.h5"):
        data.SHD(tmp_path, split="train")
    with pytest.raises(DatasetNotFoundError, match="class folders"):
        data.CIFAR10DVS(tmp_path, split="train")
    with pytest.raises(ValueError, match="split"):
        data.NMNIST(tmp_path, split="val")


@pytest.fixture
def gesture_root(tmp_path, samples_dir):
    """The DVS128 events of the AEDAT 2.0 sample as a user01 AEDAT 3.1 recording with the real
    gesture label file (events shifted to start at the first label's time)."""
    events = aedat2.read_aedat2(samples_dir / "aedat2" / "moving_dark_box_dvs128.aedat")
    events["t"] = events["t"] - events["t"][0] + 53_000_000
    folder = tmp_path / "DvsGesture"
    folder.mkdir()
    aedat3.write_aedat3(folder / "user01_natural.aedat", events)
    shutil.copy(samples_dir / "dvsgesture" / "user01_natural_labels.csv", folder / "user01_natural_labels.csv")
    aedat3.write_aedat3(folder / "user24_natural.aedat", events[:1000])
    (folder / "user24_natural_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,53000000,53100000\n")
    return tmp_path, events


def test_dvsgesture_cuts_recordings_by_the_label_file(gesture_root):
    root, events = gesture_root
    train = data.DVSGesture(root, split="train")
    assert len(train) == 12  # rows of user01_natural_labels.csv
    first, label = train[0]
    assert label == 0  # class 1 -> label 0
    assert len(first) > 0 and first["t"].min() >= 53_036_986 and first["t"].max() < 59_508_469
    expected = ((events["t"] >= 53_036_986) & (events["t"] < 59_508_469)).sum()
    assert len(first) == expected
    assert [s[1] for s in train.samples][:4] == [0, 1, 2, 4]
    test = data.DVSGesture(root, split="test")
    assert len(test) == 1 and test[0][1] == 2


def test_shd_layout(tmp_path):
    samples = [make_events([1, 2, 650], [0, 0, 0], [5, 50, 900], [1, 1, 1]), make_events([7], [0], [3], [1])]
    data.write_shd(tmp_path / "shd_train.h5", samples, [4, 19])
    ds = data.SHD(tmp_path, split="train")
    assert len(ds) == 2 and ds[1][1] == 19 and np.array_equal(ds[0][0], samples[0])


def test_cifar10dvs_split_rule(tmp_path):
    for cls in data.CIFAR10DVS.classes:
        (tmp_path / cls).mkdir()
        for n in (0, 899, 900):
            aedat2.write_aedat2(tmp_path / cls / f"cifar10_{cls}_{n}.aedat", make_events([1], [2], [3], [1]))
    train, test = data.CIFAR10DVS(tmp_path, "train"), data.CIFAR10DVS(tmp_path, "test")
    assert len(train) == 20 and len(test) == 10
    assert test[0][1] == 0 and test[9][1] == 9


def test_ncaltech_split(tmp_path):
    for cls in ("airplanes", "BACKGROUND_Google"):
        (tmp_path / "Caltech101" / cls).mkdir(parents=True)
        for n in range(10):
            atis.write_atis_bin(tmp_path / "Caltech101" / cls / f"image_{n:04d}.bin", make_events([1], [2], [3], [0]))
    train, test = data.NCaltech101(tmp_path, "train"), data.NCaltech101(tmp_path, "test")
    assert len(train) == 16 and len(test) == 4 and train.classes == ("BACKGROUND_Google", "airplanes")


def test_cache_slices_a_memory_map_and_rebuilds_on_change(tmp_path, samples_dir):
    root = tmp_path / "nmnist"
    shutil.copytree(samples_dir / "nmnist_train60", root)
    plain = data.NMNIST(root, "train")
    cached = data.NMNIST(root, "train", cache=True, cache_dir=tmp_path / "cache")
    for i in (0, 17, 59):
        assert np.array_equal(cached.events(i)[0], plain.events(i)[0])
        assert cached.events(i)[1] == plain.events(i)[1]
    ev, _ = cached.events(5)
    assert not ev.flags.owndata and not ev.flags.writeable  # a read-only view of the map, not a copy
    assert np.shares_memory(ev, cached._cache.events)
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1
    stamp = (folders[0] / "events.npy").stat().st_mtime_ns
    # a second dataset object reuses the cache without decoding
    again = data.NMNIST(root, "train", cache=True, cache_dir=tmp_path / "cache")
    assert (folders[0] / "events.npy").stat().st_mtime_ns == stamp and len(again) == 60
    # changing a source file changes the fingerprint: a new, correct cache
    victim = plain.samples[3][0]
    events = atis.read_atis_bin(victim)[:10]
    atis.write_atis_bin(victim, events)
    os.utime(victim, ns=(1, 1))
    rebuilt = data.NMNIST(root, "train", cache=True, cache_dir=tmp_path / "cache")
    assert len(rebuilt.events(3)[0]) == 10


def _frames(events):
    return data.functional.to_frame(events, (34, 34, 2), n_time_bins=4, dtype=np.float32)


def test_cache_with_forked_dataloader_workers(tmp_path, samples_dir):
    import spikelab as sl

    # the parallel neuron kernels start an OpenMP pool in this process first: forked workers
    # running the (serial) transform kernels must still work
    sl.LIF()(torch.rand(4, 2, 5000))
    ds = data.NMNIST(samples_dir / "nmnist_train60", "train", transform=_frames, cache=True,
                     cache_dir=tmp_path / "cache")
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=data.pad_collate,
                                         multiprocessing_context="fork")
    batches = list(loader)
    serial = list(torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=data.pad_collate))
    assert len(batches) == 8
    for (x, y, n), (xs, ys, ns) in zip(batches, serial):
        assert x.shape[1:] == (x.shape[1], 2, 34, 34) and x.shape[0] == 4
        assert torch.equal(x, xs) and torch.equal(y, ys)


def test_pad_collate():
    batch = [(np.ones((3, 2)), 1), (np.ones((5, 2)), 0)]
    x, y, lengths = data.pad_collate(batch)
    assert x.shape == (5, 2, 2) and y.tolist() == [1, 0] and lengths.tolist() == [3, 5]
    assert x[3:, 0].sum() == 0 and x[:, 1].sum() == 10
    with pytest.raises(ValueError, match="trailing shape"):
        data.pad_collate([(np.ones((3, 2)), 1), (np.ones((3, 4)), 0)])
