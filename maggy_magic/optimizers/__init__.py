"""Optimizers: what decides which trial runs next.

``get_optimizer`` turns the ``optimizer=`` option (an instance, a class, a name or None)
into an :class:`AbstractOptimizer`. New optimizers are added to :data:`OPTIMIZERS`.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from ..errors import ConfigError, did_you_mean
from .asha import Asha
from .base import AbstractOptimizer
from .bayes import GP, TPE
from .de import DifferentialEvolution
from .gridsearch import GridSearch
from .hyperband import BOHB, Hyperband
from .randomsearch import RandomSearch
from .singlerun import SingleRun

__all__ = ["AbstractOptimizer", "RandomSearch", "GridSearch", "Asha", "SingleRun", "TPE",
           "GP", "Hyperband", "BOHB", "DifferentialEvolution", "OPTIMIZERS", "get_optimizer"]

#: Name (lower case) → optimizer class; aliases are plain extra entries.
OPTIMIZERS: Dict[str, Type[AbstractOptimizer]] = {
    "randomsearch": RandomSearch, "random": RandomSearch,
    "gridsearch": GridSearch, "grid": GridSearch,
    "asha": Asha,
    "tpe": TPE, "gp": GP,
    "hyperband": Hyperband, "bohb": BOHB,
    "de": DifferentialEvolution, "differentialevolution": DifferentialEvolution,
    "none": SingleRun, "single": SingleRun,
}


def get_optimizer(spec: Any, **kwargs: Any) -> AbstractOptimizer:
    """The optimizer ``spec`` names, built with ``kwargs`` (its options).

    ``spec`` is an :class:`AbstractOptimizer` instance (returned as is; ``kwargs`` must
    then be empty), a subclass (instantiated), a name from :data:`OPTIMIZERS`
    (case-insensitive), or None for a single run. Anything else is a :class:`ConfigError`.
    """
    if isinstance(spec, AbstractOptimizer):
        if kwargs:
            raise ConfigError(f"optimizer options {sorted(kwargs)} cannot be applied to an "
                              "optimizer instance; pass them to its constructor instead")
        return spec
    if isinstance(spec, type) and issubclass(spec, AbstractOptimizer):
        return spec(**kwargs)
    if spec is None:
        return SingleRun(**kwargs)
    if not isinstance(spec, str):
        raise ConfigError(f"optimizer must be a name or an AbstractOptimizer, got "
                          f"{type(spec).__name__}; {did_you_mean('', OPTIMIZERS)}")
    name = spec.strip().lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {spec!r}; {did_you_mean(name, OPTIMIZERS)}")
    return OPTIMIZERS[name](**kwargs)
