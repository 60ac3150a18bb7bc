"""Dynamic Confidence: per-sample early stopping of SNN inference (in progress)."""

from spikelab.dynamic.calibrate import Calibration, calibrate, oracle, pareto, report, sweep
from spikelab.dynamic.controller import DynamicConfidence, DynamicResult, Trace, confidence

__all__ = ["DynamicConfidence", "DynamicResult", "Trace", "confidence", "calibrate", "Calibration", "oracle",
           "pareto", "report", "sweep"]
