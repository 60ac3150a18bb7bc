"""Errors of the export package."""


class NIRExportError(ValueError):
    """The model holds something NIR cannot express (or not exactly, without ``approximate=True``)."""


class NIRImportError(ValueError):
    """A NIR graph holds a node or parameter spikelab cannot run as written."""


__all__ = ["NIRExportError", "NIRImportError"]
