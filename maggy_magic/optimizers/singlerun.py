"""A single trial without a search: plain training through the same machinery."""

from __future__ import annotations

from typing import Any, Optional

from ..trial import Trial
from .base import AbstractOptimizer, Suggestion
from .randomsearch import reject_options


class SingleRun(AbstractOptimizer):
    """Suggests exactly one trial with empty params, then ``None``.

    The search space, if any, is ignored. ``initialize`` sets ``num_trials`` to 1 so
    progress displays show the right total. Takes no options.
    """

    def __init__(self, **kwargs: Any):
        reject_options("none", kwargs, [])
        super().__init__()

    def initialize(self) -> None:
        self.num_trials = 1

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        if self.trial_store:
            return None
        return self.create_trial({}, sample_type="single")
