"""What an experiment returns: best trial, every trial, counts and the run directory.

:class:`ExperimentResult` is also a read-only mapping with the keys of Maggy's result
dict (``best_id``, ``best_val``, ``best_config``, ``worst_id``, ``worst_val``,
``worst_config``, ``avg``, ``metric_list``, ``num_trials``, ``early_stopped``), so code
written against Maggy keeps working.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Dict, Iterator, List, Optional

from .trial import Trial


class ExperimentResult(collections.abc.Mapping):
    """The outcome of one run. ``trials`` is a pandas DataFrame (one row per trial)."""

    def __init__(self, *, name: str, run_id: str, run_dir: str, state: str,
                 direction: str, optimization_key: str, trials: List[Dict[str, Any]],
                 error: Optional[str] = None, rejected_frames: int = 0,
                 searchspace: Optional[Dict[str, Any]] = None):
        self.name, self.run_id, self.run_dir = name, run_id, run_dir
        #: the search space's ``to_dict()`` (None for other experiments): the summary's
        #: parallel-coordinates axes and the importances read it
        self.searchspace = searchspace or None
        self.state, self.error = state, error
        self.direction, self.optimization_key = direction, optimization_key
        self.trial_records = sorted(trials, key=lambda t: t["trial"])
        self.rejected_frames = rejected_frames
        #: What MLflow tracking logged (see :meth:`maggy_magic.tracking.sender.Sender.report`:
        #: uri, experiment_id, run_id, lost, not_logged), None when it was off.
        self.mlflow: Optional[Dict[str, Any]] = None
        scored = [t for t in self.trial_records
                  if t["state"] != Trial.FAILED and t.get("value") is not None]
        pick_best = max if direction == "max" else min
        pick_worst = min if direction == "max" else max
        self.best_trial = pick_best(scored, key=lambda t: t["value"]) if scored else None
        self.worst_trial = pick_worst(scored, key=lambda t: t["value"]) if scored else None
        self._values = [t["value"] for t in scored]

    @classmethod
    def from_trials(cls, trials: List[Trial], **kwargs: Any) -> "ExperimentResult":
        return cls(trials=[t.to_dict() for t in trials], **kwargs)

    # -- convenience --------------------------------------------------------------------
    @property
    def stop_reason(self) -> Optional[str]:
        """Why a stopped run stopped: the Stop button, ``%maggy stop``, its time budget
        or its target (None unless ``state`` is ``stopped``)."""
        return self.error if self.state == "stopped" else None

    @property
    def best_params(self) -> Optional[Dict[str, Any]]:
        return dict(self.best_trial["params"]) if self.best_trial else None

    @property
    def best_metric(self) -> Optional[float]:
        return self.best_trial["value"] if self.best_trial else None

    @property
    def best_id(self) -> Optional[str]:
        return self.best_trial["trial"] if self.best_trial else None

    def _count(self, state: str) -> int:
        return sum(t["state"] == state for t in self.trial_records)

    @property
    def num_finished(self) -> int:
        return self._count(Trial.FINISHED)

    @property
    def num_early_stopped(self) -> int:
        return self._count(Trial.EARLY_STOPPED)

    @property
    def num_failed(self) -> int:
        return self._count(Trial.FAILED)

    @property
    def trials(self):
        """One row per trial: id, state, value, params (one column each), worker, ...
        (and ``devices``, the GPU ids it ran on, when the run asked for GPUs)."""
        import pandas as pd

        rows = []
        gpus = any("devices" in t for t in self.trial_records)
        for t in self.trial_records:
            row = {"trial": t["trial"], "state": t["state"], self.optimization_key: t["value"],
                   "steps": len(t.get("steps") or []), "last_step": (t.get("steps") or
                                                                    [None])[-1],
                   "worker": t.get("worker"), "duration": t.get("duration"),
                   "retries": t.get("retries"), "budget": t.get("budget"),
                   "error": t.get("error")}
            if gpus:
                row["devices"] = ",".join(t.get("devices") or ())
            row.update({f"param_{k}" if k in row else k: v for k, v in t["params"].items()})
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def ablation(self):
        """For an ablation study, one row per trial, base first: ``component``, ``kind``
        (base, feature, layer, layer group, custom model), ``trial``, ``state``, the
        metric (named by ``optimization_key``) and ``difference`` (metric minus the
        base's). None for other experiments."""
        from .ablation.results import component_rows

        rows = component_rows(self.trial_records)
        if not rows:
            return None
        import pandas as pd

        frame = pd.DataFrame(rows, columns=["component", "kind", "trial", "state", "value",
                                            "difference"])
        return frame.rename(columns={"value": self.optimization_key})

    @property
    def base_trial(self) -> Optional[Dict[str, Any]]:
        """The record of an ablation study's base trial (every component kept), or None."""
        from .ablation.results import base_record

        return base_record(self.trial_records)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable summary (what ``result.json`` holds)."""
        return {"name": self.name, "run_id": self.run_id, "run_dir": self.run_dir,
                "state": self.state, "error": self.error, "stop_reason": self.stop_reason,
                "direction": self.direction,
                "optimization_key": self.optimization_key, **self._maggy(),
                "counts": {"finished": self.num_finished,
                           "early_stopped": self.num_early_stopped,
                           "failed": self.num_failed,
                           "rejected_frames": self.rejected_frames},
                "searchspace": self.searchspace, "trials": self.trial_records,
                **({"mlflow": self.mlflow} if self.mlflow is not None else {})}

    def _maggy(self) -> Dict[str, Any]:
        best, worst = self.best_trial or {}, self.worst_trial or {}
        return {"best_id": best.get("trial"), "best_val": best.get("value"),
                "best_config": best.get("params"), "worst_id": worst.get("trial"),
                "worst_val": worst.get("value"), "worst_config": worst.get("params"),
                "avg": sum(self._values) / len(self._values) if self._values else None,
                "metric_list": list(self._values), "num_trials": len(self.trial_records),
                "early_stopped": self.num_early_stopped}

    # -- Mapping (Maggy's result dict) --------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._maggy()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._maggy())

    def __len__(self) -> int:
        return len(self._maggy())

    def _repr_html_(self) -> str:
        """The static summary (best trial, trial table, learning curves) for notebooks."""
        from .ui.summary import summary_html

        return summary_html(self)

    def __repr__(self) -> str:
        best = (f"best {self.optimization_key}={self.best_metric:.6g} (trial {self.best_id}) "
                f"with {self.best_params}") if self.best_trial else "no successful trial"
        state = f"{self.state} ({self.stop_reason})" if self.stop_reason else self.state
        return (f"<ExperimentResult {self.name} {state}: {best}; "
                f"{self.num_finished} finished, {self.num_early_stopped} early-stopped, "
                f"{self.num_failed} failed; {self.run_dir}>")
