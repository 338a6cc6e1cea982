"""The backend contract: launch workers that run the worker loop, and make them go away."""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, Optional


class Launch:
    """Everything a backend needs to start workers for one run.

    ``host``/``port``/``secret`` reach the driver; ``function`` is the training function
    and ``payload`` the same function already serialised with cloudpickle (backends send
    it through their own launch channel, never the RPC); ``fail(message)`` ends the run
    from any thread when workers cannot be had. ``fingerprint`` (hex SHA-256 of the
    driver's TLS certificate, None without TLS) travels with the secret, through the
    backend's launch channel, to every worker. ``fresh_processes``: the workers must run
    in processes no earlier run used (collective training, as in a dist run, leaves state
    in a process that hangs the next one).
    """

    def __init__(self, *, host: str, port: int, secret: bytes, function: Callable,
                 num_workers: int, run_dir: str, fail: Callable[[str], None],
                 payload: bytes = b"", extras: Optional[Dict[str, Any]] = None,
                 fingerprint: Optional[str] = None, fresh_processes: bool = False):
        self.host, self.port, self.secret = host, port, secret
        self.fresh_processes = fresh_processes
        self.fingerprint = fingerprint
        self.function = function
        self.payload = payload
        self.num_workers = num_workers
        self.run_dir = run_dir
        self.fail = fail
        self.extras = extras or {}


class Backend(abc.ABC):
    """Launches and stops workers; knows nothing about trials.

    ``start`` returns once launching is under way (workers connect to the driver by
    themselves). ``stop`` is called exactly once when the run is over, from the thread that
    called ``start``; when it returns, no worker of this run may be left running.
    """

    name = "abstract"
    #: Whether the driver may tell an idle worker to leave before the run ends, once no
    #: trial can come to it (the optimizer is done and nothing waits): True for a
    #: backend whose workers end by themselves on ``shutdown`` and are not replaced
    #: then, so the last trials run while the others' processes are already gone.
    release_idle = False

    @abc.abstractmethod
    def default_workers(self) -> int:
        """How many workers to use when the user does not say."""

    @abc.abstractmethod
    def start(self, launch: Launch) -> None:
        """Start ``launch.num_workers`` workers."""

    @abc.abstractmethod
    def stop(self, grace: float = 5.0) -> None:
        """Make every worker exit within about ``grace`` seconds (then force it)."""

    def request_resources(self, request: Any, workers: Optional[int]) -> None:
        """Every worker of the coming run needs ``request`` (a
        :class:`~maggy_magic.resources.Resources`: GPUs / CPUs per trial; only called when
        it asks for something); ``workers`` is the count the user gave (None: this
        backend's default, which must then respect the request). Called before the run
        exists: what cannot be had is a one-line ConfigError. A backend that cannot honour
        a request says so."""
        from ..errors import ConfigError

        raise ConfigError(f"the {self.name} backend cannot give trials their own GPUs or "
                          f"CPUs ({request.describe()}); drop gpus_per_trial / cpus_per_trial "
                          "or use the local or spark backend")

    def worker_joined(self, worker_id: str, host: str, pid: int) -> None:
        """``worker_id`` registered with the driver (again, after a restart or retry).
        Called on the driver's thread before ``worker_lost`` can name that incarnation;
        must not block. A backend may note it to tell a worker's incarnations apart."""

    def worker_lost(self, worker_id: str) -> None:
        """The driver gave up on ``worker_id`` (silent or disconnected). A backend that
        owns the worker's process should end it, so a hung worker does not hold a slot."""

    def capacity(self) -> Optional[int]:
        """How many workers can run at the same time (None: no fixed limit)."""
        return None

    def driver_host(self) -> str:
        """The address the driver listens on, reachable from this backend's workers."""
        return "127.0.0.1"

    def describe(self) -> Dict[str, Any]:
        """What the run's config records about this backend."""
        return {"backend": self.name}
