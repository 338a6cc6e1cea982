"""Ablation studies: train the model once as a base and once without each component.

``AblationStudy`` declares the components (:mod:`.study`); an ablator decides the trials
(:class:`AbstractAblator`, :class:`LOCO`); :mod:`.runner` turns each trial's parameters
into its model and dataset on the worker; :mod:`.keras_layers` removes layers from Keras 3
models; :mod:`.results` compares each component with the base. Nothing here imports
Keras, TensorFlow or pandas at module load.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from ..errors import ConfigError, did_you_mean
from .ablator import AbstractAblator
from .loco import LOCO
from .study import AblationStudy

__all__ = ["AblationStudy", "AbstractAblator", "LOCO", "ABLATORS", "get_ablator"]

#: Name (lower case) → ablator class.
ABLATORS: Dict[str, Type[AbstractAblator]] = {"loco": LOCO}


def get_ablator(spec: Any, study: Any, **options: Any) -> AbstractAblator:
    """The ablator ``spec`` names, for ``study``: an :class:`AbstractAblator` instance
    (its study is set when it has none), a subclass, or a name from :data:`ABLATORS`."""
    if isinstance(spec, AbstractAblator):
        if options:
            raise ConfigError(f"ablator options {sorted(options)} cannot be applied to an "
                              "ablator instance; pass them to its constructor instead")
        ablator = spec
    elif isinstance(spec, type) and issubclass(spec, AbstractAblator):
        ablator = spec(**options)
    elif isinstance(spec, str) and spec.strip().lower() in ABLATORS:
        ablator = ABLATORS[spec.strip().lower()](**options)
    else:
        name = spec.strip().lower() if isinstance(spec, str) else ""
        shown = repr(spec) if isinstance(spec, str) else type(spec).__name__
        raise ConfigError(f"unknown ablator {shown}; {did_you_mean(name, ABLATORS)} or an "
                          "AbstractAblator subclass")
    if ablator.ablation_study is None:
        ablator.ablation_study = study
    return ablator
