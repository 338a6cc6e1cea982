"""The rule that never stops a trial."""

from __future__ import annotations

from typing import Dict, List

from ..trial import Trial
from .base import AbstractEarlyStop


class NoStoppingRule(AbstractEarlyStop):
    """Never stops anything; the default when early stopping is off."""

    def earlystop_check(self, to_check: Dict[str, Trial], finalized_trials: List[Trial],
                        direction: str) -> List[str]:
        return []
