"""Event data: readers and writers of DVS file formats, datasets over local folders, a decoded
cache, fast transforms and a time-first collate."""

from spikelab.data import functional, transforms
from spikelab.data.collate import pad_collate
from spikelab.data.datasets import CIFAR10DVS, DigitsDVS, DVSGesture, NMNIST, SHD, DatasetNotFoundError, EventDataset, NCaltech101
from spikelab.data.events import EVENT_DTYPE, EventFormatError, make_events
from spikelab.data.formats.aedat2 import read_aedat2, write_aedat2
from spikelab.data.formats.aedat3 import read_aedat3, write_aedat3
from spikelab.data.formats.aedat4 import read_aedat4
from spikelab.data.formats.atis import read_atis_bin, write_atis_bin
from spikelab.data.formats.prophesee import read_dat, read_prophesee_raw, write_evt2, write_evt3
from spikelab.data.formats.shd import read_shd, read_shd_all, write_shd
from spikelab.data.io import detect_format, read_events
from spikelab.data.stream import iter_chunks, iter_windows

__all__ = [
    "functional", "transforms", "pad_collate", "DigitsDVS", "EventDataset", "DatasetNotFoundError", "NMNIST", "NCaltech101",
    "DVSGesture", "CIFAR10DVS", "SHD", "EVENT_DTYPE", "EventFormatError", "make_events", "read_events", "detect_format",
    "read_atis_bin", "write_atis_bin", "read_aedat2", "write_aedat2", "read_aedat3", "write_aedat3",
    "read_aedat4", "read_dat", "read_prophesee_raw", "write_evt2", "write_evt3",
    "read_shd", "read_shd_all", "write_shd", "iter_chunks", "iter_windows",
]
