"""Spiking neurons with surrogate gradients; each runs multi-step (``forward``) or single-step (``step``)."""

from spikelab.neurons.adaptive import AdaptiveLIF
from spikelab.neurons.base import BaseNeuron
from spikelab.neurons.current import CurrentLIF
from spikelab.neurons.integrator import LeakyIntegrator
from spikelab.neurons.lif import IF, LIF, PLIF
from spikelab.neurons.probabilistic import ProbabilisticLIF
from spikelab.neurons.spec import Neuron, NeuronSpecError
from spikelab.neurons.eif import EIF
from spikelab.neurons.mpr import MPRLIF
from spikelab.neurons.delayed import DelayedResetCurrentLIF, DelayedResetLIF
from spikelab.kernels.expr import clamp, exp, log, maximum, minimum, sigmoid, sqrt, tanh, where

__all__ = ["BaseNeuron", "IF", "LIF", "PLIF", "AdaptiveLIF", "CurrentLIF", "LeakyIntegrator", "ProbabilisticLIF",
           "EIF", "MPRLIF", "DelayedResetLIF", "DelayedResetCurrentLIF", "Neuron", "NeuronSpecError", "exp", "log", "tanh", "sigmoid", "sqrt", "clamp", "minimum", "maximum",
           "where"]
