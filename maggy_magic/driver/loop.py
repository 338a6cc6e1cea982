"""The driver's event loop: :class:`Driver` turns what workers say into experiment events
and decides what each worker does next (the protocol is in :mod:`maggy_magic.driver`).

Its parts: :class:`~.hub.ConnectionHub` moves the frames, :class:`~.trial_queue.TrialQueue`
supplies trials, :class:`~.assign.Assigner` hands them to workers (queue-ahead, take-back,
release), :class:`~maggy_magic.distributed.gangs.GangPolicy` schedules gangs, and
:mod:`.summary` reads the outcome. This module keeps the decisions: what a lost worker or
failed trial means, when early stopping is asked, when the run ends.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Deque, Dict, Optional

from .. import rpc
from ..distributed.gangs import Failure, GangPolicy, gang_of
from ..errors import is_maggy_error
from ..events import EventStream
from ..trial import Trial
from . import summary
from .artifacts import FILE_MESSAGES, RunFiles
from .assign import Assigner
from .eventloop import EventLoop
from .hub import ConnectionHub
from .record import RunRecord
from .settings import DriverSettings, WorkerState
from .stopping import StopConditions
from .tls import server_context, wants_tls
from .trial_queue import TrialQueue

#: How often the loop checks heartbeats, at most.
HEARTBEAT_CHECK = 1.0


class Driver(EventLoop):
    """Runs one experiment: assigns trials, records results, ends the run.

    ``trials`` may hold the trials of a resumed run (ended ones stay as they are, the
    others are queued again). ``serve()`` returns when the run is over; ``state`` then is
    ``finished``, ``failed``, ``stopped`` or ``interrupted`` and ``error`` says why.
    """

    def __init__(self, optimizer, earlystop, settings: DriverSettings, events: EventStream,
                 *, host: Any = "127.0.0.1", secret: Optional[bytes] = None,
                 trials: Optional[Dict[str, Trial]] = None, tls: Any = "auto"):
        self.optimizer = optimizer
        self.earlystop = earlystop
        self.settings = settings
        self.events = events
        self.secret = secret or rpc.new_secret()
        self.trials: Dict[str, Trial] = dict(trials or {})
        self.queue = TrialQueue(optimizer, self.trials,
                                (t for t in self.trials.values() if not t.done))
        self.limits = StopConditions(settings, lambda why: self._begin_stop("stopped", why))
        self.record = RunRecord(self.trials, events, self.queue, self.limits.finished)
        self.files = RunFiles(settings.run_dir, events, settings.files_limit, settings.storage)
        #: The ended trials, in the order they ended (the optimizer's ``final_store``).
        self.final = self.record.final
        size = getattr(optimizer, "gang_size", 1)
        self.gangs = GangPolicy(size, settings.rendezvous_timeout) if size > 1 else None
        self.workers: Dict[str, WorkerState] = {}
        self.idle: Deque[WorkerState] = collections.deque()
        self.rejected = 0
        self.state = "created"
        self.error: Optional[str] = None
        self.error_type: Optional[str] = None
        super().__init__()
        self._stopping = False
        self.assigner = Assigner(
            self.queue, self.idle, begin=self._begin, send=self._send,
            queue_ahead=settings.prefetch and getattr(optimizer, "prefetch", False),
            release=settings.release_idle and self.gangs is None)
        #: The pinned SHA-256 of this run's TLS certificate (None: no TLS); workers get it
        #: through the launcher, with the secret.
        self.fingerprint: Optional[str] = None
        context = None
        if wants_tls(host, tls):
            context, self.fingerprint = server_context()
        self.hub = ConnectionHub(host, self.secret, self._handle, self._closed,
                                 ssl_context=context)
        self.address = self.hub.address

    # -- public, thread-safe ------------------------------------------------------------
    def wake(self) -> None:
        self.hub.wake()

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop gracefully: no new trials, running ones are told to stop early."""
        self.post(lambda: self._begin_stop("stopped", reason))

    def interrupt(self, reason: str = "interrupted") -> None:
        """End now: running trials stay incomplete in the journal (resume reruns them)."""
        self.post(lambda: self._finish("interrupted", reason))

    def fail(self, message: str, error_type: str = "ExperimentFailed") -> None:
        """End the run as failed (used by backends when workers cannot start)."""
        self.post(lambda: self._fail(message, error_type))

    # -- the loop -----------------------------------------------------------------------
    def serve(self) -> None:
        """Run until the experiment ends. Call from exactly one thread."""
        self.state = "running"
        self.optimizer.trial_store, self.optimizer.final_store = self.trials, self.final
        try:
            self.limits.start(self.add_periodic)  # the time budget runs from here
            self._dispatch()
            self.add_periodic(self.settings.es_interval, self._check_earlystop, first=True)
            self.add_periodic(HEARTBEAT_CHECK, self._check_workers, first=True)
            # run_finished is the journal's last event: nothing is served after it
            self.run_until_done(lambda timeout: self.hub.poll(timeout, self._running))
        except BaseException as exc:  # noqa: BLE001 - the run must end in a known state
            if not self.done:
                self._finish("failed", f"driver error: {type(exc).__name__}: {exc}",
                             error_type="DriverError")
            raise
        finally:
            self.hub.close_all()

    def _running(self) -> bool:
        return not self.done

    def _send(self, worker: WorkerState, message: Dict[str, Any]) -> None:
        self.hub.send(worker.conn, message)

    def _closed(self, conn: rpc.ServerConnection, reason: str, rejected: bool) -> None:
        """The hub closed ``conn``: it broke, or sent a frame that must not be trusted."""
        if rejected:
            self.rejected += 1
            self.events.emit("frame_rejected", peer=f"{conn.peer[0]}:{conn.peer[1]}",
                             reason=reason, count=self.rejected)
            reason = f"rejected frame: {reason}"
        worker = self.workers.get(conn.worker) if conn.worker else None
        if worker is not None and worker.conn is conn and not worker.lost:
            self._lose(worker, reason)

    # -- messages -----------------------------------------------------------------------
    def _handle(self, conn: rpc.ServerConnection, msg: Dict[str, Any]) -> None:
        kind = msg.get("type")
        if conn.worker is None:
            if kind != "register" or not isinstance(msg.get("worker"), str):
                self.hub.close(conn)
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
        self.record.absorb(worker.id, trial, msg, worker.revoked)
        if kind == "heartbeat":
            return
        if kind in FILE_MESSAGES:  # trial files and checkpoints (see .artifacts)
            self.files.handle(worker, self.trials.get(str(msg.get("trial"))), msg, self._send)
            return
        if kind == "rendezvous":
            self._rendezvous(worker, trial, msg)
            return
        if kind == "note":
            if trial is not None and isinstance(msg.get("info"), dict):
                trial.info_dict.update(msg["info"])
            return
        if kind == "final" and trial is not None:
            self.record.finished(trial, msg)
        elif kind == "error" and trial is not None:
            self._trial_failed(worker, trial, msg)
        elif kind == "fatal":
            self._fail(f"worker {worker.id} cannot run the training function: "
                       f"{msg.get('error')}", msg.get("error_type") or "ExperimentFailed")
            return
        if kind in ("final", "error"):
            if self.done:
                return  # that trial's end ended the run: nothing starts after run_finished
            if trial is not None:
                worker.trial = None
                queued, worker.next = worker.next, None
                if queued is not None:
                    self._begin(queued, worker)
                    self.assigner.add_queued(worker)
            if worker.trial is None and worker not in self.idle \
                    and worker.abort_deadline is None:
                self.idle.append(worker)
            self._dispatch()

    def _register(self, conn: rpc.ServerConnection, msg: Dict[str, Any]) -> None:
        worker_id = msg["worker"]
        old = self.workers.get(worker_id)
        if old is not None and not old.lost:
            self._lose(old, "worker re-registered (its earlier incarnation is gone)")
        worker = WorkerState.registered(conn, msg)
        conn.worker = worker_id
        self.workers[worker_id] = worker
        self.events.emit("worker_joined", **worker.joined())
        self._send(worker, {"type": "welcome", "hb_interval": self.settings.hb_interval,
                            "optimization_key": self.settings.optimization_key,
                            "rendezvous_timeout": self.settings.rendezvous_timeout,
                            "run_dir": self.settings.run_dir, **self.files.welcome()})
        self.idle.append(worker)
        self._dispatch()

    def _trial_failed(self, worker: WorkerState, trial: Trial, msg: Dict[str, Any]) -> None:
        failure = Failure(trial, str(msg.get("error")), msg.get("error_type") or "Exception",
                          msg.get("traceback"))
        if self.gangs is not None and gang_of(trial) is not None:
            self._member_failed(worker, failure)
            return
        self._mark_failed(*failure)

    def _mark_failed(self, trial: Trial, error: str, error_type: str,
                     tb: Optional[str], counted: bool = True) -> None:
        self.record.failed(trial, error, error_type, tb, counted)
        failures, limit = self.record.failures, self.settings.max_failures
        if counted and failures > limit and not self.done:
            what = error if is_maggy_error(error_type) else f"{error_type}: {error}"
            self._fail(f"trial {trial.trial_id} failed: {what} ({failures} failed "
                       f"trial(s), max_failures={limit})", error_type)

    # -- assigning trials ---------------------------------------------------------------
    def _dispatch(self) -> None:
        """Give ready trials to idle workers; end the run when nothing is left."""
        if self.gangs is not None:
            self._dispatch_gangs()
        elif not self.done:
            self.assigner.fill()
            self.assigner.take_back_queued(self.workers.values())
            self.assigner.release_idle()
        running = any(w.trial is not None for w in self.workers.values()) \
            or (self.gangs is not None and self.gangs.waiting)
        if not running and not self.done:
            if self._stopping:
                self._finish(self._stop_state, self._stop_reason)
            elif not self.queue and (self.queue.exhausted or self._optimizer_stuck()):
                self._finish("finished", None)

    def _optimizer_stuck(self) -> bool:
        """IDLE while nothing runs: no trial can ever end to unblock it."""
        if not self.idle:
            return False
        if self.queue.unblock():
            self._dispatch()
            return False
        return True

    def _begin(self, trial: Trial, worker: WorkerState) -> None:
        """Record that ``worker`` runs ``trial`` from now on."""
        self.record.started(trial, worker.id, worker.devices)
        worker.trial = trial
        worker.last_seen = time.monotonic()

    # -- gangs (GangPolicy decides, the driver acts) ------------------------------------
    def _dispatch_gangs(self) -> None:
        """Start whole gangs: member i on the i-th idle worker (ranks come from the
        trials' info, never from the workers)."""
        while not self.done:
            live = [w for w in self.idle if not w.lost]
            gang, put_back = self.gangs.next_gang(len(live), self.queue.next)
            for trial in reversed(put_back):
                self.queue.put_back(trial)
            if not gang:
                return
            for trial, worker in zip(gang, live):
                self.idle.remove(worker)
                self.assigner.start(trial, worker)
            self.gangs.started(gang)

    def _member_failed(self, worker: WorkerState, failure: Failure) -> None:
        # a rank often fails because a peer died (its collective op broke): hear what
        # the peers' connections hold first, so the failure names the dead rank
        for member in self.gangs.members(failure.trial):
            peer = self.workers.get(member.worker) if member.worker else None
            if member is not failure.trial and not member.done and peer is not None \
                    and not peer.lost and not peer.conn.closed:
                self.hub.read(peer.conn, self._running)
        deadline = self.gangs.member_error(failure, time.monotonic())
        if deadline is not None:  # ... and give a dying peer's connection a moment
            worker.abort_deadline = deadline + self.settings.abort_timeout

    def _rendezvous(self, worker: WorkerState, trial: Optional[Trial],
                    msg: Dict[str, Any]) -> None:
        key = str(msg.get("key"))
        if trial is None or self.gangs is None or gang_of(trial) is None:
            self._send(worker, {"type": "rendezvous", "trial": msg.get("trial"), "key": key,
                                "error": "this trial is not part of a gang"})
            return
        values = self.gangs.meet(trial, key, msg.get("value"), time.monotonic())
        if values is None:
            return
        for member in self.gangs.members(trial):
            peer = self.workers.get(member.worker) if member.worker else None
            if peer is not None and not peer.lost and peer.trial is member:
                self._send(peer, {"type": "rendezvous", "trial": member.trial_id, "key": key,
                                  "values": values})

    def _gang_failed(self, failure: Failure) -> None:
        """One member failed: end every member, abort every member's worker, and let the
        optimizer decide whether the run goes on."""
        verdict = self.gangs.failure(failure)
        for outcome in verdict.outcomes:
            self._mark_failed(*outcome, counted=False)
        deadline = time.monotonic() + self.settings.abort_timeout
        for member in verdict.members:
            worker = self.workers.get(member.worker) if member.worker else None
            if worker is None or worker.lost:
                continue
            if worker.trial is member:
                worker.trial = None
            if worker in self.idle:
                self.idle.remove(worker)
            worker.abort_deadline = min(worker.abort_deadline or float("inf"), deadline)
            self._send(worker, {"type": "abort"})
        self.record.failures += 1
        message = self.optimizer.gang_failed(verdict.members, verdict.message) \
            if hasattr(self.optimizer, "gang_failed") else verdict.message
        if message and not self.done:
            error_type = failure.error_type
            self._fail(message, error_type if is_maggy_error(error_type)
                       else "DistributedError")

    # -- losing workers -----------------------------------------------------------------
    def _lose(self, worker: WorkerState, reason: str) -> None:
        """Give up on ``worker``: its queued trial goes back, its running trial is
        retried (up to ``max_retries``), failed, or fails its gang."""
        worker.lost = True
        if not worker.conn.closed:
            self.hub.close(worker.conn)
        self.events.emit("worker_lost", worker=worker.id, reason=reason)
        self.assigner.unqueue(worker)
        trial, worker.trial = worker.trial, None
        if trial is not None and not self.done:
            if self.gangs is not None and gang_of(trial) is not None:
                self._gang_failed(Failure(trial, f"its worker {worker.id} was lost: {reason}",
                                          "WorkerLost", None))
            elif self._stopping:
                self._mark_failed(trial, f"worker {worker.id} lost while stopping: {reason}",
                                  "WorkerLost", None)
            elif trial.retries < self.settings.max_retries:
                self.record.retried(trial, f"worker {worker.id} lost: {reason}")
            else:
                self._mark_failed(trial, f"worker lost {trial.retries + 1} times, last: "
                                  f"{reason} (max_retries={self.settings.max_retries})",
                                  "WorkerLost", None)
        self._dispatch()

    # -- timers -------------------------------------------------------------------------
    def _check_workers(self) -> None:
        """Lose workers silent for ``hb_timeout`` while running a trial and workers still
        connected ``abort_timeout`` after an abort (the backend kills them); fail gangs
        whose time is up (see :meth:`GangPolicy.due`)."""
        now, limit = time.monotonic(), self.settings.hb_timeout
        for worker in list(self.workers.values()):
            if not worker.lost and worker.trial is not None \
                    and now - worker.last_seen > limit:
                self._lose(worker, f"no heartbeat for {limit:g} s")
        if self.gangs is not None and self.gangs.has_deadlines:
            for failure in self.gangs.due(now):
                if not failure.trial.done and not self.done:
                    self._gang_failed(failure)
        for worker in list(self.workers.values()):
            if worker.abort_deadline is not None and not worker.lost \
                    and now > worker.abort_deadline:
                self._lose(worker, f"still connected {self.settings.abort_timeout:g} s after "
                           "being aborted")

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
        self.record.early_stopped(trial)
        worker = self.workers.get(trial.worker)
        if worker is not None and not worker.lost:
            self._send(worker, {"type": "stop", "trial": trial.trial_id})

    # -- ending -------------------------------------------------------------------------
    def _begin_stop(self, state: str, reason: str) -> None:
        if self.done or self._stopping:
            return
        self._stopping = True
        self.queue.close()
        self._stop_state, self._stop_reason = state, reason
        self.events.emit("stop_requested", reason=reason)
        for worker in self.workers.values():
            if worker.next is not None and not worker.lost:
                self.assigner.unqueue(worker, revoke=True)
            if worker.trial is not None and not worker.trial.early_stop:
                self._send(worker, {"type": "stop", "trial": worker.trial.trial_id})
        self.add_periodic(self.settings.stop_grace, lambda: self._finish(state, reason))
        self._dispatch()

    def _fail(self, message: str, error_type: str = "ExperimentFailed") -> None:
        self._finish("failed", message, error_type=error_type)  # once: a no-op when done

    def _finish(self, state: str, error: Optional[str],
                error_type: Optional[str] = None) -> None:
        if self.done:
            return
        self.state, self.error, self.error_type = state, error, error_type
        self.queue.close()
        for worker in self.workers.values():
            if not worker.lost:
                self.hub.send_now(worker.conn, {"type": "shutdown"})
        if state in ("finished", "stopped"):
            self.optimizer.finalize_experiment(list(self.trials.values()))
        best = summary.best_summary(self.record.best_trial(self.settings.direction))
        self.events.emit("run_finished", state=state, best=best, error=error,
                         counts=summary.counts(self.trials.values(), self.rejected))
        self.set_done()
