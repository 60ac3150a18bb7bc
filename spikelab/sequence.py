"""The marker every sequence module carries, in a module of its own so that neurons and layers
can both use it without importing each other."""


class SequenceModule:
    """Marker: the module takes ``[T, B, ...]`` and provides ``step(x)`` for ``[B, ...]``."""


__all__ = ["SequenceModule"]
