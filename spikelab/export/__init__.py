"""Deployment: NIR export and import, and hardware profiles (check, quantize)."""

from spikelab.export.errors import NIRExportError, NIRImportError
from spikelab.export.nir_export import to_nir
from spikelab.export.nir_import import NIRNetwork, from_nir

__all__ = ["NIRExportError", "NIRImportError", "NIRNetwork", "from_nir", "to_nir"]
