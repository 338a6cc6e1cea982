"""Early-stopping rules: which running trials to stop.

``get_earlystop`` turns the ``es_policy=`` option (an instance, a class, a name or None)
into an :class:`AbstractEarlyStop`. New rules are added to :data:`EARLYSTOPS`.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from ..errors import ConfigError, did_you_mean
from .base import AbstractEarlyStop
from .median import MedianStoppingRule
from .nostop import NoStoppingRule

__all__ = ["AbstractEarlyStop", "MedianStoppingRule", "NoStoppingRule", "EARLYSTOPS",
           "get_earlystop"]

#: Name (lower case) → rule class.
EARLYSTOPS: Dict[str, Type[AbstractEarlyStop]] = {
    "median": MedianStoppingRule,
    "none": NoStoppingRule,
}


def get_earlystop(spec: Any) -> AbstractEarlyStop:
    """The rule ``spec`` names: an instance (returned as is), a subclass (instantiated),
    a name from :data:`EARLYSTOPS` (case-insensitive), or None for no early stopping."""
    if isinstance(spec, AbstractEarlyStop):
        return spec
    if isinstance(spec, type) and issubclass(spec, AbstractEarlyStop):
        return spec()
    if spec is None:
        return NoStoppingRule()
    if not isinstance(spec, str):
        raise ConfigError(f"early stopping policy must be a name or an AbstractEarlyStop, "
                          f"got {type(spec).__name__}; {did_you_mean('', EARLYSTOPS)}")
    name = spec.strip().lower()
    if name not in EARLYSTOPS:
        raise ConfigError(f"unknown early stopping policy {spec!r}; "
                          f"{did_you_mean(name, EARLYSTOPS)}")
    return EARLYSTOPS[name]()
