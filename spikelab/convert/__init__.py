"""ANN -> SNN conversion: load a checkpoint, convert it, evaluate it at many simulation lengths."""

from spikelab.convert.core import ConvertedSNN, SpikingSite, convert
from spikelab.convert.evaluate import EnergyModel, evaluate
from spikelab.convert.graph import ConversionError
from spikelab.convert.load import build_architecture, load_ann
from spikelab.convert.qcfs import QCFS, replace_relu_with_qcfs

__all__ = ["convert", "evaluate", "EnergyModel", "load_ann", "build_architecture", "ConvertedSNN", "SpikingSite", "ConversionError", "QCFS", "replace_relu_with_qcfs"]
