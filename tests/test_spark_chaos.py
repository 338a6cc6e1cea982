"""Chaos on a real Spark ``local-cluster``: executors are killed with ``kill -9`` again and
again while 200 short trials run, and the journal must account for every trial once.

The killed processes are this session's own: an executor JVM whose command line names
this application's id, or a Python worker (a fork of ``pyspark.daemon``) below one. Which
trials are running when a kill comes is fixed in advance: a target trial holds (reports
metrics, never returns) while its hold file exists, so the kill always lands in the
middle of that trial, on whichever worker runs it; the file goes once the trial is
retried. Kills alternate between the JVM and the Python worker, and one comes only while
both workers are registered (so Spark always has a live executor).
"""

import collections
import os
import signal
import time

import pytest
from conftest import parent_pid

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.store import read_journal
from maggy_magic.trial import Trial

pytestmark = pytest.mark.slow

MASTER = "local-cluster[2,1,1024]"
TRIALS = 200
#: Target trial → how many times the worker running it is killed mid-trial. With
#: max_retries=1 the last one is lost twice and must end FAILED (WorkerLost).
TARGETS = {"0015": 1, "0045": 1, "0075": 1, "0105": 1, "0135": 2}
KILLS = sum(TARGETS.values())
EXHAUSTED = "0135"
#: Hang guard, not a speed bound: the longest a target holds waiting for its kill.
HANG_GUARD = 120.0


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from maggy_magic.backends.spark import SparkBackend

    backend = SparkBackend(master=MASTER)
    assert backend.sc.getConf().get("spark.task.maxFailures") == "8"
    assert KILLS < 8  # every kill could hit the same task: Spark must not give up on it
    yield backend.session
    backend.session.stop()


# -- this session's processes ------------------------------------------------------------
def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().split(b"\0")


def executor_of(pid, app_id):
    """The executor JVM of this application that ``pid`` (a Python worker) runs under;
    fails if ``pid`` is anything else."""
    worker_args = cmdline(pid)
    assert any(b"pyspark.daemon" in arg or b"pyspark/daemon" in arg for arg in worker_args), \
        worker_args
    while pid > 1:
        args = cmdline(pid)
        if b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in args:
            assert args[args.index(b"--app-id") + 1].decode() == app_id, args
            return pid
        pid = parent_pid(pid)
    raise AssertionError("not a process of this session's executors")


def make_trial(hold_dir, done_dir):
    """The training function: 50-200 ms of metrics; a target holds while its file exists.
    Each call that returns leaves a mark, so a trial run twice to completion shows."""

    def chaos_trial(x, reporter):
        trial = reporter.get_trial_id()
        hold, step = os.path.join(hold_dir, trial), 0
        deadline = time.time() + HANG_GUARD
        while os.path.exists(hold) and time.time() < deadline:
            reporter.broadcast(x, step)
            step += 1
            time.sleep(0.05)
        end = time.time() + 0.05 + 0.15 * x
        while time.time() < end:
            reporter.broadcast(x, step)
            step += 1
            time.sleep(0.025)
        # a copy the driver took back (revoke) stops at a broadcast: one more before the mark
        reporter.broadcast(x, step)
        open(os.path.join(done_dir, f"{trial}-{os.getpid()}-{time.time_ns()}"), "w").close()
        return x

    return chaos_trial


class Killer:
    """An event listener (the driver's thread) that kills the worker running a target
    trial, at most ``KILLS`` times, one at a time."""

    def __init__(self, app_id, hold_dir):
        self.app_id, self.hold_dir = app_id, hold_dir
        self.left = dict(TARGETS)
        self.pids, self.live, self.running = {}, set(), {}
        self.kills = []             # (trial, worker, what, pid, monotonic time)
        self.waiting_for = None     # the last victim, until it is lost and back
        self.lost_since_kill = False
        self.errors = []

    def __call__(self, event):
        kind = event["type"]
        if kind == "worker_joined":
            self.pids[event["worker"]] = event["pid"]
            self.live.add(event["worker"])
            if event["worker"] == self.waiting_for and self.lost_since_kill:
                self.waiting_for = None
        elif kind == "worker_lost":
            self.live.discard(event["worker"])
            if event["worker"] == self.waiting_for:
                self.lost_since_kill = True
        elif kind == "trial_started":
            self.running[event["trial"]] = event["worker"]
        elif kind in ("trial_retried", "trial_failed") and event["trial"] in TARGETS:
            if self.left[event["trial"]] == 0:
                os.unlink(os.path.join(self.hold_dir, event["trial"]))
        elif kind == "metric" and self.left.get(event["trial"]) and len(self.live) == 2 \
                and self.waiting_for is None:
            try:
                self.kill(event["trial"])
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                self.left[event["trial"]] = 0

    def kill(self, trial):
        worker = self.running[trial]
        python = self.pids[worker]
        jvm = executor_of(python, self.app_id)
        what, pid = ("jvm", jvm) if len(self.kills) % 2 == 0 else ("python", python)
        self.left[trial] -= 1
        self.waiting_for, self.lost_since_kill = worker, False
        self.kills.append((trial, worker, what, pid, time.monotonic()))
        os.kill(pid, signal.SIGKILL)


def test_kill_9_of_executors_during_200_trials_loses_and_repeats_nothing(spark, tmp_path):
    hold_dir, done_dir = tmp_path / "hold", tmp_path / "done"
    hold_dir.mkdir()
    done_dir.mkdir()
    for trial in TARGETS:
        (hold_dir / trial).touch()
    killer = Killer(spark.sparkContext.applicationId, str(hold_dir))
    config = HyperparameterOptConfig(
        num_trials=TRIALS, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])),
        es_policy="none", workers=2, seed=11, backend="spark", hb_interval=0.1,
        max_retries=1, max_failures=1, name="spark-chaos")
    started = time.monotonic()
    result = experiment.lagom(make_trial(str(hold_dir), str(done_dir)), config,
                              listeners=[killer])
    elapsed = time.monotonic() - started
    assert not killer.errors, killer.errors
    assert [k[0] for k in killer.kills] == [t for t, n in TARGETS.items() for _ in range(n)]
    assert {k[2] for k in killer.kills} == {"jvm", "python"}
    assert killer.kills[-1][4] - killer.kills[0][4] < elapsed  # all within the run
    assert result.state == "finished" and result.error is None, result.error

    events = list(read_journal(result.run_dir))
    assert events[-1]["type"] == "run_finished" and events[-1]["state"] == "finished"
    started_ids = {e["trial"] for e in events if e["type"] == "trial_started"}
    finished = [e for e in events if e["type"] == "trial_finished"]
    failed = [e for e in events if e["type"] == "trial_failed"]
    ended = collections.Counter(e["trial"] for e in finished + failed)
    # every trial accounted for, once
    assert len(ended) == TRIALS and set(ended) == started_ids
    assert set(ended.values()) == {1}, [t for t, n in ended.items() if n > 1]
    # nothing ran twice to completion: no trial, no set of parameters, finished twice
    params = {e["trial"]: e["params"] for e in events if e["type"] == "trial_started"}
    done_params = [tuple(sorted(params[e["trial"]].items())) for e in finished]
    assert len(done_params) == len(set(done_params)) == TRIALS - 1
    assert {e["state"] for e in finished} == {Trial.FINISHED}
    # the trial lost as many times as it may be retried, and once more, failed; only it
    assert [e["trial"] for e in failed] == [EXHAUSTED]
    assert failed[0]["error_type"] == "WorkerLost"
    assert "worker lost 2 times" in failed[0]["error"] and "max_retries=1" in failed[0]["error"]
    # each kill but the last lost one worker and retried the trial it ran
    retried = [e for e in events if e["type"] == "trial_retried"]
    assert [e["trial"] for e in retried] == [k[0] for k in killer.kills[:-1]]
    assert all(e["retries"] == 1 for e in retried)
    lost = [e["worker"] for e in events if e["type"] == "worker_lost"]
    assert lost == [k[1] for k in killer.kills]
    attempts = collections.Counter((e["trial"], e["attempt"]) for e in events
                                   if e["type"] == "trial_started")
    assert sum(attempts.values()) == TRIALS + len(retried)
    assert all(attempts[(e["trial"], 1)] == 1 for e in retried)
    assert result.num_finished == TRIALS - 1 and result.num_failed == 1
    assert len(result.trial_records) == TRIALS
    # on the executors too: every finished trial's function returned once, the failed
    # one's never
    marks = collections.Counter(name.split("-")[0] for name in os.listdir(done_dir))
    assert set(marks.values()) == {1} and len(marks) == TRIALS - 1, \
        [t for t, n in marks.items() if n > 1]
    assert EXHAUSTED not in marks
