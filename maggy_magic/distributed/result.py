"""The result of a dist run: the chief's returned metrics, plus every rank's record."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..result import ExperimentResult
from ..trial import Trial


class DistResult(ExperimentResult):
    """An :class:`~maggy_magic.result.ExperimentResult` whose best (and only scored)
    trial is the chief (rank 0) of the last attempt: ``best_metric`` / ``best_val`` is its
    returned metric and :attr:`metrics` its whole returned dict. :attr:`ranks` has one row
    per rank and attempt; ``trials`` keeps every rank's trial like any run."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        chief = self.chief_trial
        done = chief is not None and chief["state"] != Trial.FAILED \
            and chief.get("value") is not None
        self.best_trial = self.worst_trial = chief if done else None
        self._values = [chief["value"]] if done else []

    @property
    def chief_trial(self) -> Optional[Dict[str, Any]]:
        """The record of rank 0 of the last attempt (None if no rank ran)."""
        chiefs = [t for t in self.trial_records if (t.get("info") or {}).get("rank") == 0]
        if not chiefs:
            return None
        return max(chiefs, key=lambda t: (t["info"].get("attempt", 0), t["trial"]))

    @property
    def metrics(self) -> Optional[Dict[str, Any]]:
        """What the chief returned: ``{optimization_key: value, **other keys}``."""
        chief = self.chief_trial
        if chief is None or chief.get("value") is None:
            return None
        return {self.optimization_key: chief["value"], **(chief.get("metrics") or {})}

    @property
    def attempts(self) -> int:
        """How many times the gang started (1 + restarts)."""
        return 1 + max(((t.get("info") or {}).get("attempt", 0)
                        for t in self.trial_records), default=-1)

    @property
    def ranks(self):
        """One row per rank and attempt: rank, attempt, trial, state, metric, worker,
        steps, duration, error."""
        import pandas as pd

        rows: List[Dict[str, Any]] = []
        for t in self.trial_records:
            info = t.get("info") or {}
            rows.append({"rank": info.get("rank"), "attempt": info.get("attempt", 0),
                         "trial": t["trial"], "state": t["state"],
                         self.optimization_key: t.get("value"), "worker": t.get("worker"),
                         "steps": len(t.get("steps") or []), "duration": t.get("duration"),
                         "error": t.get("error")})
        return pd.DataFrame(rows)

    def to_dict(self) -> Dict[str, Any]:
        return dict(super().to_dict(), metrics=self.metrics, attempts=self.attempts)
