"""Numba kernels for CPU tensors (float32 and float64)."""

__all__: list[str] = []
