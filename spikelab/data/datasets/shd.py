"""Spiking Heidelberg Digits (Cramer et al. 2020): ``shd_train.h5`` / ``shd_test.h5``."""

from __future__ import annotations

from spikelab.data.datasets.base import EventDataset
from spikelab.data.formats import shd as shd_format


class SHD(EventDataset):
    """``root/shd_train.h5`` and ``root/shd_test.h5`` (20 classes, 700 input channels)."""

    sensor_size = shd_format.SENSOR_SIZE
    classes = tuple(f"{lang}-{d}" for lang in ("en", "de") for d in range(10))
    name = "SHD"
    source_hint = ("get shd_train.h5.gz and shd_test.h5.gz from the Heidelberg spiking datasets page "
                   "(zenkelab.org/datasets) and gunzip them here.")

    def _index(self) -> None:
        path = self.root / f"shd_{self.split}.h5"
        if not path.exists():
            raise self._missing(f"no {path.name}")
        import h5py

        with h5py.File(path, "r") as f:
            count = len(f["labels"]) if "labels" in f else 0
        if count == 0:
            raise self._missing(f"{path.name} holds no labelled samples")
        self.samples = [(path, i) for i in range(count)]
        self.sources = [path]

    def _load(self, index: int):
        import os

        path, i = self.samples[index]
        handle = getattr(self, "_handle", None)
        if handle is None or handle[0] != os.getpid():  # one open file per process
            handle = (os.getpid(), shd_format._open(path))
            self._handle = handle
        return shd_format._sample(handle[1], i, path, self.sensor_size, False), int(handle[1]["labels"][i])

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_handle", None)
        return state


__all__ = ["SHD"]
