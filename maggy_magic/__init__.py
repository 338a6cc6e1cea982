"""maggy-magic: run a notebook's training function as parallel trials, anywhere.

Public API (Maggy-compatible)::

    from maggy_magic import experiment, Searchspace, HyperparameterOptConfig
    result = experiment.lagom(train, HyperparameterOptConfig(num_trials=8, ...))

Importing this package loads no machine-learning framework and no Spark.
"""

from __future__ import annotations

from . import experiment
from .config import HyperparameterOptConfig, RunOptions
from .earlystop import AbstractEarlyStop
from .errors import (BroadcastError, ConfigError, EarlyStopException, ExperimentFailed,
                     ExperimentInterrupted, InvalidMetricError, MaggyError, ResumeError,
                     SearchspaceError, TrainFunctionError)
from .optimizers import AbstractOptimizer
from .reporter import Reporter
from .result import ExperimentResult
from .searchspace import Searchspace
from .trial import Trial

__version__ = "0.1.0"

__all__ = [
    "experiment", "Searchspace", "HyperparameterOptConfig", "RunOptions",
    "AbstractOptimizer", "AbstractEarlyStop", "Reporter", "Trial", "ExperimentResult",
    "MaggyError", "ConfigError", "SearchspaceError", "TrainFunctionError",
    "InvalidMetricError", "BroadcastError", "ExperimentFailed", "ExperimentInterrupted",
    "ResumeError", "EarlyStopException", "__version__",
]
