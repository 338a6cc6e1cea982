"""The spark backend: workers are long-running tasks of one Spark job.

Modules: :mod:`.backend` (:class:`SparkBackend`: start, stop and cancel the workers' job),
:mod:`.connect` (the same workers on a Spark Connect session),
:mod:`.context` (which SparkSession / SparkContext, how many task slots), :mod:`.ship`
(the package zip, probing what executors can import), :mod:`.task` (what runs inside a
Spark task), :mod:`.failures` (a failed Spark action's error in one line), :mod:`.resources`
(GPUs / CPUs per worker task through a stage-level resource profile). None of them
imports pyspark at import time: it is imported only when the backend is used, and a
missing pyspark is a :class:`~maggy_magic.errors.ConfigError` that says what to install.
:mod:`.task` and what it imports need only the standard library, so executors import it.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError, did_you_mean
from .backend import OPTIONS as CLASSIC_OPTIONS
from .backend import SparkBackend

#: Options of the spark backend: the classic ones and ``remote`` (a Spark Connect URL).
OPTIONS = CLASSIC_OPTIONS + ("remote",)
#: Options that only a classic session (one this backend creates) can take.
_CLASSIC_ONLY = ("master", "conf", "app_name")


def create(**options: Any) -> Any:
    """The registry's factory: check option names, then build the backend: a
    :class:`~.connect.SparkConnectBackend` for a Spark Connect session (``remote=``, a
    Connect session as ``spark=``, or the active session being one), else a
    :class:`SparkBackend`."""
    for key in options:
        if key not in OPTIONS:
            raise ConfigError(f"unknown spark backend option {key!r}; "
                              f"{did_you_mean(key, OPTIONS)}")
    from .context import require_pyspark

    require_pyspark()
    from .connect import SparkConnectBackend, active_connect_session, is_connect_session

    remote = options.pop("remote", None)
    session = options.get("spark")
    if remote is not None or is_connect_session(session) or (
            session is None and options.get("master") is None):
        connect = session if is_connect_session(session) else active_connect_session(remote)
        if connect is not None:
            given = [key for key in _CLASSIC_ONLY if options.get(key) is not None]
            if given:
                raise ConfigError(f"spark backend option(s) {', '.join(given)} apply only to "
                                  "a classic session this backend creates, not to a Spark "
                                  "Connect session; drop them")
            return SparkConnectBackend(connect, **{k: v for k, v in options.items()
                                                   if k in ("barrier", "ship",
                                                            "start_timeout")})
    return SparkBackend(**options)


__all__ = ["OPTIONS", "SparkBackend", "create"]
