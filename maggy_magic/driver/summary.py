"""What a run's trials add up to: the best trial and the counts by state (the driver's
``run_finished`` event carries both)."""

from __future__ import annotations

import collections
from typing import Any, Dict, Iterable, Optional

from ..trial import Trial


def best_trial(ended: Iterable[Trial], direction: str) -> Optional[Trial]:
    """The best scored trial of ``ended`` (``direction`` ``max`` or ``min``); failed and
    unscored trials do not count, and in a gang only rank 0 (the chief) speaks for it.
    The first of equals wins."""
    best = None
    for trial in ended:
        if trial.status == Trial.FAILED or trial.final_metric is None \
                or trial.info_dict.get("rank", 0) != 0:
            continue
        if best is None or (trial.final_metric > best.final_metric if direction == "max"
                            else trial.final_metric < best.final_metric):
            best = trial
    return best


def best_summary(best: Optional[Trial]) -> Optional[Dict[str, Any]]:
    """``{trial, value, params}`` of ``best``, or None."""
    if best is None:
        return None
    return {"trial": best.trial_id, "value": best.final_metric, "params": best.params}


def counts(trials: Iterable[Trial], rejected_frames: int) -> Dict[str, int]:
    """Trials by state (running and pending ones are ``incomplete``), and the number of
    frames the driver rejected."""
    by_state = collections.Counter(t.status for t in trials)
    return {"finished": by_state[Trial.FINISHED],
            "early_stopped": by_state[Trial.EARLY_STOPPED],
            "failed": by_state[Trial.FAILED],
            "incomplete": by_state[Trial.RUNNING] + by_state[Trial.PENDING],
            "rejected_frames": rejected_frames}
