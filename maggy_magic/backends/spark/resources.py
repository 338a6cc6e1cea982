"""GPUs and CPUs per worker task on a classic Spark session: Spark's own scheduling.

``task_profile(sc, request)`` checks a :class:`~maggy_magic.resources.Resources` request
against the session before the run exists (one-line ConfigErrors) and returns the
stage-level ``ResourceProfile`` the worker tasks run under
(``TaskResourceRequests().cpus(c).resource("gpu", g)``, through ``rdd.withResources``),
or None when the session's default profile already asks for exactly that
(``spark.task.resource.gpu.amount`` / ``spark.task.cpus``). ``profile_slots`` counts
how many worker tasks the cluster runs at once under it. Spark then gives each task its
own GPU addresses (``TaskContext.resources()["gpu"]``), and the task puts them in
``CUDA_VISIBLE_DEVICES`` before the function loads (:mod:`.task`).

What Spark 4 does, measured on ``local-cluster``:

- A profile of task requests only (a ``TaskResourceProfile``) is accepted with dynamic
  allocation off on standalone / ``local-cluster``, YARN and Kubernetes, for plain and
  barrier stages alike; executors keep their default resources and the tasks share
  them. On ``local[N]`` Spark refuses such a profile ("TaskResourceProfiles are only
  supported for Standalone, Yarn and Kubernetes cluster"), and even with
  ``spark.task.resource.gpu.amount`` set session-wide its tasks that need a GPU are
  never scheduled: local mode does not offer custom resources. A request on ``local[N]``
  is therefore a one-line ConfigError (use a ``local-cluster[...]`` master or the local
  backend). Where Spark refuses the profile for another reason, the message says to set
  the request session-wide instead (``conf={"spark.task.resource.gpu.amount": ...}``
  when the backend creates the session): with the default profile matching the
  request, no profile is used.
- Executors need ``spark.executor.resource.gpu.amount`` (standalone workers also
  ``spark.worker.resource.gpu.amount`` and a ``spark.worker.resource.gpu.discoveryScript``
  printing ``{"name": "gpu", "addresses": [...]}``; workers on one host must announce
  distinct addresses). Without it Spark refuses the profile ("No executor resource
  configs were specified"); this module says so first, in one line.
- Task amounts: whole numbers up to the executor's amount, or below 1, where Spark
  puts ``floor(1 / amount)`` tasks on one address (so it takes 0.3 as a third and 0.75
  as one); maggy-magic accepts only whole numbers and ``1/n``, whose share is exact.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from ...errors import ConfigError
from ...resources import Resources
from .failures import spark_error

_LOCAL = re.compile(r"local(\[.*\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]")


def _number(conf: Any, key: str) -> Optional[float]:
    raw = conf.get(key, None)
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def _executor_shape(master: str, conf: Any):
    """``(executors, cores each)`` as the master URL and settings say (None: unknown)."""
    match = _LOCAL_CLUSTER.fullmatch(master.strip())
    if match:
        return int(match.group(1)), int(match.group(2))
    instances = _number(conf, "spark.executor.instances")
    cores = _number(conf, "spark.executor.cores")
    return (int(instances) if instances else None), (int(cores) if cores else None)


def profile_asks(master: str, conf: Any, request: Resources) -> Optional[Tuple[int, Any]]:
    """``(cpus, gpus)`` the worker tasks' profile must ask for on a session of ``master``
    whose settings are ``conf`` (a SparkConf or a session's ``conf``: ``get(key, default)``),
    None when the session's default profile already asks for exactly that; one-line
    ConfigErrors for what the session cannot give (module docstring)."""
    master = master.strip()
    if _LOCAL.fullmatch(master):
        raise ConfigError(f"Spark schedules GPUs and CPUs per task only on a cluster manager, "
                          f"not on master {master!r} ({request.describe()}); use a "
                          "local-cluster[...] / standalone, YARN or Kubernetes master, or the "
                          "local backend")
    _, cores = _executor_shape(master, conf)
    cpus = request.cpus or int(_number(conf, "spark.task.cpus") or 1)
    if request.cpus and cores is not None and request.cpus > cores:
        raise ConfigError(f"cpus_per_trial={request.cpus} is more than the {cores} core(s) of "
                          f"each executor; set cpus_per_trial <= {cores} or give executors "
                          "more cores (spark.executor.cores)")
    if request.gpus is not None:
        have = _number(conf, "spark.executor.resource.gpu.amount") or 0
        if have <= 0:
            raise ConfigError(f"gpus_per_trial={request.gpus:g} but this Spark session's "
                              "executors have no GPUs (spark.executor.resource.gpu.amount is "
                              "not set); set it and a discovery script (standalone: "
                              "spark.worker.resource.gpu.amount / .discoveryScript), or drop "
                              "gpus_per_trial")
        if request.gpus > have:
            raise ConfigError(f"gpus_per_trial={request.gpus:g} is more than the {have:g} "
                              f"GPU(s) of each executor (spark.executor.resource.gpu.amount); "
                              f"set gpus_per_trial <= {have:g}")
    default_gpus = _number(conf, "spark.task.resource.gpu.amount")
    default_cpus = int(_number(conf, "spark.task.cpus") or 1)
    if (request.gpus is None or default_gpus == request.gpus) and default_cpus == cpus:
        return None  # the session's default profile asks for exactly this
    return cpus, request.gpus


def build_profile(cpus: int, gpus: Any) -> Any:
    """A ResourceProfile of task requests only: ``cpus`` cores and ``gpus`` GPUs (None:
    none) per task."""
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    asks = TaskResourceRequests().cpus(cpus)
    if gpus is not None:
        asks = asks.resource("gpu", float(gpus))
    return ResourceProfileBuilder().require(asks).build


def refused(request: Resources, cpus: int, exc: BaseException) -> ConfigError:
    """The one line for a profile Spark refused: its reason, and the session-wide way."""
    session_wide = (f"spark.task.resource.gpu.amount={request.gpus:g}"
                    if request.gpus is not None else f"spark.task.cpus={cpus}")
    return ConfigError(f"Spark refused a per-task resource profile ({request.describe()}): "
                       f"{spark_error(exc)}; set {session_wide} for the whole session "
                       "instead (backend option conf= when the backend creates it)")


def task_profile(sc: Any, request: Resources) -> Any:
    """The worker tasks' ResourceProfile for ``request`` on a classic session (None: the
    default one fits), registered with the session's profile manager as
    ``rdd.withResources`` would, so that a refusal comes before the run exists."""
    asks = profile_asks(sc.master, sc.getConf(), request)
    if asks is None:
        return None
    profile = build_profile(*asks)
    try:
        sc._jsc.sc().resourceProfileManager().addResourceProfile(
            profile._java_resource_profile)
    except Exception as exc:  # noqa: BLE001 - Spark's reason, in one line
        raise refused(request, asks[0], exc) from None
    return profile


def profile_slots(sc: Any, request: Resources, profile: Any) -> int:
    """How many worker tasks run at once at ``request``: what the scheduler reports for
    the profile now, or what the settings promise while executors still register."""
    live = 0
    try:
        jsc = sc._jsc.sc()
        java = profile._java_resource_profile if profile is not None else \
            jsc.resourceProfileManager().defaultResourceProfile()
        live = int(jsc.maxNumConcurrentTasks(java))
    except Exception:  # noqa: BLE001 - an internal API; fall back on the configuration
        pass
    conf = sc.getConf()
    executors, cores = _executor_shape(sc.master, conf)
    expected = 0
    if executors and cores:
        each = cores // (request.cpus or int(_number(conf, "spark.task.cpus") or 1))
        if request.gpus is not None:
            have = int(_number(conf, "spark.executor.resource.gpu.amount") or 0)
            each = min(each, request.capacity(have))
        expected = executors * each
    return max(live, expected, 1)
