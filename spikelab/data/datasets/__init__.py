"""Standard event datasets over a local folder in each dataset's published layout (never downloaded)."""

from spikelab.data.datasets.base import DatasetNotFoundError, EventDataset
from spikelab.data.datasets.cifar10dvs import CIFAR10DVS
from spikelab.data.datasets.digits import DigitsDVS
from spikelab.data.datasets.dvsgesture import DVSGesture
from spikelab.data.datasets.nmnist import NMNIST, NCaltech101
from spikelab.data.datasets.shd import SHD

__all__ = ["EventDataset", "DatasetNotFoundError", "DigitsDVS", "NMNIST", "NCaltech101", "DVSGesture", "CIFAR10DVS", "SHD"]
