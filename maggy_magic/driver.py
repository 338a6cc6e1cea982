"""The driver: the one event loop that runs an experiment, whatever the backend.

It owns the optimizer (or ablator), the early-stopping rule and every :class:`Trial`;
it serves worker connections (see :mod:`maggy_magic.rpc`) and turns what workers say into
experiment events (see :mod:`maggy_magic.events`). Backends only launch and stop workers.

Threading: :meth:`Driver.serve` runs the loop in one thread and is the only code that
touches driver state. Other threads talk to it through :meth:`Driver.post` (thread-safe;
it wakes the loop through a socket pair), which is how :meth:`request_stop`,
:meth:`interrupt` and backend notifications arrive. Timers (heartbeat timeouts, early
stopping, journal flushes) are deadlines of the loop's ``select``; nothing sleeps.

Worker protocol (all messages are JSON dicts; ``→`` is worker to driver):

- → ``register {worker, host, pid}``; ← ``welcome {hb_interval, optimization_key,
  run_dir}``;
  registering also asks for a trial.
- ← ``trial {trial, params, budget, info}`` whenever the worker is idle and a trial is
  ready (an ask is parked until then). Optimizers that do not learn from results
  (``prefetch = True``: random and grid search) also get one trial queued on each worker
  ahead of time, so a worker goes from one trial to the next without waiting for the
  driver; the queued trial starts (``trial_started``) when the driver hears that the one
  before it ended.
- ← ``revoke {trial}``: drop that queued trial (the run is stopping).
- → ``heartbeat {trial, points, logs}``: metric points ``[step, value]`` and log records
  ``[trial, line]`` since the last message.
- ← ``stop {trial}``: the trial should end early (reporter raises at its next broadcast).
- → ``final {trial, value, metrics, early_stopped, points, logs}`` or
  → ``error {trial, error, error_type, traceback, points, logs}``: the trial ended; this
  also asks for the next one, so a trial costs one round trip.
- → ``fatal {error}``: the worker cannot run anything (cannot load the function).
- ← ``shutdown {}``: the experiment is over; the worker exits.

Gangs (trials that must run together, e.g. the ranks of data-parallel training): an
optimizer with ``gang_size = N > 1`` hands out N trials at a time, each with ``info``
``{gang, rank, ...}``; the driver starts them only when N workers are idle, together.

- → ``rendezvous {trial, key, value}``; ← ``rendezvous {trial, key, values}`` to every
  member once all N sent a value for that key (values in rank order), or ``{..., error}``.
  A rendezvous that does not complete within ``rendezvous_timeout`` fails the gang.
- → ``note {trial, info}``: merged into the trial's ``info_dict`` (e.g. a checkpoint).
- ← ``abort {}``: the worker's gang failed; the worker process exits at once (peers may be
  blocked in a collective operation) and the backend replaces it. A worker still connected
  ``abort_timeout`` seconds later is given up on (the backend kills it).

When a member fails or its worker is lost, every member ends (FAILED) and every member's
worker is aborted; then ``optimizer.gang_failed(trials, error)`` answers None (go on: it
may suggest a new gang) or the message the run fails with.
"""

from __future__ import annotations

import collections
import selectors
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional

from . import rpc
from .errors import is_maggy_error
from .events import EventStream
from .gangs import GangScheduling
from .trial import Trial

#: How often the loop checks heartbeats, at most.
_HEARTBEAT_CHECK = 1.0


class WorkerState:
    """What the driver knows about one connected worker."""

    __slots__ = ("id", "conn", "host", "pid", "trial", "next", "last_seen", "lost",
                 "abort_deadline")

    def __init__(self, worker_id: str, conn: rpc.ServerConnection, host: str, pid: int):
        self.id, self.conn, self.host, self.pid = worker_id, conn, host, pid
        self.trial: Optional[Trial] = None  # running
        self.next: Optional[Trial] = None   # queued on the worker, not started
        self.last_seen = time.monotonic()
        self.lost = False
        self.abort_deadline: Optional[float] = None  # set once told to abort


class DriverSettings:
    """The knobs of the loop, resolved from an experiment config."""

    def __init__(self, *, direction: str = "max", optimization_key: str = "metric",
                 es_interval: float = 1.0, es_min: int = 10, max_failures: int = 0,
                 max_retries: int = 2, hb_interval: float = 1.0, hb_timeout: float = 60.0,
                 stop_grace: float = 30.0, prefetch: bool = True,
                 rendezvous_timeout: float = 300.0, abort_timeout: float = 10.0,
                 run_dir: Optional[str] = None):
        self.direction = direction
        self.optimization_key = optimization_key
        self.es_interval = es_interval
        self.es_min = es_min
        self.max_failures = max_failures
        self.max_retries = max_retries
        self.hb_interval = hb_interval
        self.hb_timeout = hb_timeout
        self.stop_grace = stop_grace
        #: Allow queuing a trial ahead on a worker (off for launches that need every
        #: worker busy at once, such as barrier mode).
        self.prefetch = prefetch
        #: Gangs: seconds for all members to reach a rendezvous, and for an aborted
        #: worker to disconnect before it is given up on.
        self.rendezvous_timeout = rendezvous_timeout
        self.abort_timeout = abort_timeout
        #: The run directory, told to workers (trials find their TensorBoard folder there).
        self.run_dir = run_dir


class Driver(GangScheduling):
    """Runs one experiment: assigns trials, records results, ends the run.

    ``trials`` may hold the trials of a resumed run (ended ones stay as they are, the
    others are queued again). ``serve()`` returns when the run is over; ``state`` then is
    ``finished``, ``failed``, ``stopped`` or ``interrupted`` and ``error`` says why.
    """

    def __init__(self, optimizer, earlystop, settings: DriverSettings, events: EventStream,
                 *, host: str = "127.0.0.1", secret: Optional[bytes] = None,
                 trials: Optional[Dict[str, Trial]] = None):
        self.optimizer = optimizer
        self.earlystop = earlystop
        self.settings = settings
        self.events = events
        self.secret = secret or rpc.new_secret()
        self.trials: Dict[str, Trial] = dict(trials or {})
        self.final: List[Trial] = sorted((t for t in self.trials.values() if t.done),
                                         key=lambda t: t.end or 0.0)
        self.queue: Deque[Trial] = collections.deque(
            t for t in self.trials.values() if not t.done)
        for trial in self.queue:
            trial.status, trial.worker = Trial.PENDING, None
        self._next_id = 1 + max((int(i) for i in self.trials if i.isdigit()), default=-1)
        self.workers: Dict[str, WorkerState] = {}
        self.idle: Deque[WorkerState] = collections.deque()
        self.failures = sum(t.status == Trial.FAILED for t in self.final)
        self.rejected = 0
        self.state = "created"
        self.error: Optional[str] = None
        self.error_type: Optional[str] = None
        self._exhausted = False
        self._last_ended: Optional[Trial] = None
        self._stopping = False
        self._done = threading.Event()
        self._posted: Deque[Callable[[], None]] = collections.deque()
        self._nonces: set = set()
        self._sel = selectors.DefaultSelector()
        self._listener = socket.create_server((host, 0), backlog=128)
        self._listener.setblocking(False)
        self.address = (host, self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._timers: Dict[str, float] = {}
        self._periodic: List[tuple] = []
        #: Gangs: (gang, key) → [deadline, {rank: value}] of rendezvous under way.
        self._meetings: Dict[tuple, list] = {}
        #: Gangs: gang → [deadline, trial, error, error_type, traceback] of a member's
        #: error waiting for GANG_SETTLE.
        self._settling: Dict[Any, list] = {}

    # -- public, thread-safe ------------------------------------------------------------
    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread soon. Safe from any thread."""
        self._posted.append(fn)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending) or the loop is gone

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop gracefully: no new trials, running ones are told to stop early."""
        self.post(lambda: self._begin_stop("stopped", reason))

    def interrupt(self, reason: str = "interrupted") -> None:
        """End now: running trials stay incomplete in the journal (resume reruns them)."""
        self.post(lambda: self._finish("interrupted", reason))

    def fail(self, message: str, error_type: str = "ExperimentFailed") -> None:
        """End the run as failed (used by backends when workers cannot start)."""
        self.post(lambda: self._fail(message, error_type))

    def add_periodic(self, interval: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the loop thread every ``interval`` seconds (before serve())."""
        self._periodic.append([interval, fn, time.monotonic() + interval])

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # -- the loop -----------------------------------------------------------------------
    def serve(self) -> None:
        """Run until the experiment ends. Call from exactly one thread."""
        self.state = "running"
        self.optimizer.trial_store = self.trials
        self.optimizer.final_store = self.final
        try:
            self._dispatch()
            now = time.monotonic()
            self._timers = {"heartbeat": now + _HEARTBEAT_CHECK,
                            "earlystop": now + self.settings.es_interval}
            while not self._done.is_set():
                timeout = max(0.0, min(list(self._timers.values()) +
                                       [p[2] for p in self._periodic]) - time.monotonic())
                for key, mask in self._sel.select(timeout):
                    if self._done.is_set():
                        break  # run_finished is the journal's last event
                    self._on_ready(key, mask)
                if not self._done.is_set():
                    self._run_posted()
                    self._run_timers()
        except BaseException as exc:  # noqa: BLE001 - the run must end in a known state
            if not self._done.is_set():
                self._finish("failed", f"driver error: {type(exc).__name__}: {exc}",
                             error_type="DriverError")
            raise
        finally:
            self._close_all()

    def _on_ready(self, key, mask) -> None:
        tag = key.data
        if tag == "accept":
            self._accept()
        elif tag == "wake":
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        else:
            conn: rpc.ServerConnection = tag
            if mask & selectors.EVENT_WRITE:
                conn.flush()
                self._sync_interest(conn)
            if mask & selectors.EVENT_READ:
                self._read(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn = rpc.ServerConnection(sock, self.secret, self._nonces)
            self._sel.register(conn, selectors.EVENT_READ, conn)

    def _read(self, conn: rpc.ServerConnection) -> None:
        try:
            messages = conn.read()
        except rpc.FrameError as exc:
            self.rejected += 1
            self.events.emit("frame_rejected", peer=f"{conn.peer[0]}:{conn.peer[1]}",
                             reason=str(exc), count=self.rejected)
            self._drop(conn, f"rejected frame: {exc}")
            return
        except rpc.ConnectionLost as exc:
            self._drop(conn, str(exc))
            return
        for message in messages:
            if conn.closed or self._done.is_set():
                return
            self._handle(conn, message)
        self._sync_interest(conn)

    def _sync_interest(self, conn: rpc.ServerConnection) -> None:
        """Watch for writability exactly while the connection has queued output."""
        if conn.closed or conn.pending_output == conn.watching_write:
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending_output else 0)
        try:
            self._sel.modify(conn, want, conn)
            conn.watching_write = conn.pending_output
        except (KeyError, ValueError):
            pass

    def _send(self, worker: WorkerState, message: Dict[str, Any]) -> None:
        worker.conn.send(message)
        self._sync_interest(worker.conn)

    # -- messages -----------------------------------------------------------------------
    def _handle(self, conn: rpc.ServerConnection, msg: Dict[str, Any]) -> None:
        kind = msg.get("type")
        if conn.worker is None:
            if kind != "register" or not isinstance(msg.get("worker"), str):
                self._drop(conn, "first message was not a registration")
                return
            self._register(conn, msg)
            return
        worker = self.workers.get(conn.worker)
        if worker is None or worker.conn is not conn:
            return
        worker.last_seen = time.monotonic()
        trial = worker.trial
        if trial is not None and msg.get("trial") not in (None, trial.trial_id):
            trial = None  # a message about a trial this worker no longer owns
        self._absorb(worker, trial, msg)
        if kind == "heartbeat":
            return
        if kind == "rendezvous":
            self._rendezvous(worker, trial, msg)
            return
        if kind == "note":
            if trial is not None and isinstance(msg.get("info"), dict):
                trial.info_dict.update(msg["info"])
            return
        if kind == "final" and trial is not None:
            self._trial_ended(worker, trial, msg)
        elif kind == "error" and trial is not None:
            self._trial_failed(worker, trial, msg)
        elif kind == "fatal":
            self._fail(f"worker {worker.id} cannot run the training function: "
                       f"{msg.get('error')}", msg.get("error_type") or "ExperimentFailed")
            return
        if kind in ("final", "error"):
            if trial is not None:
                worker.trial = None
                queued, worker.next = worker.next, None
                if queued is not None:
                    self._begin(queued, worker)
                    self._prefetch(worker)
            if worker.trial is None and worker not in self.idle \
                    and worker.abort_deadline is None:
                self.idle.append(worker)
            self._dispatch()

    def _register(self, conn: rpc.ServerConnection, msg: Dict[str, Any]) -> None:
        worker_id = msg["worker"]
        old = self.workers.get(worker_id)
        if old is not None and not old.lost:
            self._lose(old, "worker re-registered (its earlier incarnation is gone)")
        worker = WorkerState(worker_id, conn, str(msg.get("host", "?")), int(msg.get("pid", 0)))
        conn.worker = worker_id
        self.workers[worker_id] = worker
        self.events.emit("worker_joined", worker=worker_id, host=worker.host, pid=worker.pid)
        self._send(worker, {"type": "welcome", "hb_interval": self.settings.hb_interval,
                            "optimization_key": self.settings.optimization_key,
                            "rendezvous_timeout": self.settings.rendezvous_timeout,
                            "run_dir": self.settings.run_dir})
        self.idle.append(worker)
        self._dispatch()

    def _absorb(self, worker: WorkerState, trial: Optional[Trial], msg: Dict[str, Any]) -> None:
        """Record the metric points and log lines a message carries."""
        points = msg.get("points")
        if points and trial is not None:
            for step, value in points:
                trial.append_metric(step, value)
                self.events.emit("metric", trial=trial.trial_id, step=step, value=value)
        logs = msg.get("logs")
        if logs:
            by_trial: Dict[Optional[str], List[str]] = {}
            for trial_id, line in logs:
                by_trial.setdefault(trial_id, []).append(line)
            for trial_id, lines in by_trial.items():
                self.events.emit("log", worker=worker.id, trial=trial_id, lines=lines)

    def _trial_ended(self, worker: WorkerState, trial: Trial, msg: Dict[str, Any]) -> None:
        trial.end = time.time()
        trial.final_metric = msg.get("value")
        trial.metric_dict = msg.get("metrics") or {}
        early = bool(msg.get("early_stopped"))
        trial.status = Trial.EARLY_STOPPED if early else Trial.FINISHED
        self._ended(trial)
        self.events.emit("trial_finished", trial=trial.trial_id, value=trial.final_metric,
                         metrics=trial.metric_dict, state=trial.status,
                         duration=trial.duration)

    def _trial_failed(self, worker: WorkerState, trial: Trial, msg: Dict[str, Any]) -> None:
        if trial.info_dict.get("gang") is not None:
            self._member_failed(worker, trial, msg)
            return
        self._mark_failed(trial, str(msg.get("error")), msg.get("error_type") or "Exception",
                          msg.get("traceback"))

    def _mark_failed(self, trial: Trial, error: str, error_type: str,
                     tb: Optional[str], counted: bool = True) -> None:
        trial.end = time.time()
        trial.status = Trial.FAILED
        trial.error, trial.traceback = error, tb
        trial.info_dict.setdefault("error_type", error_type)
        self.failures += counted
        self._ended(trial)
        self.events.emit("trial_failed", trial=trial.trial_id, error=error,
                         error_type=error_type, traceback=tb, duration=trial.duration)
        if counted and self.failures > self.settings.max_failures and not self._done.is_set():
            what = error if is_maggy_error(error_type) else f"{error_type}: {error}"
            self._fail(f"trial {trial.trial_id} failed: {what} ({self.failures} failed "
                       f"trial(s), max_failures={self.settings.max_failures})", error_type)

    def _ended(self, trial: Trial) -> None:
        self.final.append(trial)
        self._last_ended = trial

    # -- assigning trials ---------------------------------------------------------------
    def _next_trial(self) -> Optional[Trial]:
        if self._stopping:
            return None
        if self.queue:
            return self.queue.popleft()
        if self._exhausted:
            return None
        answer = self.optimizer.get_suggestion(self._last_ended)
        self._last_ended = None
        if answer is None:
            self._exhausted = True
            return None
        if isinstance(answer, str):  # IDLE: ask again once a trial ends
            return None
        trial = answer if isinstance(answer, Trial) else Trial(dict(answer))
        trial.trial_id = f"{self._next_id:04d}"
        self._next_id += 1
        self.trials[trial.trial_id] = trial
        return trial

    def _dispatch(self) -> None:
        """Give ready trials to idle workers; end the run when nothing is left."""
        if getattr(self.optimizer, "gang_size", 1) > 1:
            self._dispatch_gangs()
        while self.idle and not self._done.is_set() \
                and getattr(self.optimizer, "gang_size", 1) <= 1:
            trial = self._next_trial()
            if trial is None:
                break
            worker = self.idle.popleft()
            while worker.lost and self.idle:
                worker = self.idle.popleft()
            if worker.lost:
                self.queue.appendleft(trial)
                break
            self._begin(trial, worker)
            self._send_trial(trial, worker)
            self._prefetch(worker)
        self._steal_queued()
        running = any(w.trial is not None for w in self.workers.values()) \
            or bool(self._settling)
        if not running and not self._done.is_set():
            if self._stopping:
                self._finish(self._stop_state, self._stop_reason)
            elif not self.queue and (self._exhausted or self._optimizer_stuck()):
                self._finish("finished", None)

    def _optimizer_stuck(self) -> bool:
        """IDLE while nothing runs: no trial can ever end to unblock it."""
        if not self.idle:
            return False
        answer = self.optimizer.get_suggestion(None)
        if answer is None:
            self._exhausted = True
            return True
        if isinstance(answer, str):
            self._exhausted = True
            return True
        trial = answer if isinstance(answer, Trial) else Trial(dict(answer))
        trial.trial_id = f"{self._next_id:04d}"
        self._next_id += 1
        self.trials[trial.trial_id] = trial
        self.queue.append(trial)
        self._dispatch()
        return False

    def _begin(self, trial: Trial, worker: WorkerState) -> None:
        """Record that ``worker`` runs ``trial`` from now on."""
        trial.status, trial.worker = Trial.RUNNING, worker.id
        trial.start, trial.end = time.time(), None
        trial.early_stop = False
        worker.trial = trial
        worker.last_seen = time.monotonic()
        self.events.emit("trial_started", trial=trial.trial_id, params=trial.params,
                         worker=worker.id, budget=trial.budget, info=trial.info_dict,
                         attempt=trial.retries)

    def _send_trial(self, trial: Trial, worker: WorkerState) -> None:
        self._send(worker, {"type": "trial", "trial": trial.trial_id, "params": trial.params,
                            "budget": trial.budget, "info": trial.info_dict})

    def _prefetch(self, worker: WorkerState) -> None:
        """Queue the following trial on ``worker`` if the optimizer allows it."""
        if not (self.settings.prefetch and getattr(self.optimizer, "prefetch", False)) \
                or worker.next is not None or self._stopping or self._done.is_set():
            return
        trial = self._next_trial()
        if trial is not None:
            trial.worker = worker.id
            worker.next = trial
            self._send_trial(trial, worker)

    def _steal_queued(self) -> None:
        """Idle workers take trials still queued on busy ones (the tail of a run).

        The busy worker is told to drop it (``revoke``); if it had already started it,
        it stops that copy and its report is ignored, so the trial counts once."""
        for victim in list(self.workers.values()):
            if not self.idle or self._stopping:
                return
            if victim.next is None or victim.lost:
                continue
            trial, victim.next = victim.next, None
            self._send(victim, {"type": "revoke", "trial": trial.trial_id})
            worker = self.idle.popleft()
            while worker.lost and self.idle:
                worker = self.idle.popleft()
            if worker.lost:
                trial.status, trial.worker = Trial.PENDING, None
                self.queue.appendleft(trial)
                return
            self._begin(trial, worker)
            self._send_trial(trial, worker)

    def _unqueue(self, worker: WorkerState) -> None:
        """Take back the trial queued on ``worker`` (it never started)."""
        queued, worker.next = worker.next, None
        if queued is not None:
            queued.status, queued.worker = Trial.PENDING, None
            self.queue.appendleft(queued)

    # -- losing workers -----------------------------------------------------------------
    def _drop(self, conn: rpc.ServerConnection, reason: str) -> None:
        try:
            self._sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
        worker = self.workers.get(conn.worker) if conn.worker else None
        if worker is not None and worker.conn is conn and not worker.lost:
            self._lose(worker, reason)

    def _lose(self, worker: WorkerState, reason: str) -> None:
        worker.lost = True
        if not worker.conn.closed:
            try:
                self._sel.unregister(worker.conn)
            except (KeyError, ValueError):
                pass
            worker.conn.close()
        self.events.emit("worker_lost", worker=worker.id, reason=reason)
        self._unqueue(worker)
        trial, worker.trial = worker.trial, None
        if trial is not None and not self._done.is_set():
            if trial.info_dict.get("gang") is not None:
                self._gang_failed(trial, f"its worker {worker.id} was lost: {reason}",
                                  "WorkerLost", None)
            elif self._stopping:
                self._mark_failed(trial, f"worker {worker.id} lost while stopping: {reason}",
                                  "WorkerLost", None)
            elif trial.retries < self.settings.max_retries:
                trial.retries += 1
                trial.status, trial.worker = Trial.PENDING, None
                trial.step_history, trial.metric_history = [], []
                self.events.emit("trial_retried", trial=trial.trial_id,
                                 reason=f"worker {worker.id} lost: {reason}",
                                 retries=trial.retries)
                self.queue.append(trial)
            else:
                self._mark_failed(trial, f"worker lost {trial.retries + 1} times, last: "
                                  f"{reason} (max_retries={self.settings.max_retries})",
                                  "WorkerLost", None)
        self._dispatch()

    # -- timers -------------------------------------------------------------------------
    def _run_posted(self) -> None:
        while self._posted:
            self._posted.popleft()()

    def _run_timers(self) -> None:
        now = time.monotonic()
        if now >= self._timers["heartbeat"]:
            self._timers["heartbeat"] = now + _HEARTBEAT_CHECK
            limit = self.settings.hb_timeout
            for worker in list(self.workers.values()):
                if not worker.lost and worker.trial is not None \
                        and now - worker.last_seen > limit:
                    self._lose(worker, f"no heartbeat for {limit:g} s")
            if self._meetings or self._settling or any(w.abort_deadline is not None
                                     for w in self.workers.values()):
                self._check_gangs(now)
        if now >= self._timers["earlystop"]:
            self._timers["earlystop"] = now + self.settings.es_interval
            self._check_earlystop()
        for entry in self._periodic:
            if now >= entry[2]:
                entry[2] = now + entry[0]
                entry[1]()

    def _check_earlystop(self) -> None:
        if self._stopping or len(self.final) < self.settings.es_min:
            return
        running = {w.trial.trial_id: w.trial for w in self.workers.values()
                   if w.trial is not None and not w.trial.early_stop and w.trial.step_history}
        if not running:
            return
        for trial_id in self.earlystop.earlystop_check(running, list(self.final),
                                                       self.settings.direction) or ():
            trial = running.get(trial_id)
            if trial is not None:
                self._stop_trial(trial)

    def _stop_trial(self, trial: Trial) -> None:
        trial.early_stop = True
        self.events.emit("early_stopped", trial=trial.trial_id, step=trial.last_step)
        worker = self.workers.get(trial.worker)
        if worker is not None and not worker.lost:
            self._send(worker, {"type": "stop", "trial": trial.trial_id})

    # -- ending -------------------------------------------------------------------------
    def _begin_stop(self, state: str, reason: str) -> None:
        if self._done.is_set() or self._stopping:
            return
        self._stopping = True
        self._stop_state, self._stop_reason = state, reason
        self.events.emit("stop_requested", reason=reason)
        for worker in self.workers.values():
            if worker.next is not None and not worker.lost:
                self._send(worker, {"type": "revoke", "trial": worker.next.trial_id})
                self._unqueue(worker)
            if worker.trial is not None and not worker.trial.early_stop:
                self._send(worker, {"type": "stop", "trial": worker.trial.trial_id})
        grace = self.settings.stop_grace
        self._periodic.append([grace, lambda: self._finish(state, reason),
                               time.monotonic() + grace])
        self._dispatch()

    def _fail(self, message: str, error_type: str = "ExperimentFailed") -> None:
        if not self._done.is_set():
            self._finish("failed", message, error_type=error_type)

    def _finish(self, state: str, error: Optional[str],
                error_type: Optional[str] = None) -> None:
        if self._done.is_set():
            return
        self.state, self.error, self.error_type = state, error, error_type
        for worker in self.workers.values():
            if not worker.lost:
                worker.conn.send({"type": "shutdown"})
                try:
                    worker.conn.flush()
                except OSError:
                    pass
        if state in ("finished", "stopped"):
            self.optimizer.finalize_experiment(list(self.trials.values()))
        self.events.emit("run_finished", state=state, best=self.best_summary(), error=error,
                         counts=self.counts())
        self._done.set()

    def _close_all(self) -> None:
        for key in list(self._sel.get_map().values()):
            obj = key.fileobj
            try:
                self._sel.unregister(obj)
            except (KeyError, ValueError):
                pass
            try:
                obj.close()
            except OSError:
                pass
        self._sel.close()
        self._wake_w.close()

    # -- summaries ----------------------------------------------------------------------
    def best_trial(self) -> Optional[Trial]:
        """The best scored trial; in a gang only rank 0 (the chief) speaks for it."""
        best = None
        for trial in self.final:
            if trial.status == Trial.FAILED or trial.final_metric is None \
                    or trial.info_dict.get("rank", 0) != 0:
                continue
            if best is None or (trial.final_metric > best.final_metric
                                if self.settings.direction == "max"
                                else trial.final_metric < best.final_metric):
                best = trial
        return best

    def best_summary(self) -> Optional[Dict[str, Any]]:
        best = self.best_trial()
        if best is None:
            return None
        return {"trial": best.trial_id, "value": best.final_metric, "params": best.params}

    def counts(self) -> Dict[str, int]:
        counts = collections.Counter(t.status for t in self.trials.values())
        return {"finished": counts[Trial.FINISHED],
                "early_stopped": counts[Trial.EARLY_STOPPED],
                "failed": counts[Trial.FAILED],
                "incomplete": counts[Trial.RUNNING] + counts[Trial.PENDING],
                "rejected_frames": self.rejected}

