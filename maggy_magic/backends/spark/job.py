"""The one Spark job of a run's worker tasks, however it is submitted: ``WorkerJob``.

Both kinds of session launch the workers the same way around one blocking call that
returns the tasks' summaries (an RDD ``collect`` in a job group on a classic session, a
``mapInArrow`` ``collect`` under a tag on a Spark Connect one). :class:`WorkerJob` runs that
call in a background thread, watches that a worker registers in time (and, where the
backend can hear of it, that no task found the driver unreachable), turns the job's end
into the run's one-line error, and stops it: wait for the tasks to leave, then cancel.
:class:`JobBackend` is what both backends do through it (stop, task summaries, a worker
registering).

Thread safety: ``start``/``stop`` come from the experiment's thread, ``registered`` from
the driver's, the job and the watcher run in their own threads; state is under a lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..base import Backend, Launch
from .failures import spark_error
from .task import REFUSED, UNREACHABLE

#: After cancelling, how long ``stop`` waits for Spark to report the job ended.
CANCEL_WAIT = 30.0
#: How often the start watcher looks for tasks that could not reach the driver.
WATCH_INTERVAL = 0.5


def unreachable_message(launch: Launch, reasons: List[str]) -> str:
    """One line: tasks could not reach the driver, the address tried, what to set."""
    return (f"{len(reasons)} Spark worker task(s) could not reach the driver at "
            f"{launch.host}:{launch.port} ({reasons[0]}); set driver_host (--driver-host) "
            "or spark.driver.host to an address of this machine that the executors can "
            "reach (and driver_bind (--driver-bind) to where it listens, e.g. 0.0.0.0)")


def end_message(launch: Launch, results: List[Dict[str, Any]]) -> str:
    """Why the run fails when the job of its workers ended before the experiment did."""
    unreachable = [r["reason"] for r in results if r.get("exit") == UNREACHABLE]
    refused = [r for r in results if r.get("exit") == REFUSED]
    if unreachable:
        return unreachable_message(launch, unreachable)
    if refused:
        return (f"{len(refused)} Spark worker task(s) found nothing listening at the "
                f"driver's address {launch.host}:{launch.port}; set driver_host "
                "(--driver-host) or spark.driver.host to this machine's address as the "
                "executors see it")
    return ("every Spark worker task ended before the experiment did (the driver dropped "
            "their connections; see the worker_lost events)")


class WorkerJob:
    """One run's worker job.

    ``collect()`` submits the job and returns the task summaries; ``cancel()`` cancels it
    from another thread; ``slots()`` says the cluster's task slots now (a count, for messages);
    ``reasons()`` returns what tasks that could not reach the driver said so far;
    ``make_thread(target, name)`` makes the job's thread (pyspark's InheritableThread on a
    classic session, so that the job group reaches the JVM thread).
    """

    def __init__(self, launch: Launch, *, collect: Callable[[], List[Dict[str, Any]]],
                 cancel: Callable[[], None], start_timeout: float,
                 slots: Callable[[], Any], reasons: Callable[[], List[str]] = list,
                 make_thread: Callable[..., threading.Thread] = threading.Thread,
                 what: str = "Spark job"):
        self.launch = launch
        self._collect, self._cancel = collect, cancel
        self.start_timeout = start_timeout
        self._slots, self._reasons = slots, reasons
        self._what = what
        #: The task summaries of the finished job (worker, attempt, pid, trials, exit).
        self.results: List[Dict[str, Any]] = []
        self.done = threading.Event()
        self.first_worker = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = make_thread(target=self._run, name="maggy-spark-job", daemon=True)

    def start(self) -> None:
        self._thread.start()
        threading.Thread(target=self._watch_start, name="maggy-spark-start",
                         daemon=True).start()

    @property
    def stopping(self) -> bool:
        with self._lock:
            return self._stopping

    def registered(self) -> None:
        """A worker registered with the driver: the job has started."""
        self.first_worker.set()

    def stop(self, grace: float) -> None:
        """Wait up to ``grace`` s for the tasks to end (workers leave on the driver's
        shutdown), then cancel; returns once the job is over (or ``CANCEL_WAIT`` s)."""
        with self._lock:
            self._stopping = True
        self.first_worker.set()  # releases the start watcher
        if not self._thread.is_alive() and not self.done.is_set():
            return  # never started
        if not self.done.wait(grace):
            self._cancel()
            self.done.wait(CANCEL_WAIT)
        self._thread.join(CANCEL_WAIT)

    # -- the job's and the watcher's threads -----------------------------------------------
    def _run(self) -> None:
        error: Optional[BaseException] = None
        try:
            if self.stopping:  # stopped before the job went out: nothing to run
                return
            self.results = list(self._collect())
        except BaseException as exc:  # noqa: BLE001 - reported to the driver below
            error = exc
        finally:
            self.done.set()
        if self.stopping:
            return
        if error is not None:
            self.launch.fail(f"the {self._what} running the workers failed: "
                             f"{spark_error(error)}")
        else:
            self.launch.fail(end_message(self.launch, self.results))

    def _watch_start(self) -> None:
        """Fail the run when no worker registered within ``start_timeout``, or at once
        when a task could not reach the driver before any worker registered."""
        deadline = time.monotonic() + self.start_timeout
        reasons: List[str] = []
        while not self.first_worker.wait(WATCH_INTERVAL):
            reasons = list(self._reasons())
            if reasons or time.monotonic() > deadline:
                break
        else:
            return
        if self.stopping or self.first_worker.is_set() or self.done.is_set():
            return
        if reasons:
            self._cancel()  # the other tasks would only wait out their attempts too
            self.launch.fail(unreachable_message(self.launch, reasons))
            return
        self.launch.fail(f"no Spark worker task started within {self.start_timeout:g} s "
                         f"(the cluster has {self._slots()} task slot(s) now); check that "
                         "executors are running and free, or raise start_timeout")


class JobBackend(Backend):
    """What both Spark backends do through their :class:`WorkerJob` (``self._job``, set
    by ``start``): stop it, count a registered worker, give its task summaries."""

    _job: Optional[WorkerJob] = None

    def stop(self, grace: float = 5.0) -> None:
        """Wait up to ``grace`` s for the tasks to end (workers leave on the driver's
        shutdown), then cancel the job; returns once it is over. Cancelled tasks' Python
        workers are killed by Spark within ``spark.python.task.killTimeout`` (2 s)."""
        if self._job is not None:
            self._job.stop(grace)

    @property
    def task_results(self) -> List[Dict[str, Any]]:
        """Per-task summaries of the finished job (worker, attempt, pid, trials, exit)."""
        return self._job.results if self._job is not None else []

    def worker_joined(self, worker_id: str, host: str, pid: int) -> None:
        if self._job is not None:
            self._job.registered()
