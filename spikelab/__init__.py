"""spikelab: spiking neural networks on PyTorch.

Quick start::

    import torch, spikelab as sl
    net = sl.layers.Sequential(sl.layers.Linear(100, 64), sl.LIF(tau=2.0), sl.layers.Linear(64, 10))
    out = net(torch.rand(25, 8, 100))          # [T, B, features] -> [T, B, 10]
"""

from spikelab import data, layers, models, neurons, surrogate
from spikelab.backends import BackendUnavailableError
from spikelab.neurons import (EIF, IF, LIF, MPRLIF, PLIF, AdaptiveLIF, BaseNeuron, CurrentLIF, DelayedResetCurrentLIF,
                              DelayedResetLIF, LeakyIntegrator, Neuron, ProbabilisticLIF)
from spikelab.monitor import Monitor
from spikelab.runtime import tune_cpu_allocator
from spikelab.state import reset, select_batch

__version__ = "0.1.0"


def __getattr__(name: str):
    # these load on first use (``spikelab.train``, ``.convert``, ``.dynamic``, ``.export``, ``.viz``, ...)
    if name in ("train", "convert", "dynamic", "export", "viz", "stats", "testing", "files"):
        import importlib

        return importlib.import_module(f"spikelab.{name}")
    raise AttributeError(f"module 'spikelab' has no attribute {name!r}")


__all__ = [
    "AdaptiveLIF", "BackendUnavailableError", "BaseNeuron", "CurrentLIF", "DelayedResetCurrentLIF", "DelayedResetLIF", "EIF", "IF", "LIF", "LeakyIntegrator",
    "MPRLIF", "Monitor", "Neuron", "PLIF", "ProbabilisticLIF", "convert", "data", "dynamic", "export", "layers", "models", "neurons", "reset", "select_batch", "surrogate",
    "files", "stats", "testing", "train", "tune_cpu_allocator", "viz", "__version__",
]
