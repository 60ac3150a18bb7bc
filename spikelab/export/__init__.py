"""Deployment: NIR export and import, and hardware profiles (check, quantize)."""

from spikelab.export.errors import NIRExportError, NIRImportError
from spikelab.export.hardware import (PROFILES, CheckReport, Conflict, HardwareProfile, Violation, check,
                                      export_conflicts, fold_avgpool, quantize)
from spikelab.export.nir_export import NEURON_EXPORTERS, fold_batchnorm, register_neuron, to_nir
from spikelab.export.network import NIRNetwork
from spikelab.export.nir_import import NODE_IMPORTERS, from_nir, register_node
from spikelab.export.peers import PEERS, fix_snntorch_if

__all__ = [
    "CheckReport", "Conflict", "HardwareProfile", "NEURON_EXPORTERS", "NIRExportError", "NIRImportError", "NIRNetwork", "PROFILES", "Violation",
    "NODE_IMPORTERS", "PEERS", "check", "export_conflicts", "fix_snntorch_if", "fold_avgpool", "fold_batchnorm", "from_nir", "register_node", "quantize", "register_neuron", "to_nir",
]
