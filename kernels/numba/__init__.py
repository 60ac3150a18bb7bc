"""Numba kernels for CPU tensors (float32 and float64)."""
