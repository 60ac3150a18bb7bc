"""Neuron kernels (installed as ``spikelab.kernels``): the torch reference and fused loops."""

__all__: list[str] = []
