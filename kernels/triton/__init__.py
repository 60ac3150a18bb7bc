"""Triton kernels for CUDA tensors (float32, float16, bfloat16 inputs; state in float32).

Without a GPU they run on CPU tensors under ``TRITON_INTERPRET=1``, which is how CI checks
their logic against the reference.
"""

__all__: list[str] = []
