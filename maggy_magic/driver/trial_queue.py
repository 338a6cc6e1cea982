"""The trials waiting for a worker, and the optimizer that makes new ones.

:class:`TrialQueue` hands the driver the next trial to run: a trial put back first (one
taken back from a worker, or retried after its worker died), else the optimizer's next
suggestion. It numbers new trials and adds them to the run's trial table. Driver loop
thread only.
"""

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, Iterable, Optional

from ..trial import Trial


class TrialQueue:
    """Trials to run, in order; ``trials`` is the run's table (new trials are added)."""

    def __init__(self, optimizer: Any, trials: Dict[str, Trial], waiting: Iterable[Trial]):
        self.optimizer = optimizer
        self.trials = trials
        self.waiting: Deque[Trial] = collections.deque(waiting)
        for trial in self.waiting:
            trial.status, trial.worker = Trial.PENDING, None
        self._next_id = 1 + max((int(i) for i in trials if i.isdigit()), default=-1)
        #: The optimizer said it has nothing more to suggest.
        self.exhausted = False
        #: The trial that ended last, told to the optimizer with the next suggestion.
        self.last_ended: Optional[Trial] = None
        #: No trial starts any more (the run is stopping); see :meth:`close`.
        self.closed = False

    def __len__(self) -> int:
        return len(self.waiting)

    def close(self) -> None:
        """The run is stopping: :meth:`next` answers None from now on."""
        self.closed = True

    def next(self) -> Optional[Trial]:
        """The next trial to start, or None (the queue is closed, or nothing waits and
        the optimizer is done or IDLE until a trial ends)."""
        if self.closed:
            return None
        if self.waiting:
            return self.waiting.popleft()
        if self.exhausted:
            return None
        answer = self.optimizer.get_suggestion(self.last_ended)
        self.last_ended = None
        if answer is None:
            self.exhausted = True
            return None
        if isinstance(answer, str):  # IDLE: ask again once a trial ends
            return None
        return self._add(answer)

    def put_back(self, trial: Trial) -> None:
        """``trial`` did not start (or was taken back): it runs next, as pending."""
        trial.status, trial.worker = Trial.PENDING, None
        self.waiting.appendleft(trial)

    def retry(self, trial: Trial) -> None:
        """``trial`` runs again after the trials already waiting."""
        trial.status, trial.worker = Trial.PENDING, None
        self.waiting.append(trial)

    def unblock(self) -> bool:
        """While nothing runs, ask the optimizer once more (an IDLE optimizer would wait
        for a trial to end, which can no longer happen). True if a trial now waits;
        otherwise the optimizer is done for good."""
        answer = self.optimizer.get_suggestion(None)
        if answer is None or isinstance(answer, str):
            self.exhausted = True
            return False
        self.waiting.append(self._add(answer))
        return True

    def _add(self, answer: Any) -> Trial:
        trial = answer if isinstance(answer, Trial) else Trial(dict(answer))
        trial.trial_id = f"{self._next_id:04d}"
        self._next_id += 1
        self.trials[trial.trial_id] = trial
        return trial
