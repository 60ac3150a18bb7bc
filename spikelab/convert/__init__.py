"""ANN -> SNN conversion (in progress: checkpoint loading, the evaluation report and the CLI
come next)."""

from spikelab.convert.core import ConvertedSNN, SpikingSite, convert
from spikelab.convert.graph import ConversionError
from spikelab.convert.qcfs import QCFS, replace_relu_with_qcfs

__all__ = ["convert", "ConvertedSNN", "SpikingSite", "ConversionError", "QCFS", "replace_relu_with_qcfs"]
