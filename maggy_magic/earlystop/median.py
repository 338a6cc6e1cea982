"""The median stopping rule (Golovin et al., "Google Vizier", KDD 2017)."""

from __future__ import annotations

import statistics
from typing import Dict, List

from ..errors import ConfigError
from ..trial import Trial
from .base import AbstractEarlyStop


class MedianStoppingRule(AbstractEarlyStop):
    """Stops a running trial whose best metric so far is worse than its peers' median.

    For each running trial with at least one metric (and not already flagged
    ``early_stop`` or done), let ``s`` be its latest step and ``v`` its best value up to
    ``s``. Its peers are all *other* trials, finished (``finalized_trials``) or running
    (``to_check``), that have reported a step ``>= s``; each contributes its best value up
    to ``s``. With at least ``min_peers`` such values, the trial stops if ``v`` is strictly
    worse than their median under ``direction`` ("max" or "min"). Comparing at the same step
    keeps a slow starter from being judged against its peers' final values.
    """

    def __init__(self, min_peers: int = 1):
        if isinstance(min_peers, bool) or not isinstance(min_peers, int) or min_peers < 1:
            raise ConfigError(f"median early stopping: min_peers must be an integer >= 1, "
                              f"got {min_peers!r}")
        self.min_peers = min_peers

    def earlystop_check(self, to_check: Dict[str, Trial], finalized_trials: List[Trial],
                        direction: str) -> List[str]:
        if direction not in ("max", "min"):
            raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
        everyone: Dict[int, Trial] = {id(t): t for t in finalized_trials}
        everyone.update((id(t), t) for t in to_check.values())
        stop: List[str] = []
        for trial_id, trial in to_check.items():
            if trial.early_stop or trial.done or not trial.step_history:
                continue
            step = trial.last_step
            value = trial.value_at(step, direction)
            peers = []
            for other in everyone.values():
                if other is trial or (other.trial_id is not None
                                      and other.trial_id == trial.trial_id):
                    continue
                if other.step_history and max(other.step_history) >= step:
                    peer_value = other.value_at(step, direction)
                    if peer_value is not None and peer_value == peer_value:  # skip NaN
                        peers.append(peer_value)
            if len(peers) < self.min_peers or value is None:
                continue
            median = statistics.median(peers)
            if value < median if direction == "max" else value > median:
                stop.append(trial_id)
        return stop
