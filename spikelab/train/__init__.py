"""Training SNNs with BPTT: configuration, losses, the trainer, checkpoints and DDP."""

from spikelab.train.build import DataSplits, make_datasets, make_model, make_splits, trainer_from_config
from spikelab.train.config import ConfigError, apply_overrides, load_config
from spikelab.train.losses import LOSSES, count_mse, membrane_ce, prefix_ce, rate_ce, tet
from spikelab.train.splits import DatasetView, split_dataset, split_indices
from spikelab.train.trainer import NonFiniteError, Trainer

__all__ = ["ConfigError", "load_config", "apply_overrides", "NonFiniteError", "Trainer", "trainer_from_config",
           "make_datasets", "make_splits", "DataSplits", "make_model", "split_dataset", "split_indices",
           "DatasetView", "LOSSES", "rate_ce", "membrane_ce", "tet", "prefix_ce", "count_mse"]
