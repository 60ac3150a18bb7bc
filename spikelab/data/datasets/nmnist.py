"""N-MNIST and N-Caltech101: ATIS ``.bin`` recordings in per-class folders."""

from __future__ import annotations


from spikelab.data.datasets.base import EventDataset
from spikelab.data.formats.atis import read_atis_bin


class NMNIST(EventDataset):
    """N-MNIST (Orchard et al. 2015): ``root/Train/<digit>/*.bin`` and ``root/Test/<digit>/*.bin``.

    60,000 training and 10,000 test digits, 34x34 pixels, two polarities, ~300 ms each.
    """

    sensor_size = (34, 34, 2)
    classes = tuple(str(d) for d in range(10))
    name = "NMNIST"
    source_hint = ("get Train.zip and Test.zip from the N-MNIST page (Orchard et al. 2015, "
                   "garrickorchard.com/datasets/n-mnist) and extract them into this folder.")

    def _index(self) -> None:
        folder = self.root / ("Train" if self.split == "train" else "Test")
        if not folder.is_dir():
            raise self._missing(f"no '{folder.name}' folder")
        for label, digit in enumerate(self.classes):
            files = sorted((folder / digit).glob("*.bin")) if (folder / digit).is_dir() else []
            self.samples += [(f, label) for f in files]
        if not self.samples:
            raise self._missing(f"no '<digit>/*.bin' recordings in {folder}")
        self.sources = [f for f, _ in self.samples]

    def _load(self, index: int):
        path, label = self.samples[index]
        return read_atis_bin(path, sensor_size=self.sensor_size), label


class NCaltech101(EventDataset):
    """N-Caltech101 (Orchard et al. 2015): ``root/Caltech101/<class>/image_XXXX.bin``.

    There is no official split: every class's recordings, sorted by name, go to ``train``
    except every fifth (indices 4, 9, 14, ...), which go to ``test`` (an 80/20 split that is
    the same on every machine). Recordings are at most 240x180 pixels.
    """

    sensor_size = (240, 180, 2)
    name = "NCaltech101"
    source_hint = ("get Caltech101.zip from the N-Caltech101 page (Orchard et al. 2015) and extract it "
                   "here so that Caltech101/<class>/image_0001.bin exists.")

    def _index(self) -> None:
        folder = self.root / "Caltech101"
        if not folder.is_dir():
            raise self._missing("no 'Caltech101' folder")
        self.classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
        if not self.classes:
            raise self._missing("no class folders in Caltech101/")
        for label, name in enumerate(self.classes):
            files = sorted((folder / name).glob("*.bin"))
            chosen = [f for i, f in enumerate(files) if (i % 5 == 4) == (self.split == "test")]
            self.samples += [(f, label) for f in chosen]
        if not self.samples:
            raise self._missing("no '<class>/*.bin' recordings")
        self.sources = [f for f, _ in self.samples]

    def _load(self, index: int):
        path, label = self.samples[index]
        return read_atis_bin(path, sensor_size=self.sensor_size), label


__all__ = ["NMNIST", "NCaltech101"]
