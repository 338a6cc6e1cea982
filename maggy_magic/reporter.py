"""The reporter a training function receives, and the worker's outgoing buffer.

``reporter.broadcast(metric, step)`` records a metric point (the driver sees it with the
next heartbeat) and raises :class:`~maggy_magic.errors.EarlyStopException` once the
driver has told this trial to stop. ``reporter.log(msg)`` and anything printed during the
trial go to the trial's log. :func:`current_reporter` finds the running trial's reporter
(for helpers such as ``maggy_magic.tensorboard.logdir()`` that the training function calls
without arguments). Stdlib-only (it runs on Spark executors).
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import BroadcastError, EarlyStopException, NotInTrialError
from .trial_files import config_checkpoint

#: At most this many metric points travel per message; more are thinned evenly (the
#: best, the worst and the last point always travel).
MAX_POINTS_PER_MESSAGE = 200
#: At most this many characters of log lines travel per message; the rest wait for the
#: next one (a frame holds at most 8 MiB).
MAX_LOG_CHARS_PER_MESSAGE = 1 << 20
#: A longer log line is cut to this many characters, with a marker saying so.
MAX_LINE_CHARS = 64 * 1024


def as_metric(value: Any, what: str) -> float:
    """``value`` as a finite float, or a :class:`BroadcastError` saying what is wrong."""
    if isinstance(value, bool) or value is None:
        raise BroadcastError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BroadcastError(f"{what} must be a number, got {type(value).__name__} "
                             f"{value!r}") from None
    if not math.isfinite(number):
        raise BroadcastError(f"{what} is {number}; return or broadcast a finite number")
    return number


def thin(points: List[List[float]], limit: int = MAX_POINTS_PER_MESSAGE) -> List[List[float]]:
    """At most ``limit`` of ``points`` (``[step, value]``, in step order), evenly spread,
    always with the first, the best and worst value (whatever the direction, an early
    stopping rule may look for either) and the last."""
    if len(points) <= limit:
        return points
    values = [p[1] for p in points]
    keep = {0, len(points) - 1, values.index(max(values)), values.index(min(values))}
    stride = (len(points) - 1) / (limit - len(keep))
    spread = [int(i * stride) for i in range(limit - len(keep))]
    for index in spread:
        if len(keep) >= limit:
            break
        keep.add(index)
    return [points[i] for i in sorted(keep)]


class Outbox:
    """Metric points and log lines waiting to be sent to the driver. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: List[List[float]] = []
        self._logs: List[Tuple[Optional[str], str]] = []
        self.wakeup = threading.Event()

    def add_point(self, step: int, value: float) -> None:
        with self._lock:
            self._points.append([step, value])

    def add_line(self, trial_id: Optional[str], line: str) -> None:
        with self._lock:
            self._logs.append((trial_id, line))
        self.wakeup.set()

    def take(self) -> Tuple[List[List[float]], List[Tuple[Optional[str], str]]]:
        """What one message carries: every pending point (thinned to
        ``MAX_POINTS_PER_MESSAGE``) and pending log lines up to
        ``MAX_LOG_CHARS_PER_MESSAGE`` characters (the rest stay for the next message)."""
        with self._lock:
            points, self._points = self._points, []
            logs, size, cut = [], 0, 0
            for trial_id, line in self._logs:
                if len(line) > MAX_LINE_CHARS:
                    line = (f"{line[:MAX_LINE_CHARS]} [maggy-magic: the line went on for "
                            f"{len(line) - MAX_LINE_CHARS} more characters, cut here]")
                if logs and size + len(line) > MAX_LOG_CHARS_PER_MESSAGE:
                    break
                logs.append((trial_id, line))
                size += len(line)
                cut += 1
            del self._logs[:cut]
        return thin(points), logs

    @property
    def pending(self) -> bool:
        return bool(self._points or self._logs)

    @property
    def has_logs(self) -> bool:
        return bool(self._logs)


class Reporter:
    """Handed to the training function; one per trial.

    Thread-safety: ``broadcast`` and ``log`` may be called from any thread of the trial;
    the worker calls ``stop()`` from its reader thread.
    """

    def __init__(self, trial_id: str, outbox: Outbox, budget: Any = None,
                 params: Optional[dict] = None, run_dir: Optional[str] = None,
                 files_root: Optional[str] = None):
        self.trial_id = trial_id
        #: The run directory as the driver told the worker (None if it did not).
        self.run_dir = run_dir
        #: Where this trial's folders are written: the run directory when this worker
        #: shares the driver's disk, else a staging folder laid out like it, whose trial
        #: folders travel to the run directory when the trial ends
        #: (see :mod:`maggy_magic.trial_files`).
        self.files_root = files_root if files_root is not None else run_dir
        self.budget = budget
        self.params = dict(params or {})
        #: Set by the worker where the disk is not shared: ``fetch(rel, path)`` brings the
        #: driver's copy of the checkpoint folder ``rel`` to ``path`` (if it has one).
        self.fetch_checkpoint: Optional[Callable[[str, str], None]] = None
        #: The folder :meth:`checkpoint_dir` gave, once asked (it travels home after).
        self.checkpoint: Optional[str] = None
        self._outbox = outbox
        self._stop = threading.Event()
        self._last_step: Optional[int] = None
        self.last_metric: Optional[float] = None

    # -- Maggy's API --------------------------------------------------------------------
    def broadcast(self, metric: Any, step: Optional[int] = None) -> None:
        """Report ``metric`` at ``step`` (default: one past the last step).

        Raises :class:`BroadcastError` for a non-number or a step below the last one, and
        :class:`EarlyStopException` once the driver has stopped this trial.
        """
        value = as_metric(metric, "the broadcast metric")
        if step is None:
            step = 0 if self._last_step is None else self._last_step + 1
        elif isinstance(step, bool) or not isinstance(step, int):
            try:
                if float(step).is_integer():
                    step = int(step)
                else:
                    raise ValueError
            except (TypeError, ValueError):
                raise BroadcastError(f"broadcast step must be an integer, got {step!r}") \
                    from None
        if self._last_step is not None and step < self._last_step:
            raise BroadcastError(f"broadcast step {step} is below the previous step "
                                 f"{self._last_step}; steps must not decrease")
        self._last_step = step
        self.last_metric = value
        self._outbox.add_point(step, value)
        if self._stop.is_set():
            raise EarlyStopException(value)

    def log(self, log_msg: Any, jupyter: bool = False) -> None:
        """Add ``log_msg`` (any object, one or more lines) to this trial's log."""
        for line in str(log_msg).splitlines() or [""]:
            self._outbox.add_line(self.trial_id, line)

    def get_trial_id(self) -> str:
        return self.trial_id

    def trial_dir(self) -> str:
        """This trial's own folder for files it produces (created if missing):
        ``<run dir>/trials/<trial id>/files`` when the run ends, wherever the trial ran."""
        if not self.files_root:
            raise NotInTrialError("this trial's driver did not tell its run directory, so "
                                  "there is no trial folder to give")
        path = os.path.join(self.files_root, "trials", str(self.trial_id), "files")
        os.makedirs(path, exist_ok=True)
        return path

    def checkpoint_dir(self) -> str:
        """This configuration's folder for state that outlives the trial (created if
        missing): every trial with these hyperparameters gets the same one, so a trial
        that ASHA, Hyperband or BOHB promotes to a bigger budget finds there what its
        lower rung saved, and continues instead of starting over.

        ``<run dir>/checkpoints/config-<hash>``; on a worker that does not share the
        driver's disk, a local copy of the driver's folder, fetched before this returns
        and sent back when the trial ends (within ``files_limit_mb``)."""
        if self.checkpoint is None:
            if not self.files_root:
                raise NotInTrialError("this trial's driver did not tell its run directory, "
                                      "so there is no checkpoint folder to give")
            rel = config_checkpoint(self.params)
            path = os.path.join(self.files_root, *rel.split("/"))
            if self.fetch_checkpoint is not None:
                self.fetch_checkpoint(rel, path)
            os.makedirs(path, exist_ok=True)
            self.checkpoint = path
        return self.checkpoint

    # -- driver side --------------------------------------------------------------------
    @property
    def early_stop(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def last_step(self) -> Optional[int]:
        return self._last_step


# -- the running trial ----------------------------------------------------------------
_active_lock = threading.Lock()
#: Reporters of the trials running in this process, by the thread that runs each.
_active: Dict[int, Reporter] = {}


def activate(reporter: Reporter) -> None:
    """Mark ``reporter``'s trial as running on the calling thread (the worker loop's)."""
    with _active_lock:
        _active[threading.get_ident()] = reporter


def deactivate(reporter: Reporter) -> None:
    """The trial of ``reporter`` ended; forget it."""
    with _active_lock:
        for ident, active in list(_active.items()):
            if active is reporter:
                del _active[ident]


def current_reporter() -> Optional[Reporter]:
    """The reporter of the trial running on this thread; from any other thread (one the
    training function started), the process's only running trial. None outside a trial,
    or when several trials run in this process and the calling thread is none of theirs.
    """
    with _active_lock:
        reporter = _active.get(threading.get_ident())
        if reporter is None and len(_active) == 1:
            reporter = next(iter(_active.values()))
    return reporter
