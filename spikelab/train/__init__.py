"""Training SNNs with BPTT: configuration, losses, the trainer, checkpoints and DDP."""

from spikelab.train.build import make_datasets, make_model, trainer_from_config
from spikelab.train.config import ConfigError, load_config
from spikelab.train.losses import LOSSES, count_mse, membrane_ce, rate_ce, tet
from spikelab.train.trainer import NonFiniteError, Trainer

__all__ = ["ConfigError", "load_config", "NonFiniteError", "Trainer", "trainer_from_config", "make_datasets",
           "make_model", "LOSSES", "rate_ce", "membrane_ce", "tet", "count_mse"]
