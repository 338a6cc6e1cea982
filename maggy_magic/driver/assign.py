"""Which idle worker runs which trial (ordinary trials; gangs are
:class:`~maggy_magic.distributed.gangs.GangPolicy`'s).

:class:`Assigner` gives waiting trials to idle workers one at a time, and keeps the
queue-ahead / take-back policy: optimizers that do not learn from results
(``prefetch = True``: random and grid search) get one more trial queued on each busy
worker, so the worker goes from one trial to the next without waiting for the driver;
at the tail of a run idle workers take queued trials back from busy ones (the busy
worker is told ``revoke``); with ``release``, idle workers no trial can reach any more
are told to leave (:meth:`Assigner.release_idle`). It records nothing itself:
``begin(trial, worker)`` is the driver's record that a trial started,
``send(worker, message)`` its way to a worker. Driver loop thread only.
"""

from __future__ import annotations

from typing import Any, Callable, Deque, Dict, Iterable, Optional

from ..trial import Trial
from .settings import WorkerState
from .trial_queue import TrialQueue


def trial_message(trial: Trial) -> Dict[str, Any]:
    """The ``trial`` message that hands ``trial`` to a worker."""
    return {"type": "trial", "trial": trial.trial_id, "params": trial.params,
            "budget": trial.budget, "info": trial.info_dict}


class Assigner:
    """Moves trials from ``queue`` to the ``idle`` workers (see the module docstring)."""

    def __init__(self, queue: TrialQueue, idle: Deque[WorkerState], *, queue_ahead: bool,
                 begin: Callable[[Trial, WorkerState], None],
                 send: Callable[[WorkerState, Dict[str, Any]], None], release: bool = False):
        self.queue, self.idle = queue, idle
        self.queue_ahead, self.release = queue_ahead, release
        self.begin, self.send = begin, send

    def pop_idle(self) -> Optional[WorkerState]:
        """The longest-idle worker that is still connected (lost ones are dropped)."""
        while self.idle:
            worker = self.idle.popleft()
            if not worker.lost:
                return worker
        return None

    def start(self, trial: Trial, worker: WorkerState) -> None:
        """``worker`` runs ``trial`` from now on."""
        worker.revoked.discard(trial.trial_id)
        self.begin(trial, worker)
        self.send(worker, trial_message(trial))

    def fill(self) -> None:
        """Give each idle worker a waiting trial (and queue one more behind it)."""
        while self.idle:
            trial = self.queue.next()
            if trial is None:
                return
            worker = self.pop_idle()
            if worker is None:
                self.queue.waiting.appendleft(trial)
                return
            self.start(trial, worker)
            self.add_queued(worker)

    def add_queued(self, worker: WorkerState) -> None:
        """Queue the following trial on busy ``worker`` if the policy allows it."""
        if not self.queue_ahead or worker.next is not None or self.queue.closed:
            return
        trial = self.queue.next()
        if trial is not None:
            trial.worker = worker.id
            worker.next = trial
            worker.revoked.discard(trial.trial_id)
            self.send(worker, trial_message(trial))

    def take_back_queued(self, workers: Iterable[WorkerState]) -> None:
        """Idle workers take trials still queued on busy ones (the tail of a run).

        The busy worker is told to drop it (``revoke``); if it had already started it,
        it stops that copy and its report is ignored, so the trial counts once."""
        for victim in list(workers):
            if not self.idle or self.queue.closed:
                return
            if victim.next is None or victim.lost:
                continue
            trial, victim.next = victim.next, None
            self.revoke(victim, trial)
            worker = self.pop_idle()
            if worker is None:
                self.queue.put_back(trial)
                return
            self.start(trial, worker)

    def release_idle(self) -> None:
        """With ``release``: once the optimizer is done (not merely IDLE) and no trial
        waits, an idle worker can get no trial any more (one queued on a busy worker has
        been taken back first, :meth:`take_back_queued`). Each is told ``shutdown`` and
        marked gone, so its connection closing is no loss; its process ends while the
        last trials run, instead of with all the others at the end of the run. A trial
        retried later (its worker was lost) waits for a busy worker or the lost one's
        replacement."""
        if not self.release or not self.queue.exhausted or self.queue.waiting \
                or self.queue.closed:
            return
        while self.idle:
            worker = self.pop_idle()
            if worker is None:
                return
            worker.lost = True
            self.send(worker, {"type": "shutdown"})

    def revoke(self, worker: WorkerState, trial: Trial) -> None:
        """Tell ``worker`` to drop ``trial``, and remember that it did (what it prints
        under that trial from now on is of a copy that does not count)."""
        worker.revoked.add(trial.trial_id)
        self.send(worker, {"type": "revoke", "trial": trial.trial_id})

    def unqueue(self, worker: WorkerState, revoke: bool = False) -> None:
        """Take back the trial queued on ``worker`` (it never started); with ``revoke``
        the worker is told to drop it."""
        queued, worker.next = worker.next, None
        if queued is not None:
            if revoke:
                self.revoke(worker, queued)
            self.queue.put_back(queued)
