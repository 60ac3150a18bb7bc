"""CIFAR10-DVS (Li et al. 2017): AEDAT 2.0 DVS128 recordings, 1,000 per class."""

from __future__ import annotations

import re

from spikelab.data.datasets.base import EventDataset
from spikelab.data.formats.aedat2 import read_aedat2

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class CIFAR10DVS(EventDataset):
    """``root/<class>/cifar10_<class>_<n>.aedat``.

    No official split exists; the common rule is used: per class, recordings with
    ``n < 900`` train and ``n >= 900`` test (a 90/10 split). Recordings are read with the
    DVS128 address layout (jAER orientation).
    """

    sensor_size = (128, 128, 2)
    classes = CLASSES
    name = "CIFAR10DVS"
    source_hint = ("get the CIFAR10-DVS archives (Li et al. 2017, figshare) and extract one folder per class "
                   "here (airplane/cifar10_airplane_0.aedat ...).")
    test_from = 900

    def _index(self) -> None:
        missing = [c for c in CLASSES if not (self.root / c).is_dir()]
        if len(missing) == len(CLASSES):
            raise self._missing("no class folders (airplane/, automobile/, ...)")
        if missing:
            raise self._missing(f"class folders {missing} are missing")
        for label, cls in enumerate(CLASSES):
            for path in sorted((self.root / cls).glob("*.aedat")):
                m = re.search(r"_(\d+)\.aedat$", path.name)
                if m is None:
                    continue
                if (int(m.group(1)) >= self.test_from) == (self.split == "test"):
                    self.samples.append((path, label))
        if not self.samples:
            raise self._missing("no cifar10_<class>_<n>.aedat recordings")
        self.sources = [p for p, _ in self.samples]

    def _load(self, index: int):
        path, label = self.samples[index]
        return read_aedat2(path, camera="dvs128"), label


__all__ = ["CIFAR10DVS"]
