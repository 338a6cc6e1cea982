"""``SparkConnectBackend``: the spark backend on a Spark Connect session (no SparkContext).

The same long-running worker tasks as :class:`~.backend.SparkBackend`, launched through the
DataFrame API: one row per worker, ``mapInArrow`` (``barrier=True`` in barrier mode) over
``spark.range(W, numPartitions=W)``, collected in a background thread under a tag of this
run (``addTag``); ``stop`` and ``cancel`` interrupt that tag. Each task runs
:func:`.task.serve` (or :func:`.task.serve_barrier`) and returns its summary as one JSON
string. What travels goes as Connect artifacts (``addArtifacts(..., pyfile=True)``),
decided by the classic backend's :class:`~.ship.Shipper` with a :class:`ConnectTarget`:
maggy_magic when an executor cannot import this version, the zip of the training
function's local modules, and an installed package the executors lack is one line. What
an executor can import is probed by a one-row ``mapInArrow`` job whose function uses only
the standard library and pyarrow (which every Connect executor has).

Collective training (TensorFlow's MultiWorkerMirroredStrategy) leaves per-process state
that hangs a second run in a reused Python worker. Spark keeps one pool of Python workers
per Connect session (its artifact id is among the workers' environment), so barrier and
dist runs (``Launch.fresh_processes``) go out on a clone of the user's session
(:func:`fresh_session`: the same server-side settings, views and functions; a pool of its
own), which is released when the run stops.

What Connect does not offer and this backend therefore does not do: killing one task
attempt (a worker the driver gave up on keeps its task until the run ends; its trial is
retried on another worker), per-task status (the start watcher only times out).

The driver's address for the executors is this machine's address on the route to the
Connect server (what the server and its executors see), unless ``driver_host`` says
otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import uuid
from typing import Any, Dict, List, Optional

import maggy_magic

from ...errors import ConfigError, ExperimentFailed
from ...logs import logger
from ..base import Launch
from .context import expected_slots
from .failures import spark_error
from .job import JobBackend, WorkerJob
from .resources import build_profile, profile_asks, refused
from .ship import Shipper, check_options, module_answers, module_of, pickle_function
from .task import TaskSetup


def is_connect_session(obj: Any) -> bool:
    """Whether ``obj`` is a Spark Connect SparkSession (without importing Connect)."""
    return type(obj).__module__.startswith("pyspark.sql.connect")


def active_connect_session(remote: Optional[str] = None) -> Any:
    """The Connect session to use: one for ``remote`` (``sc://host:port``), else the active
    session if it is a Connect one, else one for ``SPARK_REMOTE`` (as pyspark's builder
    reads it) when that is set, else None."""
    from pyspark.sql import SparkSession

    if remote is None and SparkSession.getActiveSession() is None:
        remote = os.environ.get("SPARK_REMOTE") or None
    if remote is not None:
        if not str(remote).startswith("sc://"):
            raise ConfigError(f"spark backend option remote must be a Spark Connect URL "
                              f"such as sc://host:15002, got {remote!r}")
        try:
            return SparkSession.builder.remote(str(remote)).getOrCreate()
        except ImportError as exc:
            raise ConfigError(f"a Spark Connect session needs the Connect client "
                              f"({exc.name or exc} is missing); install "
                              "maggy-magic[connect]") from None
    active = SparkSession.getActiveSession()
    return active if is_connect_session(active) else None


def connect_slots(session: Any) -> int:
    """Task slots the session's settings promise (``spark.master``, executor instances ×
    cores, ``spark.cores.max``); 0 when they do not say (a standalone or YARN cluster
    sized by what joins it: a Connect client cannot count live executors)."""
    conf = session.conf
    master = str(conf.get("spark.master", "") or "")
    return expected_slots(master, conf)


def slots_said(session: Any) -> str:
    """The slot count for a message: the number, or "an unknown number of"."""
    return str(connect_slots(session) or "an unknown number of")


def server_endpoint(session: Any) -> tuple:
    """``(host, port)`` of the Connect server the session talks to (the port that
    ``sc://host:port`` names, 15002 when the client does not say)."""
    client = session.client
    endpoint = str(getattr(getattr(client, "_builder", None), "endpoint", "") or "")
    host, _, port = endpoint.rpartition(":")
    if host and port.isdigit():
        return host.strip("[]"), int(port)
    return str(getattr(client, "host", None) or "127.0.0.1"), 15002


def local_address_towards(session: Any) -> str:
    """This machine's address on the route to the Connect server (no packet is sent)."""
    host, port = server_endpoint(session)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((socket.gethostbyname(host), port))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def fresh_session(session: Any) -> Any:
    """A new server-side session like ``session``: its clone where the client can clone
    (pyspark 4.1+: settings, temporary views and functions copied), else a new session
    of the same server. Its jobs run in Python workers no job of ``session`` used."""
    clone = getattr(session, "cloneSession", None)
    if clone is not None:
        return clone()
    return session.newSession()


# -- what runs on the executors ----------------------------------------------------------
def serve_arrow(setup: TaskSetup, barrier: bool, batches: Any) -> Any:
    """``mapInArrow`` body: the partition's worker loop; yields its summary as JSON."""
    import pyarrow
    from pyspark import TaskContext

    from .task import serve, serve_barrier

    for _ in batches:  # the one input row (the worker id is the partition id)
        pass
    if barrier:
        summaries = serve_barrier(setup, iter(()))
    else:
        summaries = serve(setup, TaskContext.get().partitionId(), iter(()))
    for summary in summaries:
        yield pyarrow.RecordBatch.from_pylist([{"summary": json.dumps(summary)}])


def probe_connect(session: Any, names: List[str]) -> Dict[str, tuple]:
    """``name -> (importable, version)`` as one executor of ``session`` sees them
    (:func:`.ship.module_answers` in a one-row ``mapInArrow`` job)."""
    answer = module_answers(names)

    def probe(batches: Any) -> Any:
        import json as _json

        import pyarrow as _pa

        for _ in batches:
            pass
        yield _pa.RecordBatch.from_pylist([{"answer": _json.dumps(answer())}])

    rows = session.range(1, numPartitions=1).mapInArrow(probe, "answer string").collect()
    return {name: (bool(ok), version)
            for name, (ok, version) in json.loads(rows[0]["answer"]).items()}


class ConnectTarget:
    """Where a :class:`~.ship.Shipper` ships to on a Connect session: ``key`` (the session
    id), ``probe`` (:func:`probe_connect`, interrupted after ``timeout`` s: a
    :class:`ExperimentFailed`), ``add`` (a Python-file artifact)."""

    def __init__(self, session: Any, timeout: float = 300.0):
        self.session = session
        self.timeout = timeout
        self.key = f"connect:{session.session_id}"

    def probe(self, names: List[str]) -> Dict[str, tuple]:
        tag = f"maggy-magic-probe-{uuid.uuid4().hex[:8]}"
        answer: Dict[str, Any] = {}

        def run() -> None:
            self.session.addTag(tag)
            try:
                answer["modules"] = probe_connect(self.session, names)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                answer["error"] = exc
            finally:
                self.session.removeTag(tag)

        thread = threading.Thread(target=run, name="maggy-connect-probe", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self.session.interruptTag(tag)
            raise ExperimentFailed(
                f"the Spark Connect job probing the executors did not run within "
                f"{self.timeout:g} s (the cluster has {slots_said(self.session)} task "
                "slot(s)); check that executors are running and free, or raise start_timeout")
        if "error" in answer:
            raise answer["error"]
        return answer["modules"]

    def add(self, path: str) -> None:
        self.session.addArtifacts(path, pyfile=True)


class SparkConnectBackend(JobBackend):
    """Workers are long-running tasks of one DataFrame job on a Spark Connect session.

    Options as :class:`~.backend.SparkBackend`'s that apply here: ``barrier``, ``ship``
    (``auto``/``always``/``never``), ``start_timeout``. Thread safety: ``start``/``stop``
    from the experiment's thread, ``worker_*`` from the driver's; state under a lock.
    """

    name = "spark"

    def __init__(self, session: Any, barrier: bool = False, ship: str = "auto",
                 start_timeout: float = 300.0):
        check_options(barrier, ship, start_timeout)
        self.session = session
        self.barrier = barrier
        self.ship = ship
        self.start_timeout = float(start_timeout)
        self.tag: Optional[str] = None
        self.shipped: Optional[str] = None
        #: The zips of the training function's local modules added for this run.
        self.code: List[str] = []
        self._host = local_address_towards(session)
        self._job: Optional[WorkerJob] = None
        #: Where this run's job goes: ``session``, or its clone in barrier mode.
        self._jobs_session: Any = None
        #: GPUs / CPUs per worker task, and the profile the tasks run under (None: the
        #: session's default).
        self.resources: Any = None
        self.profile: Any = None

    def request_resources(self, request: Any, workers: Optional[int]) -> None:
        """As on a classic session (:mod:`.resources`): checked against the session's
        settings, the tasks run under a stage-level profile made on the server now (so a
        refusal comes before the run exists) and passed to ``mapInArrow(profile=)``."""
        conf = self.session.conf
        asks = profile_asks(str(conf.get("spark.master", "") or ""), conf, request)
        self.resources = request
        if asks is None:
            return
        profile = build_profile(*asks)
        try:
            profile.id  # noqa: B018 - creates the profile on the server
        except Exception as exc:  # noqa: BLE001 - Spark's reason, in one line
            raise refused(request, asks[0], exc) from None
        self.profile = profile

    def default_workers(self) -> int:
        slots = connect_slots(self.session)
        if not slots:
            logger(__name__).warning(
                "the Spark Connect session's settings do not say how many task slots the "
                "cluster has: running 1 worker; set workers (--workers)")
        return max(slots, 1)

    def capacity(self) -> Optional[int]:
        """The slots the settings promise; None when they do not say (then a barrier
        stage larger than the cluster is refused by Spark, in one line)."""
        return connect_slots(self.session) or None

    def driver_host(self) -> str:
        return self._host

    def start(self, launch: Launch) -> None:
        workers = launch.num_workers
        slots = connect_slots(self.session)
        if self.barrier and slots and workers > slots:
            raise ConfigError(f"barrier mode starts all {workers} workers at once but the "
                              f"cluster has {slots} task slot(s); set workers <= that or add "
                              "executors")
        # a GPU run too: a reused Python worker may have set up CUDA for other devices
        fresh = self.barrier or launch.fresh_processes or bool(
            self.resources is not None and self.resources.gpus)
        self._jobs_session = fresh_session(self.session) if fresh else self.session
        session = self._jobs_session
        shipper = Shipper(None, self.ship, launch.function,
                          target=ConnectTarget(session, self.start_timeout))
        by_value = self._prepare(shipper, [module_of(launch.function)])
        self.shipped, self.code = shipper.shipped, shipper.code
        setup = TaskSetup(launch.host, launch.port, launch.secret,
                          pickle_function(launch.function, by_value),
                          maggy_magic.__version__, launch.extras,
                          fingerprint=launch.fingerprint)
        setup.local_modules = list(shipper.needs.local)  # fresh in reused Python workers
        if self.resources is not None:
            setup.gpus, setup.cpus = self.resources.gpus, self.resources.cpus
        run_id = os.path.basename(os.path.normpath(launch.run_dir))
        self.tag = f"maggy-magic-{run_id}-{uuid.uuid4().hex[:8]}"
        frame = session.range(workers, numPartitions=workers).mapInArrow(
            functools.partial(serve_arrow, setup, self.barrier), "summary string",
            barrier=self.barrier, **({} if self.profile is None else {"profile": self.profile}))

        def collect() -> List[Dict[str, Any]]:
            session.addTag(self.tag)
            try:
                rows = frame.collect()
            finally:
                session.removeTag(self.tag)
            return [json.loads(row["summary"]) for row in rows]

        self._job = WorkerJob(launch, collect=collect, cancel=self.cancel,
                              start_timeout=self.start_timeout,
                              slots=lambda: slots_said(self.session),
                              what="Spark Connect job")
        self._job.start()

    def cancel(self) -> None:
        if self.tag is not None and self._jobs_session is not None:
            self._jobs_session.interruptTag(self.tag)

    def stop(self, grace: float = 5.0) -> None:
        """As :meth:`.job.JobBackend.stop`; then the barrier run's own session is
        released."""
        try:
            super().stop(grace)
        finally:
            jobs_session, self._jobs_session = self._jobs_session, None
            if jobs_session is not None and jobs_session is not self.session:
                jobs_session.stop()

    def worker_lost(self, worker_id: str) -> None:
        logger(__name__).info("worker %s lost: Spark Connect cannot kill its task alone; it "
                              "ends with the run", worker_id)

    def describe(self) -> Dict[str, Any]:
        host, port = server_endpoint(self.session)  # not the URL: it may carry a token
        return {"backend": self.name, "connect": True, "barrier": self.barrier,
                "server": f"{host}:{port}",
                "master": str(self.session.conf.get("spark.master", "") or "")}

    # -- internals ------------------------------------------------------------------------
    def _prepare(self, shipper: Shipper, modules: List[Optional[str]]) -> List[str]:
        """``shipper.prepare(modules)``, its probe job's failure in one line."""
        try:
            return shipper.prepare(modules)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line below
            raise ExperimentFailed(f"the Spark Connect job probing the executors failed: "
                                   f"{spark_error(exc)}") from None
