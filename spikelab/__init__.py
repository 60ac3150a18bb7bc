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


# the public submodules not imported above: they load on first use (``spikelab.train``, ``.convert``, ``.dynamic``,
# ``.export``, ``.viz``, ...), which keeps ``import spikelab`` fast. ``kernels`` (the reference oracle and fused
# loops) and ``monitor`` are usually loaded already (by the backends and ``Monitor``); listed so that every public
# submodule is reachable as ``sl.<name>`` the same way, whatever the imports above load.
_SUBMODULES = ("train", "convert", "dynamic", "export", "viz", "stats", "testing", "files", "kernels", "monitor",
               "state", "runtime")


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"spikelab.{name}")
    raise AttributeError(f"module 'spikelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the default lists only what is loaded: add the submodules that load on first use
    return sorted(set(globals()) | set(_SUBMODULES))


__all__ = [
    # neurons and tools
    "AdaptiveLIF", "BackendUnavailableError", "BaseNeuron", "CurrentLIF", "DelayedResetCurrentLIF", "DelayedResetLIF",
    "EIF", "IF", "LIF", "LeakyIntegrator", "MPRLIF", "Monitor", "Neuron", "PLIF", "ProbabilisticLIF", "reset",
    "select_batch", "tune_cpu_allocator", "__version__",
    # subpackages, each reachable as sl.<name>
    "convert", "data", "dynamic", "export", "files", "kernels", "layers", "models", "monitor", "neurons", "runtime",
    "state", "stats", "surrogate", "testing", "train", "viz",
]
