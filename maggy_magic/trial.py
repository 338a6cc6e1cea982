"""A trial: one run of the training function with one set of parameters.

Trials live in the driver. Their id is assigned by the driver from a per-run counter when
the optimizer hands the trial over, so two trials with equal parameters never collide.
Attribute names follow Maggy's ``Trial`` where it had one (``final_metric``,
``metric_history``, ``step_history``, ``info_dict``, ``status``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional


class Trial:
    """State of one trial. Mutated only by the driver's loop thread."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    EARLY_STOPPED = "EARLY_STOPPED"
    FAILED = "FAILED"
    #: States after which a trial never changes again.
    TERMINAL = (FINISHED, EARLY_STOPPED, FAILED)

    def __init__(self, params: Dict[str, Any], trial_type: str = "optimization",
                 info_dict: Optional[Dict[str, Any]] = None, budget: Optional[float] = None):
        self.trial_id: Optional[str] = None
        self.params: Dict[str, Any] = dict(params)
        self.trial_type = trial_type
        self.info_dict: Dict[str, Any] = dict(info_dict or {})
        self.budget = budget
        self.status = Trial.PENDING
        self.worker: Optional[str] = None
        #: The GPU ids of the worker that ran it (None: the run asked for no GPUs).
        self.devices: Optional[List[str]] = None
        self.retries = 0
        self.metric_history: List[float] = []
        self.step_history: List[int] = []
        self.final_metric: Optional[float] = None
        self.metric_dict: Dict[str, Any] = {}
        self.early_stop = False
        self.error: Optional[str] = None
        self.traceback: Optional[str] = None
        self.created = time.time()
        self.start: Optional[float] = None
        self.end: Optional[float] = None

    # -- derived ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.status

    @property
    def duration(self) -> Optional[float]:
        if self.start is None:
            return None
        return (self.end if self.end is not None else time.time()) - self.start

    @property
    def done(self) -> bool:
        return self.status in Trial.TERMINAL

    @property
    def last_step(self) -> Optional[int]:
        return self.step_history[-1] if self.step_history else None

    def value_at(self, step: int, direction: str) -> Optional[float]:
        """Best metric reported up to and including ``step`` (None if nothing yet)."""
        best = None
        for s, v in zip(self.step_history, self.metric_history):
            if s > step:
                break
            if best is None or (v > best if direction == "max" else v < best):
                best = v
        return best

    def append_metric(self, step: int, value: float) -> None:
        self.step_history.append(step)
        self.metric_history.append(value)

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            "trial": self.trial_id, "params": self.params, "state": self.status,
            "type": self.trial_type, "info": self.info_dict, "budget": self.budget,
            "worker": self.worker, "retries": self.retries, "value": self.final_metric,
            "metrics": self.metric_dict, "steps": self.step_history,
            "history": self.metric_history, "error": self.error,
            "traceback": self.traceback, "start": self.start, "end": self.end,
            "duration": self.duration,
            **({"devices": self.devices} if self.devices is not None else {}),
        }

    def __repr__(self) -> str:
        return (f"Trial({self.trial_id}, {self.status}, params={self.params}, "
                f"value={self.final_metric})")
