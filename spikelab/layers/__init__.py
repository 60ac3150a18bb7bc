"""Layers over ``[T, B, ...]``: time-distributed torch layers, dropout, recurrence, encoders, Sequential."""

from spikelab.layers.dropout import Dropout
from spikelab.layers.elementwise import Delay, Scale, Threshold
from spikelab.layers.fusion import unfused
from spikelab.layers.encoders import DeltaEncoder, LatencyEncoder, PoissonEncoder
from spikelab.layers.recurrent import Recurrent
from spikelab.layers.sequential import Sequential
from spikelab.layers.temporal import (
    AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Flatten, Linear, MaxPool1d, MaxPool2d,
    SequenceModule, SumPool2d, TimeDistributed,
)

__all__ = [
    "AvgPool1d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv1d", "Conv2d", "Delay", "DeltaEncoder", "Dropout",
    "Flatten", "LatencyEncoder", "Linear", "MaxPool1d", "MaxPool2d", "PoissonEncoder", "Recurrent",
    "Scale", "SequenceModule", "Sequential", "SumPool2d", "Threshold", "TimeDistributed", "unfused",
]
