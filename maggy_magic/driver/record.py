"""The run's record: what happened to each trial, as trial fields and experiment events.

:class:`RunRecord` is the one place that changes a trial's state and emits the matching
event (``trial_started``, ``metric``, ``log``, ``trial_finished``, ``trial_failed``,
``trial_retried``, ``early_stopped``); it keeps the ended trials in order (``final``, which
the optimizer reads as its ``final_store``) and counts failures. It decides nothing: the
driver tells it what happened. Driver loop thread only.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Collection, Dict, List, Optional

from ..events import EventStream
from ..trial import Trial
from . import summary
from .trial_queue import TrialQueue


class RunRecord:
    """Trial states and events of one run (``trials`` is the run's table)."""

    def __init__(self, trials: Dict[str, Trial], events: EventStream, queue: TrialQueue,
                 on_finished: Optional[Callable[[Trial], None]] = None):
        self.trials, self.events, self.queue = trials, events, queue
        #: Called with each trial that returned, after its ``trial_finished`` event.
        self.on_finished = on_finished
        self.final: List[Trial] = sorted((t for t in trials.values() if t.done),
                                         key=lambda t: t.end or 0.0)
        #: Failed trials that count against ``max_failures`` (a gang's failure counts once).
        self.failures = sum(t.status == Trial.FAILED for t in self.final)

    def started(self, trial: Trial, worker_id: str,
                devices: Optional[List[str]] = None) -> None:
        """``trial`` runs on ``worker_id`` from now on (on its GPUs ``devices``, if any)."""
        trial.status, trial.worker = Trial.RUNNING, worker_id
        trial.start, trial.end = time.time(), None
        trial.early_stop = False
        trial.devices = list(devices) if devices is not None else None
        extra = {"devices": trial.devices} if devices is not None else {}
        self.events.emit("trial_started", trial=trial.trial_id, params=trial.params,
                         worker=worker_id, budget=trial.budget, info=trial.info_dict,
                         attempt=trial.retries, t=trial.start, **extra)  # resume reads it

    def absorb(self, worker_id: str, trial: Optional[Trial], msg: Dict[str, Any],
               revoked: Collection[str] = ()) -> None:
        """The metric points (of ``trial``) and log lines a worker's message carries.

        Lines under a trial in ``revoked`` (taken back from this worker, so it runs, or
        ran, elsewhere) are of a copy that does not count: they go to the worker's own
        log, marked, never to that trial's."""
        points = msg.get("points")
        if points and trial is not None:
            for step, value in points:
                trial.append_metric(step, value)
                self.events.emit("metric", trial=trial.trial_id, step=step, value=value)
        logs = msg.get("logs")
        if logs:
            by_trial: Dict[Optional[str], List[str]] = {}
            for trial_id, line in logs:
                if trial_id is not None and trial_id in revoked:
                    trial_id, line = None, (f"[a copy of trial {trial_id} this worker "
                                            f"was told to drop] {line}")
                by_trial.setdefault(trial_id, []).append(line)
            for trial_id, lines in by_trial.items():
                self.events.emit("log", worker=worker_id, trial=trial_id, lines=lines)

    def finished(self, trial: Trial, msg: Dict[str, Any]) -> None:
        """``trial`` returned (a worker's ``final`` message)."""
        trial.end = time.time()
        trial.final_metric = msg.get("value")
        trial.metric_dict = msg.get("metrics") or {}
        early = bool(msg.get("early_stopped"))
        trial.status = Trial.EARLY_STOPPED if early else Trial.FINISHED
        self._ended(trial)
        self.events.emit("trial_finished", trial=trial.trial_id, value=trial.final_metric,
                         metrics=trial.metric_dict, state=trial.status,
                         duration=trial.duration, t=trial.end)
        if self.on_finished is not None:
            self.on_finished(trial)

    def failed(self, trial: Trial, error: str, error_type: str, tb: Optional[str],
               counted: bool = True) -> None:
        """``trial`` ended in failure; ``counted`` adds it to :attr:`failures`."""
        trial.end = time.time()
        trial.status = Trial.FAILED
        trial.error, trial.traceback = error, tb
        trial.info_dict.setdefault("error_type", error_type)
        self.failures += counted
        self._ended(trial)
        self.events.emit("trial_failed", trial=trial.trial_id, error=error,
                         error_type=error_type, traceback=tb, duration=trial.duration,
                         t=trial.end)

    def retried(self, trial: Trial, reason: str) -> None:
        """``trial`` lost its worker and waits to run again (its curve starts over)."""
        trial.retries += 1
        trial.step_history, trial.metric_history = [], []
        self.queue.retry(trial)
        self.events.emit("trial_retried", trial=trial.trial_id, reason=reason,
                         retries=trial.retries)

    def early_stopped(self, trial: Trial) -> None:
        trial.early_stop = True
        self.events.emit("early_stopped", trial=trial.trial_id, step=trial.last_step)

    def best_trial(self, direction: str) -> Optional[Trial]:
        return summary.best_trial(self.final, direction)

    def _ended(self, trial: Trial) -> None:
        self.final.append(trial)
        self.queue.last_ended = trial
