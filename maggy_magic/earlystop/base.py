"""The early-stopping contract (Maggy-compatible ``AbstractEarlyStop``)."""

from __future__ import annotations

import abc
from typing import Dict, List

from ..trial import Trial


class AbstractEarlyStop(abc.ABC):
    """Decides which running trials to stop.

    Contract: ``earlystop_check`` is called from the driver's loop thread every
    ``es_interval`` seconds once at least ``es_min`` trials have finished. ``to_check`` maps
    trial id → running :class:`Trial` (with its metric history so far); ``finalized_trials``
    lists trials that ended. It returns the ids of trials to stop and must not mutate its
    arguments. Subclasses may define it as a static method, as Maggy's did.
    """

    @abc.abstractmethod
    def earlystop_check(self, to_check: Dict[str, Trial], finalized_trials: List[Trial],
                        direction: str) -> List[str]:
        """Ids of the running trials in ``to_check`` that should stop now."""
