"""``SparkBackend``: one long-running Spark task per worker, each running the worker loop.

``start`` submits one job of ``num_workers`` tasks from a background thread, under a job
group that ``stop`` and ``cancel`` cancel; task ``i`` is worker ``"i"`` (:mod:`.task`) and
connects back to the driver at ``spark.driver.host``. The training function travels in
the task closure, pickled by ``pyspark.cloudpickle``; executors that cannot import this
version of maggy_magic get it as a zip (:mod:`.ship`). The SparkContext comes from
:func:`.context.resolve_context`.

Fault tolerance is Spark's: when an executor dies, Spark re-runs its task, whose worker
registers again under the same id; the driver retries the trial the old one held. A
worker the driver gives up on (silent, hung) has its task attempt killed, and Spark runs
it again. When Spark gives up on the job (a task failed ``spark.task.maxFailures``
times), the run fails with Spark's reason in one line (:func:`.failures.spark_error`).

GPUs / CPUs per trial (``gpus_per_trial``, ``cpus_per_trial``) are Spark's to schedule:
the worker tasks run under a stage-level resource profile (:mod:`.resources`), each task
puts the GPU addresses Spark gave it in ``CUDA_VISIBLE_DEVICES`` before the function
loads and tells the driver, and such a job gets Python workers of its own (a reused one
may have set up CUDA for other devices).
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

import maggy_magic

from ...errors import ConfigError, ExperimentFailed
from ...logs import logger
from ...resources import Resources
from ..base import Launch
from .context import dynamic_slots, require_pyspark, resolve_context, task_slots
from .failures import spark_error
from .job import CANCEL_WAIT, JobBackend, WorkerJob
from .resources import profile_slots, task_profile
from .ship import Shipper, check_options, module_of, pickle_function
from .task import ListParam, TaskSetup, serve, serve_barrier

#: Keys of ``backend_options`` this backend understands.
OPTIONS = ("spark", "master", "barrier", "ship", "conf", "app_name", "start_timeout")


class SparkBackend(JobBackend):
    """Workers are long-running tasks of one Spark job.

    Options: ``spark`` (a SparkSession or SparkContext to use), ``master`` (create a
    session with this master if none is active), ``barrier`` (launch all workers together
    in a barrier stage; the training function can then take ``rank``, ``world_size``,
    ``peers`` and ``barrier_context``), ``ship`` (``"auto"``: ship maggy_magic as a zip
    to executors that cannot import this version; ``"always"``; ``"never"``), ``conf``
    (extra settings for a session this backend creates), ``app_name``, ``start_timeout``
    (seconds without any worker registering before the run fails, and the most the job
    probing the executors may take; default 300).

    A session the backend creates stays up after the run, for the next one; for a
    ``local``/``local-cluster`` master its executors run this interpreter
    (``PYSPARK_PYTHON`` is set to it unless already set). With ``ship="always"``, a reused
    Python worker that imported maggy_magic before keeps that copy (the task checks that
    its version matches the driver's). Thread
    safety: ``worker_joined`` / ``worker_lost`` come from the driver's thread, ``start``
    and ``stop`` from the experiment's; they share state under a lock.
    """

    name = "spark"
    #: The setting the driver's advertised address comes from unless driver_host is given.
    host_setting = "spark.driver.host"

    def __init__(self, spark: Any = None, master: Optional[str] = None, barrier: bool = False,
                 ship: str = "auto", conf: Optional[Dict[str, Any]] = None,
                 app_name: str = "maggy-magic", start_timeout: float = 300.0):
        require_pyspark()
        check_options(barrier, ship, start_timeout)
        if conf is not None and not isinstance(conf, dict):
            raise ConfigError(f"spark backend option conf must be a dict of Spark settings, "
                              f"got {type(conf).__name__}")
        self.barrier = barrier
        self.ship = ship
        self.start_timeout = float(start_timeout)
        self.session, self.sc = resolve_context(spark, master, conf, app_name)
        if str(self.sc.getConf().get("spark.speculation", "false")).lower() == "true":
            raise ConfigError("the spark backend runs long-lived worker tasks that Spark must "
                              "not duplicate; set spark.speculation=false for this session")
        #: Task slots dynamic allocation may grow to (0: no limit), None when it is off.
        self.dynamic = dynamic_slots(self.sc.master, self.sc.getConf())
        if self.barrier and self.dynamic is not None:
            raise ConfigError("Spark refuses barrier stages under dynamic allocation "
                              "(BarrierJobRunWithDynamicAllocationException); set "
                              "spark.dynamicAllocation.enabled=false for this session, or "
                              "run without barrier=True")
        # where the driver listens is checked with the run options (driver_bind...)
        self._host = self.sc.getConf().get("spark.driver.host", None) or "127.0.0.1"
        self.job_group: Optional[str] = None
        #: The zip shipped to the executors for this run, if any.
        self.shipped: Optional[str] = None
        self._lock = threading.Lock()
        self._job: Optional[WorkerJob] = None
        self._registered: Dict[str, float] = {}
        #: GPUs / CPUs per worker task, and the profile the tasks run under (None: the
        #: session's default).
        self.resources: Optional[Resources] = None
        self.profile: Any = None

    def request_resources(self, request: Resources, workers: Optional[int]) -> None:
        """Check ``request`` against the session and make the tasks' profile (see
        :mod:`.resources`); more workers than run at once simply wait, as without it."""
        self.profile = task_profile(self.sc, request)
        self.resources = request

    def _slots(self) -> int:
        """Task slots now, under the run's resource request if it has one."""
        if self.resources is None:
            return task_slots(self.sc)
        return profile_slots(self.sc, self.resources, self.profile)

    # -- the contract ---------------------------------------------------------------------
    def default_workers(self) -> int:
        """The cluster's task slots (executors x cores / spark.task.cpus), at least 1; under
        dynamic allocation those of maxExecutors executors, or the slots up now when
        maxExecutors sets no limit."""
        if self.dynamic:
            return self.dynamic
        if self.dynamic == 0:
            slots = task_slots(self.sc)
            logger(__name__).warning(
                "dynamic allocation without spark.dynamicAllocation.maxExecutors: using the "
                "%d task slot(s) up now; set workers (--workers) or maxExecutors", slots)
            return slots
        return self._slots()

    def capacity(self) -> Optional[int]:
        """The cluster's task slots: more workers than that cannot run at once (under
        dynamic allocation: maxExecutors' slots, None without a limit; workers join as
        executors arrive)."""
        if self.dynamic is not None:
            return self.dynamic or None
        return self._slots()

    def driver_host(self) -> str:
        """``spark.driver.host``: the address the executors already use for the driver."""
        return self._host

    def start(self, launch: Launch) -> None:
        """Submit the job of ``launch.num_workers`` worker tasks; returns at once.

        In barrier mode, more workers than task slots is a :class:`ConfigError` (Spark
        would wait for slots that never come).
        """
        from pyspark import InheritableThread

        workers = launch.num_workers
        if self.barrier:
            slots = self._slots()
            if workers > slots:
                raise ConfigError(f"barrier mode starts all {workers} workers at once but the "
                                  f"cluster has {slots} task slot(s); set workers <= {slots} "
                                  "or add executors")
        shipper = Shipper(self.sc, self.ship, launch.function)  # + its local modules
        by_value = self._prepare(shipper, [module_of(launch.function)])
        self.shipped, self.code = shipper.shipped, shipper.code
        setup = TaskSetup(launch.host, launch.port, launch.secret,
                          pickle_function(launch.function, by_value),
                          maggy_magic.__version__, launch.extras,
                          fingerprint=launch.fingerprint)
        if self.resources is not None:
            setup.gpus, setup.cpus = self.resources.gpus, self.resources.cpus
        setup.notices = notices = self.sc.accumulator([], ListParam())
        setup.local_modules = list(shipper.needs.local)  # fresh in reused Python workers
        rdd = self.sc.parallelize(range(workers), workers)
        run_id = os.path.basename(os.path.normpath(launch.run_dir))
        if self.barrier:
            rdd = rdd.barrier().mapPartitions(functools.partial(serve_barrier, setup))
        else:
            rdd = rdd.mapPartitionsWithIndex(functools.partial(serve, setup))
        if self.barrier or launch.fresh_processes or (
                self.resources is not None and self.resources.gpus):
            _fresh_python_workers(self.sc, rdd, run_id, self.profile)
        elif self.profile is not None:
            rdd = rdd.withResources(self.profile)
        self.job_group = f"maggy-magic-{run_id}-{uuid.uuid4().hex[:8]}"
        description = f"maggy-magic: {workers} worker(s) for run {run_id}"

        def collect() -> List[Dict[str, Any]]:
            self.sc.setJobGroup(self.job_group, description, interruptOnCancel=True)
            return rdd.collect()

        self._job = WorkerJob(launch, collect=collect, cancel=self.cancel,
                              start_timeout=self.start_timeout,
                              slots=self._slots,
                              reasons=lambda: notices.value, make_thread=InheritableThread)
        self._job.start()

    def cancel(self) -> None:
        """Cancel this run's Spark job now (its tasks are interrupted and killed)."""
        if self.job_group is not None:
            self.sc.cancelJobGroup(self.job_group)

    def worker_joined(self, worker_id: str, host: str, pid: int) -> None:
        with self._lock:
            self._registered[worker_id] = time.time()
        super().worker_joined(worker_id, host, pid)

    def worker_lost(self, worker_id: str) -> None:
        """Kill the task attempt of a worker the driver gave up on, so Spark runs it again.

        Only an attempt launched before that worker last registered is killed: a newer
        attempt is its replacement (Spark already re-ran the task) and must live.
        """
        job = self._job
        with self._lock:
            registered = self._registered.get(worker_id)
        if registered is None or job is None or job.stopping or job.done.is_set():
            return
        try:
            partition = int(worker_id)
        except ValueError:
            return
        threading.Thread(target=self._kill_attempts, args=(partition, registered),
                         name="maggy-spark-kill", daemon=True).start()

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "master": self.sc.master,
                "app_id": self.sc.applicationId, "barrier": self.barrier,
                "resource_profile": getattr(self.profile, "id", None)}

    # -- internals ------------------------------------------------------------------------
    def _prepare(self, shipper: Shipper, modules: List[Optional[str]]) -> List[str]:
        """``shipper.prepare(modules)`` (its probe job is the cluster's first test) in a job
        group of its own, cancelled when it takes longer than ``start_timeout``."""
        from pyspark import InheritableThread

        group = f"maggy-magic-probe-{uuid.uuid4().hex[:8]}"
        outcome: Dict[str, Any] = {}

        def probe() -> None:
            try:
                self.sc.setJobGroup(group, "maggy-magic: what the executors can import",
                                    interruptOnCancel=True)
                outcome["modules"] = shipper.prepare(modules)
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        thread = InheritableThread(probe, name="maggy-spark-probe", daemon=True)
        thread.start()
        thread.join(self.start_timeout)
        if thread.is_alive():
            self.sc.cancelJobGroup(group)
            thread.join(CANCEL_WAIT)
            raise ExperimentFailed(
                f"the Spark job probing the executors did not finish within "
                f"{self.start_timeout:g} s (the cluster has {task_slots(self.sc)} task slot(s) "
                "now); check that executors are running and free, or raise start_timeout")
        if isinstance(outcome.get("error"), ConfigError):  # a package the cluster lacks
            raise outcome["error"]
        if "error" in outcome:
            raise ExperimentFailed(f"the Spark job probing the executors failed: "
                                   f"{spark_error(outcome['error'])}")
        return outcome["modules"]

    def _kill_attempts(self, partition: int, registered: float) -> None:
        try:
            jsc = self.sc._jsc.sc()
            tracker = self.sc.statusTracker()
            for job_id in tracker.getJobIdsForGroup(self.job_group):
                job = tracker.getJobInfo(job_id)
                if job is None or job.status != "RUNNING":
                    continue
                for stage_id in list(job.stageIds):
                    stage = tracker.getStageInfo(stage_id)
                    if stage is None:
                        continue
                    tasks = jsc.statusStore().taskList(stage_id, stage.currentAttemptId,
                                                       1 << 30)
                    for k in range(tasks.size()):
                        task = tasks.apply(k)
                        if task.index() == partition and task.status() == "RUNNING" and \
                                task.launchTime().getTime() <= registered * 1000:
                            jsc.killTaskAttempt(task.taskId(), True,
                                                f"maggy-magic: the driver lost worker "
                                                f"{partition}")
        except Exception as exc:  # noqa: BLE001 - best effort; the driver already retried
            logger(__name__).warning("could not kill the Spark task of lost worker %s: %s",
                                      partition, exc)


# -- helpers ------------------------------------------------------------------------------
def _fresh_python_workers(sc: Any, rdd: Any, run_id: str, profile: Any = None) -> None:
    """Run ``rdd``'s tasks in Python workers no earlier job used (under ``profile``, a
    ResourceProfile, if given: ``withResources`` wraps the function too).

    Collective training (TensorFlow's MultiWorkerMirroredStrategy, torch.distributed)
    leaves per-process state that hangs a second run in a reused Python worker. Spark
    keeps one pool of Python workers per (python, environment variables), so a variable
    unique to this launch, captured when the RDD's function is wrapped (``_jrdd``), gives
    it a pool of its own; other jobs keep reusing theirs.
    """
    key = "MAGGY_MAGIC_LAUNCH"
    previous = sc.environment.get(key)
    sc.environment[key] = f"{run_id}-{uuid.uuid4().hex[:8]}"
    try:
        if profile is not None:
            rdd.withResources(profile)  # wraps the function with the environment as it is now
        else:
            _ = rdd._jrdd  # wraps the function with the environment as it is now
    finally:
        if previous is None:
            sc.environment.pop(key, None)
        else:
            sc.environment[key] = previous
