"""The tail of a run: an idle worker takes a trial queued on a busy one (``revoke``).

The busy worker may have started its copy before the revoke reached it. That copy's
result is ignored (the driver's loop drops messages about a trial a worker no longer
owns), and what it printed must not land in the trial's log either: the real driver parts
(:class:`Assigner`, :class:`RunRecord`, :class:`EventStream`) put it in the worker's own
log, marked. A race in a real run is timing; here the order is forced.
"""

import collections

from maggy_magic.driver.assign import Assigner
from maggy_magic.driver.record import RunRecord
from maggy_magic.driver.settings import WorkerState
from maggy_magic.driver.trial_queue import TrialQueue
from maggy_magic.events import EventStream
from maggy_magic.trial import Trial


def _parts():
    trials = {}
    for number, x in enumerate((1, 2, 3)):
        trial = Trial({"x": x})
        trial.trial_id = f"{number:04d}"
        trials[trial.trial_id] = trial
    queue = TrialQueue(None, trials, list(trials.values()))
    events, sent = [], []
    stream = EventStream("run")
    stream.add(events.append)
    record = RunRecord(trials, stream, queue)
    idle = collections.deque()
    assigner = Assigner(queue, idle, queue_ahead=True,
                        begin=lambda trial, worker: record.started(trial, worker.id),
                        send=lambda worker, message: sent.append((worker.id, message)))
    busy, free = WorkerState("busy", None, "h", 1), WorkerState("free", None, "h", 2)
    return trials, record, assigner, idle, busy, free, events, sent


def _logs(events):
    return [(e["worker"], e["trial"], line) for e in events if e["type"] == "log"
            for line in e["lines"]]


def test_lines_of_a_copy_taken_back_go_to_the_workers_log_marked():
    trials, record, assigner, idle, busy, free, events, sent = _parts()
    idle.append(busy)
    assigner.fill()                       # busy runs 0000, with 0001 queued behind it
    assert busy.trial is None and busy.next is trials["0001"]
    idle.append(free)
    assigner.take_back_queued([busy])     # free takes 0001; busy is told to drop it
    assert ("busy", {"type": "revoke", "trial": "0001"}) in sent
    assert trials["0001"].worker == "free" and busy.next is None
    # busy had already started its copy of 0001: its lines arrive after the revoke
    record.absorb("busy", None, {"logs": [["0000", "first done"], ["0001", "copy says"]]},
                  busy.revoked)
    record.absorb("free", trials["0001"], {"logs": [["0001", "real says"]]}, free.revoked)
    assert _logs(events) == [
        ("busy", "0000", "first done"),
        ("busy", None, "[a copy of trial 0001 this worker was told to drop] copy says"),
        ("free", "0001", "real says")]


def test_a_trial_handed_back_to_the_same_worker_logs_as_its_own_again():
    trials, record, assigner, idle, busy, free, events, sent = _parts()
    idle.append(busy)
    assigner.fill()
    assigner.unqueue(busy, revoke=True)   # the run's end takes 0001 back from busy
    assert "0001" in busy.revoked
    idle.append(busy)
    assigner.fill()                       # later, busy gets 0001 once more
    assert trials["0001"].worker == "busy"
    record.absorb("busy", trials["0001"], {"logs": [["0001", "now it counts"]]},
                  busy.revoked)
    assert _logs(events) == [("busy", "0001", "now it counts")]
