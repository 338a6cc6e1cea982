"""The spark backend: workers are long-running tasks of one Spark job.

Modules: :mod:`.backend` (:class:`SparkBackend`: start, stop and cancel the workers' job),
:mod:`.context` (which SparkSession / SparkContext, how many task slots), :mod:`.ship`
(the package zip, probing what executors can import), :mod:`.task` (what runs inside a
Spark task), :mod:`.failures` (a failed Spark action's error in one line). None of them
imports pyspark at import time: it is imported only when the backend is used, and a
missing pyspark is a :class:`~maggy_magic.errors.ConfigError` that says what to install.
:mod:`.task` and what it imports need only the standard library, so executors import it.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError, did_you_mean
from .backend import OPTIONS, SparkBackend


def create(**options: Any) -> SparkBackend:
    """The registry's factory: check option names, then build the backend."""
    for key in options:
        if key not in OPTIONS:
            raise ConfigError(f"unknown spark backend option {key!r}; "
                              f"{did_you_mean(key, OPTIONS)}")
    return SparkBackend(**options)


__all__ = ["OPTIONS", "SparkBackend", "create"]
