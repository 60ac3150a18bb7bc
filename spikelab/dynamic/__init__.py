"""Dynamic Confidence: per-sample early stopping of SNN inference, calibrated on held-out data."""

from spikelab.dynamic.calibrate import (Calibration, calibrate, calibrate_trace, candidates, fit_temperature,
                                        optimal_cutoff_steps, oracle, pareto, report, sweep)
from spikelab.dynamic.controller import SCORES, DynamicConfidence, DynamicResult, Trace, confidence
from spikelab.dynamic.cutoff import calibrate_top_k, top_k_thresholds
from spikelab.dynamic.risk import samples_needed, simulate

__all__ = ["DynamicConfidence", "DynamicResult", "Trace", "confidence", "SCORES", "calibrate", "calibrate_trace",
           "candidates", "fit_temperature", "Calibration", "oracle", "pareto", "report", "sweep", "simulate",
           "samples_needed", "calibrate_top_k", "top_k_thresholds", "optimal_cutoff_steps"]
