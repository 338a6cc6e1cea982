"""Backends launch workers: ``local`` (processes here); more register themselves here."""

from __future__ import annotations

from typing import Any, Callable, Dict

from ..errors import ConfigError, did_you_mean
from .base import Backend, Launch

#: Options of the local backend (``backend_options`` / ``--backend-opt KEY=VALUE``).
LOCAL_OPTIONS = ("max_restarts", "start")


def _local(**options: Any) -> Backend:
    for key in options:
        if key not in LOCAL_OPTIONS:
            raise ConfigError(f"unknown local backend option {key!r}; "
                              f"{did_you_mean(key, LOCAL_OPTIONS)}")
    restarts = options.get("max_restarts")
    if restarts is not None and (isinstance(restarts, bool) or not isinstance(restarts, int)
                                 or restarts < 0):
        raise ConfigError(f"local backend option max_restarts must be an integer >= 0, got "
                          f"{restarts!r}")
    from .local import LocalBackend

    return LocalBackend(**options)


#: Backend name → factory. Factories import their module lazily (pyspark stays unloaded).
BACKENDS: Dict[str, Callable[..., Backend]] = {"local": _local}
BACKENDS["spark"] = lambda **opts: __import__(__name__ + ".spark", fromlist=["_"]).create(**opts)
BACKENDS["livy"] = lambda **opts: __import__(__name__ + ".livy", fromlist=["_"]).create(**opts)


def get_backend(spec: Any = "local", **options: Any) -> Backend:
    """A backend instance from a name or an instance. A backend with a ``run_experiment``
    method runs whole experiments elsewhere (livy) instead of launching workers."""
    if isinstance(spec, Backend) or hasattr(spec, "run_experiment"):
        return spec
    name = str(spec or "local").lower()
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {spec!r}; {did_you_mean(name, BACKENDS)}")
    return BACKENDS[name](**options)


__all__ = ["Backend", "Launch", "BACKENDS", "get_backend"]
