"""Gang scheduling for the driver: trials that must run together (the ranks of
data-parallel training).

:class:`GangScheduling` is a part of :class:`~maggy_magic.driver.Driver` kept in its own
module; its methods run on the driver's loop thread like every other driver method and
use the driver's state (``workers``, ``idle``, ``trials``, ``settings``, ``_meetings``,
``_settling``). The protocol is documented in :mod:`maggy_magic.driver`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .errors import is_maggy_error
from .trial import Trial

if TYPE_CHECKING:
    from .driver import WorkerState

#: Seconds a gang member's error waits for news of a peer's death (the likely cause of a
#: broken collective) before the gang fails in that member's name.
GANG_SETTLE = 0.5


class GangScheduling:
    """Start gangs whole, meet their rendezvous, and fail (abort) them as one."""

    def _member_failed(self, worker: "WorkerState", trial: Trial, msg: Dict[str, Any]) -> None:
        """A gang member reported an error: the gang fails once its peers had a moment to
        tell their own news (see :data:`GANG_SETTLE`)."""
        # a rank often fails because a peer died (its collective op broke): hear what
        # the peers' connections hold first, so the failure names the dead rank
        for member in self._gang_members(trial.info_dict["gang"]):
            peer = self.workers.get(member.worker) if member.worker else None
            if member is not trial and not member.done and peer is not None \
                    and not peer.lost and not peer.conn.closed:
                self._read(peer.conn)
        gang = trial.info_dict["gang"]
        if not trial.done and gang not in self._settling:
            # ... and give a dying peer's connection a moment to close
            now = time.monotonic()
            self._settling[gang] = [now + GANG_SETTLE, trial, str(msg.get("error")),
                                    msg.get("error_type") or "Exception",
                                    msg.get("traceback")]
            worker.abort_deadline = now + GANG_SETTLE + self.settings.abort_timeout

    def _dispatch_gangs(self) -> None:
        """Start whole gangs: N trials on N idle workers at once, member i on the i-th
        idle worker (ranks come from the trials' info, never from the workers)."""
        size = self.optimizer.gang_size
        while not self._done.is_set():
            live = [w for w in self.idle if not w.lost]
            if len(live) < size:
                return
            gang: List[Trial] = []
            while len(gang) < size:
                trial = self._next_trial()
                if trial is None:
                    break
                gang.append(trial)
            if len(gang) < size:
                self.queue.extendleft(reversed(gang))
                return
            for trial, worker in zip(gang, live):
                self.idle.remove(worker)
                self._begin(trial, worker)
                self._send_trial(trial, worker)

    def _gang_members(self, gang: Any) -> List[Trial]:
        return [t for t in self.trials.values() if t.info_dict.get("gang") == gang]

    def _rendezvous(self, worker: "WorkerState", trial: Optional[Trial],
                    msg: Dict[str, Any]) -> None:
        key = str(msg.get("key"))
        if trial is None or trial.info_dict.get("gang") is None:
            self._send(worker, {"type": "rendezvous", "trial": msg.get("trial"), "key": key,
                                "error": "this trial is not part of a gang"})
            return
        gang = trial.info_dict["gang"]
        meeting = self._meetings.setdefault(
            (gang, key), [time.monotonic() + self.settings.rendezvous_timeout, {}])
        meeting[1][int(trial.info_dict.get("rank", 0))] = msg.get("value")
        members = self._gang_members(gang)
        if len(meeting[1]) < len(members):
            return
        del self._meetings[(gang, key)]
        values = [meeting[1].get(rank) for rank in range(len(members))]
        for member in members:
            peer = self.workers.get(member.worker) if member.worker else None
            if peer is not None and not peer.lost and peer.trial is member:
                self._send(peer, {"type": "rendezvous", "trial": member.trial_id, "key": key,
                                  "values": values})

    def _gang_failed(self, trial: Trial, error: str, error_type: str,
                     tb: Optional[str]) -> None:
        """One member failed: end every member, abort every member's worker, and let the
        optimizer decide whether the run goes on."""
        gang = trial.info_dict.get("gang")
        members = self._gang_members(gang)
        rank = trial.info_dict.get("rank")
        message = f"rank {rank} failed: {error}"
        settling = self._settling.pop(gang, None)
        self._mark_failed(trial, message, error_type, tb, counted=False)
        for member in members:
            if settling is not None and member is settling[1] and not member.done:
                self._mark_failed(member, f"{settling[2]} (after rank {rank} failed)",
                                  settling[3], settling[4], counted=False)
            elif member is not trial and not member.done:
                self._mark_failed(member, f"aborted because rank {rank} failed",
                                  "GangAborted", None, counted=False)
        now = time.monotonic()
        for member in members:
            worker = self.workers.get(member.worker) if member.worker else None
            if worker is None or worker.lost:
                continue
            if worker.trial is member:
                worker.trial = None
            if worker in self.idle:
                self.idle.remove(worker)
            worker.abort_deadline = min(worker.abort_deadline or float("inf"),
                                        now + self.settings.abort_timeout)
            self._send(worker, {"type": "abort"})
        for meeting in [k for k in self._meetings if k[0] == gang]:
            del self._meetings[meeting]
        self.failures += 1
        verdict = self.optimizer.gang_failed(members, message) \
            if hasattr(self.optimizer, "gang_failed") else message
        if verdict and not self._done.is_set():
            self._fail(verdict, error_type if is_maggy_error(error_type)
                       else "DistributedError")

    def _check_gangs(self, now: float) -> None:
        """Fail gangs whose rendezvous ran out of time; give up on workers that ignored
        an abort (the backend kills them)."""
        for gang, (deadline, trial, error, error_type, tb) in list(self._settling.items()):
            if now >= deadline and gang in self._settling and not trial.done:
                self._gang_failed(trial, error, error_type, tb)
        for (gang, key), (deadline, arrived) in list(self._meetings.items()):
            if now < deadline or (gang, key) not in self._meetings:
                continue
            members = self._gang_members(gang)
            missing = [t for t in members if int(t.info_dict.get("rank", 0)) not in arrived
                       and not t.done]
            if missing:
                self._gang_failed(missing[0], f"did not reach rendezvous {key!r} within "
                                  f"{self.settings.rendezvous_timeout:g} s (rendezvous_timeout)",
                                  "RendezvousError", None)
            else:
                del self._meetings[(gang, key)]
        for worker in list(self.workers.values()):
            if worker.abort_deadline is not None and not worker.lost \
                    and now > worker.abort_deadline:
                self._lose(worker, f"still connected {self.settings.abort_timeout:g} s after "
                           "being aborted")
