"""The SparkContext the spark backend runs on, and how many tasks it runs at once.

``resolve_context(spark, master, conf, app_name)`` finds the context in this order: the
``spark=`` backend option (a SparkSession or SparkContext), the active SparkSession /
SparkContext, or a session it creates from ``master=`` (e.g. ``"local-cluster[2,1,1024]"``)
with :data:`SESSION_DEFAULTS` (console progress bar off, task retries allowed).
``task_slots(sc)`` and ``expected_slots(master, conf)`` count the cluster's task slots;
``dynamic_slots(master, conf)`` those dynamic allocation may grow it to.
``require_pyspark()`` turns a missing pyspark into a
:class:`~maggy_magic.errors.ConfigError` that says what to install. pyspark is imported
only inside these functions.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, Optional, Tuple

from ...errors import ConfigError

#: Settings of a SparkSession this backend creates (``conf=`` overrides them).
SESSION_DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",
    # a task whose executor dies is re-run; a few deaths must not end the experiment
    "spark.task.maxFailures": "8",
    # barrier jobs submitted while executors are still registering retry soon
    "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "1s",
}


def require_pyspark() -> None:
    """Raise a :class:`ConfigError` naming the extra to install when pyspark is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError("the spark backend needs pyspark, which is not installed; install "
                          "maggy-magic[spark] (pip install 'maggy-magic[spark]')") from None


def resolve_context(spark: Any, master: Optional[str], conf: Optional[Dict[str, Any]],
                    app_name: str) -> Tuple[Any, Any]:
    """(session or None, SparkContext) following the order in the module docstring."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if spark is not None:
        if isinstance(spark, SparkContext):
            return None, spark
        return spark, _context_of(spark, "the spark= backend option")
    session = SparkSession.getActiveSession()
    if session is not None:
        sc = _context_of(session, "the active SparkSession")
    else:
        sc = SparkContext._active_spark_context
    if sc is not None:
        if master is not None and master != sc.master:
            raise ConfigError(f"master={master!r} was given but a SparkContext with master "
                              f"{sc.master!r} is already running; drop master to use it, or "
                              "stop it first")
        if conf:
            raise ConfigError("conf= applies only to a SparkSession the backend creates, and "
                              "one is already running; set these options on it, or stop it")
        return session, sc
    if master is None:
        raise ConfigError("the spark backend found no active SparkSession; create one "
                          "(SparkSession.builder...getOrCreate()), pass it as "
                          "backend_options={'spark': spark}, or give a master to start, e.g. "
                          "backend_options={'master': 'local[2]'} (--master local[2])")
    settings = dict(SESSION_DEFAULTS)
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # executors on this machine run this interpreter (PySpark reads the variable when
        # the context starts; its default, python3 on PATH, may be another Python)
        os.environ["PYSPARK_PYTHON"] = sys.executable
    settings.update({str(k): str(v) for k, v in (conf or {}).items()})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    return session, session.sparkContext


def _context_of(session: Any, what: str):
    try:
        sc = session.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect sessions raise here
        sc = None
    if sc is None:
        raise ConfigError(f"{what} has no SparkContext (Spark Connect sessions cannot run "
                          "tasks that connect back to the driver); use a classic SparkSession")
    return sc


def task_slots(sc: Any) -> int:
    """How many tasks the cluster runs at once: what the scheduler reports now, or what the
    configuration promises when executors are still registering; at least 1."""
    live = 0
    try:
        jsc = sc._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        live = int(jsc.maxNumConcurrentTasks(profile))
    except Exception:  # noqa: BLE001 - an internal API; fall back on the configuration
        pass
    return max(live, expected_slots(sc.master, sc.getConf()), 1)


#: ``spark.dynamicAllocation.maxExecutors`` when it is not set: no limit.
UNBOUNDED = 2 ** 31 - 1


def dynamic_slots(master: str, conf: Any) -> Optional[int]:
    """With dynamic allocation on (Spark ignores it on ``local[N]`` masters), the task
    slots of ``spark.dynamicAllocation.maxExecutors`` executors (``spark.executor.cores``,
    1 when unset, each), or 0 when maxExecutors sets no limit; None when it is off."""
    enabled = str(conf.get("spark.dynamicAllocation.enabled", "false")).strip().lower()
    if enabled != "true" or re.fullmatch(r"local(\[.*\])?", master.strip()):
        return None
    task_cpus = max(1, int(conf.get("spark.task.cpus", "1") or 1))
    cores = int(conf.get("spark.executor.cores", "1") or 1)
    most = int(conf.get("spark.dynamicAllocation.maxExecutors", str(UNBOUNDED)) or UNBOUNDED)
    if most >= UNBOUNDED:
        return 0
    return max(1, most * cores // task_cpus)


def expected_slots(master: str, conf: Any) -> int:
    """Task slots the master URL and settings promise (0 if they do not say)."""
    task_cpus = max(1, int(conf.get("spark.task.cpus", "1") or 1))
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:\s*,\s*\d+)?\])?", master.strip())
    if match:
        count = match.group(1)
        return (os.cpu_count() or 1) if count == "*" else int(count or 1)
    match = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]", master.strip())
    if match:
        return int(match.group(1)) * int(match.group(2)) // task_cpus
    instances, cores = conf.get("spark.executor.instances", None), \
        conf.get("spark.executor.cores", None)
    if instances and cores:
        return int(instances) * int(cores) // task_cpus
    cores_max = conf.get("spark.cores.max", None)  # standalone: the application's cap
    if cores_max:
        return int(cores_max) // task_cpus
    return 0
