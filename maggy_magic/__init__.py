"""maggy-magic: run a notebook's training function as parallel trials, anywhere.

Public API (Maggy-compatible)::

    from maggy_magic import experiment, Searchspace, HyperparameterOptConfig
    result = experiment.lagom(train, HyperparameterOptConfig(num_trials=8, ...))

    from maggy_magic import AblationStudy, AblationConfig
    result = experiment.lagom(train, AblationConfig(study, direction="max"))

In IPython or Jupyter, ``%load_ext maggy_magic`` adds the ``%%maggy`` / ``%maggy``
magics (see :mod:`maggy_magic.magics`).

Importing this package loads no machine-learning framework, no Spark and no IPython.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    AblationError,
    BroadcastError,
    ConfigError,
    DistributedError,
    EarlyStopException,
    ExperimentFailed,
    ExperimentInterrupted,
    InvalidMetricError,
    MaggyError,
    ResumeError,
    SearchspaceError,
    TrainFunctionError,
)

#: Public name → module that defines it, imported on first use. Worker processes import
#: only what the worker loop needs, so they start fast.
_LAZY = {
    "experiment": None, "tensorboard": None,
    "HyperparameterOptConfig": "config", "RunOptions": "config", "AblationConfig": "config",
    "AblationStudy": "ablation", "AbstractAblator": "ablation",
    "AbstractEarlyStop": "earlystop", "AbstractOptimizer": "optimizers",
    "Reporter": "reporter", "ExperimentResult": "result", "Searchspace": "searchspace",
    "Trial": "trial",
    "TorchDistributedConfig": "distributed.config", "TfDistributedConfig": "distributed.config",
    "DistContext": "distributed.context",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'maggy_magic' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """``%load_ext maggy_magic``: register the ``%%maggy`` and ``%maggy`` magics."""
    from .magics import MaggyMagics

    ipython.register_magics(MaggyMagics(ipython))


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext maggy_magic``: stop runs in progress, remove the magics."""
    from .magics import MaggyMagics

    manager = ipython.magics_manager
    for instance in list(manager.registry.values()):
        if isinstance(instance, MaggyMagics):
            instance.close()
    for table in manager.magics.values():
        if isinstance(getattr(table.get("maggy"), "__self__", None), MaggyMagics):
            del table["maggy"]
    manager.registry.pop("MaggyMagics", None)

__all__ = [
    "experiment", "Searchspace", "HyperparameterOptConfig", "RunOptions", "AblationConfig",
    "tensorboard",
    "AblationStudy", "AbstractAblator", "AblationError",
    "AbstractOptimizer", "AbstractEarlyStop", "Reporter", "Trial", "ExperimentResult",
    "MaggyError", "ConfigError", "SearchspaceError", "TrainFunctionError",
    "InvalidMetricError", "BroadcastError", "ExperimentFailed", "ExperimentInterrupted",
    "ResumeError", "EarlyStopException", "DistributedError", "TorchDistributedConfig",
    "TfDistributedConfig", "DistContext", "__version__", "load_ipython_extension",
    "unload_ipython_extension",
]
