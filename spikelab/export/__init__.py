"""Deployment: NIR export and import, and hardware profiles (check, quantize)."""

from spikelab.export.errors import NIRExportError, NIRImportError
from spikelab.export.hardware import PROFILES, CheckReport, HardwareProfile, Violation, check, quantize
from spikelab.export.nir_export import fold_batchnorm, to_nir
from spikelab.export.network import NIRNetwork
from spikelab.export.nir_import import from_nir

__all__ = [
    "CheckReport", "HardwareProfile", "NIRExportError", "NIRImportError", "NIRNetwork", "PROFILES", "Violation",
    "check", "fold_batchnorm", "from_nir", "quantize", "to_nir",
]
