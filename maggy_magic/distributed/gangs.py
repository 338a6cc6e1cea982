"""Gang scheduling: the bookkeeping of trials that must run together (the ranks of one
data-parallel training run).

:class:`GangPolicy` decides; the driver acts. The driver asks it which trials to start
(:meth:`~GangPolicy.next_gang`), and tells it what happened: a gang started, a member sent
a rendezvous value, a member reported an error, a member's worker was lost (the driver
then asks for the :class:`GangFailure` to carry out). Timers are the driver's: it asks
:meth:`~GangPolicy.due` for the failures whose time has come. The policy sees only
:class:`~maggy_magic.trial.Trial` objects (gang and rank in ``trial.info_dict``) and the
clock; it holds no connection, sends nothing and never reads the driver's state. Stdlib
only, driver loop thread only. The wire messages are described in
:mod:`maggy_magic.driver`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..trial import Trial

#: Seconds a gang member's error waits for news of a peer's death (the likely cause of a
#: broken collective) before the gang fails in that member's name.
GANG_SETTLE = 0.5


class Failure(NamedTuple):
    """A gang member's end: the trial, its error message, error type and traceback."""

    trial: Trial
    error: str
    error_type: str
    traceback: Optional[str]


class GangFailure(NamedTuple):
    """What to do when a gang fails: end each of ``outcomes`` as failed (in order, not
    counted against ``max_failures`` one by one), abort every worker of ``members``, and
    let the optimizer judge ``message`` (the run's failure if it gives up)."""

    members: List[Trial]
    outcomes: List[Failure]
    message: str


def gang_of(trial: Trial) -> Any:
    """The gang ``trial`` belongs to, or None for an ordinary trial."""
    return trial.info_dict.get("gang")


def rank_of(trial: Trial) -> int:
    return int(trial.info_dict.get("rank", 0))


class GangPolicy:
    """Starts gangs of ``size`` trials whole, meets their rendezvous, and fails them as
    one (see the module docstring for who does what)."""

    def __init__(self, size: int, rendezvous_timeout: float, settle: float = GANG_SETTLE):
        self.size = size
        self.rendezvous_timeout = rendezvous_timeout
        self.settle = settle
        self._gangs: Dict[Any, List[Trial]] = {}
        #: (gang, key) → [deadline, {rank: value}] of rendezvous under way.
        self._meetings: Dict[Tuple[Any, str], list] = {}
        #: gang → (deadline, the member's failure) waiting out ``settle``.
        self._settling: Dict[Any, Tuple[float, Failure]] = {}

    # -- starting ---------------------------------------------------------------------
    def next_gang(self, idle: int,
                  take: Callable[[], Optional[Trial]]) -> Tuple[List[Trial], List[Trial]]:
        """With ``idle`` free workers, ``(gang to start now, trials to put back)``:
        ``size`` trials from ``take()`` when that many workers are free and ``take``
        has them, else nothing to start and whatever was taken to go back in order."""
        if idle < self.size:
            return [], []
        gang: List[Trial] = []
        while len(gang) < self.size:
            trial = take()
            if trial is None:
                return [], gang
            gang.append(trial)
        return gang, []

    def started(self, gang: List[Trial]) -> None:
        """The driver started ``gang`` (member i on the i-th free worker)."""
        for trial in gang:
            self._gangs.setdefault(gang_of(trial), [])
            if trial not in self._gangs[gang_of(trial)]:
                self._gangs[gang_of(trial)].append(trial)

    def members(self, trial: Trial) -> List[Trial]:
        """Every trial of ``trial``'s gang, ``trial`` included."""
        return list(self._gangs.get(gang_of(trial), [trial]))

    # -- rendezvous -------------------------------------------------------------------
    def meet(self, trial: Trial, key: str, value: Any, now: float) -> Optional[List[Any]]:
        """``trial`` sent ``value`` for rendezvous ``key``. Once every member has, the
        values in rank order (the driver sends them to every member still running);
        None while some are missing."""
        gang = gang_of(trial)
        meeting = self._meetings.setdefault((gang, key),
                                            [now + self.rendezvous_timeout, {}])
        meeting[1][rank_of(trial)] = value
        members = self.members(trial)
        if len(meeting[1]) < len(members):
            return None
        del self._meetings[(gang, key)]
        return [meeting[1].get(rank) for rank in range(len(members))]

    # -- failing ----------------------------------------------------------------------
    def member_error(self, failure: Failure, now: float) -> Optional[float]:
        """A member reported an error. The gang fails once its peers had ``settle``
        seconds to tell their own news (a rank often fails because a peer died and
        broke a collective; the failure should name the dead rank). Returns the moment
        the gang fails unless other news comes first, or None if the gang already waits
        (or the member has already ended)."""
        gang = gang_of(failure.trial)
        if failure.trial.done or gang in self._settling:
            return None
        self._settling[gang] = (now + self.settle, failure)
        return now + self.settle

    def failure(self, failure: Failure) -> GangFailure:
        """The gang of ``failure.trial`` fails because of it (an error, its worker lost
        or a rendezvous missed): what ends how. Forgets the gang's pending rendezvous and
        its waiting error."""
        trial = failure.trial
        gang = gang_of(trial)
        members = self.members(trial)
        rank = trial.info_dict.get("rank")
        message = f"rank {rank} failed: {failure.error}"
        settling = self._settling.pop(gang, None)
        outcomes = [Failure(trial, message, failure.error_type, failure.traceback)]
        waiting = settling[1] if settling is not None else None
        for member in members:
            if member is trial or member.done:
                continue
            if waiting is not None and member is waiting.trial:
                outcomes.append(Failure(member, f"{waiting.error} (after rank {rank} failed)",
                                        waiting.error_type, waiting.traceback))
            else:
                outcomes.append(Failure(member, f"aborted because rank {rank} failed",
                                        "GangAborted", None))
        for meeting in [k for k in self._meetings if k[0] == gang]:
            del self._meetings[meeting]
        return GangFailure(members, outcomes, message)

    # -- timers -----------------------------------------------------------------------
    @property
    def waiting(self) -> bool:
        """A member's error is waiting out ``settle`` (the run is not over yet)."""
        return bool(self._settling)

    @property
    def has_deadlines(self) -> bool:
        return bool(self._settling or self._meetings)

    def due(self, now: float) -> List[Failure]:
        """The failures whose time has come: errors that waited out ``settle``, and the
        first missing member of each rendezvous past ``rendezvous_timeout``. The driver
        carries out each through :meth:`failure` (skipping trials that ended meanwhile)."""
        found: List[Failure] = []
        for deadline, failure in list(self._settling.values()):
            if now >= deadline and not failure.trial.done:
                found.append(failure)
        for (gang, key), (deadline, arrived) in list(self._meetings.items()):
            if now < deadline:
                continue
            members = self._gangs.get(gang, [])
            missing = [t for t in members if rank_of(t) not in arrived and not t.done]
            if missing:
                found.append(Failure(
                    missing[0], f"did not reach rendezvous {key!r} within "
                    f"{self.rendezvous_timeout:g} s (rendezvous_timeout)",
                    "RendezvousError", None))
            else:
                del self._meetings[(gang, key)]
        return found
