"""The experiment event schema and the stream that delivers events to listeners.

Every event is a flat, JSON-serialisable dict with ``type``, ``run`` (run id), ``seq``
(monotonic per run, continued across resumes) and ``t`` (unix time), plus the fields of
its type below. The journal stores these events one per line; the dashboard, the text
progress and resume all read the same stream.

=================  ==========================================================
type               fields
=================  ==========================================================
run_started        config, kind, name, run_dir, resumed (bool), backend (what it runs on)
worker_joined      worker, host, pid (and devices: the worker's GPU ids, when the
                   run asked for GPUs)
worker_lost        worker, reason
trial_started      trial, params, worker, budget, info, attempt (and devices, as in
                   worker_joined)
metric             trial, step, value
log                worker, trial (or None), lines (list of str)
early_stopped      trial, step
trial_finished     trial, value, metrics, state (FINISHED or EARLY_STOPPED), duration
trial_failed       trial, error, error_type, traceback, duration
trial_retried      trial, reason, retries
frame_rejected     peer, reason, count
stop_requested     reason
run_finished       state (finished, failed, stopped, interrupted), best, error, counts
events_lost        first, end, count, reason (events that never arrived from a remote
                   driver; livy backend only)
=================  ==========================================================
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

Event = Dict[str, Any]
Listener = Callable[[Event], None]

EVENT_FIELDS = {
    "run_started": ("config", "kind", "name", "run_dir", "resumed", "backend"),
    "worker_joined": ("worker", "host", "pid"),
    "worker_lost": ("worker", "reason"),
    "trial_started": ("trial", "params", "worker", "budget", "info", "attempt"),
    "metric": ("trial", "step", "value"),
    "log": ("worker", "trial", "lines"),
    "early_stopped": ("trial", "step"),
    "trial_finished": ("trial", "value", "metrics", "state", "duration"),
    "trial_failed": ("trial", "error", "error_type", "traceback", "duration"),
    "trial_retried": ("trial", "reason", "retries"),
    "frame_rejected": ("peer", "reason", "count"),
    "stop_requested": ("reason",),
    "run_finished": ("state", "best", "error", "counts"),
    # only where events arrive from elsewhere (the livy backend): events that could not be
    # fetched; seq is the last seq before them
    "events_lost": ("first", "end", "count", "reason"),
}


class EventStream:
    """Numbers events and hands each to every listener, in order.

    Used by one thread at a time (the driver's loop). A listener that raises is reported
    on stderr once and removed, so a broken display never stops an experiment; a
    *required* listener (the run's journal, the backend's link) that raises is removed too,
    and ``on_failure(what, exc)`` is told, which fails the run.
    """

    def __init__(self, run_id: str, first_seq: int = 0):
        self.run_id = run_id
        self.seq = first_seq
        self.listeners: List[Listener] = []
        self._required: Dict[int, str] = {}
        #: ``on_failure(what, exc)``: a required listener failed (set by the experiment).
        self.on_failure: Optional[Callable[[str, BaseException], None]] = None
        #: What failed so far: ``(what, exc)`` of each required listener that raised.
        self.failures: List[Tuple[str, BaseException]] = []

    def add(self, listener: Listener, *, required: Optional[str] = None) -> None:
        """Deliver every event to ``listener`` from now on. ``required`` says what it is
        (e.g. "the run's journal"): the run cannot go on without it."""
        self.listeners.append(listener)
        if required:
            self._required[id(listener)] = required

    def emit(self, type_: str, **fields: Any) -> Event:
        event = {"type": type_, "run": self.run_id, "seq": self.seq, "t": time.time()}
        event.update(fields)
        self.seq += 1
        return self.deliver(event)

    def deliver(self, event: Event) -> Event:
        """Hand an event that is already numbered (by a driver elsewhere) to every
        listener, as ``emit`` does."""
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a display must not break the run
                self.listeners.remove(listener)
                what = self._required.pop(id(listener), None)
                if what is None:
                    print(f"maggy-magic: event listener {listener!r} failed and was "
                          f"removed:\n{traceback.format_exc()}", file=sys.stderr)
                    continue
                self.failures.append((what, exc))
                if self.on_failure is not None:
                    self.on_failure(what, exc)
        return event
