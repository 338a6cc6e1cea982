"""What the driver knows: the knobs of its loop (:class:`DriverSettings`) and the state of
each connected worker (:class:`WorkerState`)."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from .. import rpc
from ..trial import Trial


class WorkerState:
    """What the driver knows about one connected worker."""

    __slots__ = ("id", "conn", "host", "pid", "trial", "next", "last_seen", "lost",
                 "abort_deadline", "devices", "revoked")

    def __init__(self, worker_id: str, conn: rpc.ServerConnection, host: str, pid: int,
                 devices: Optional[List[str]] = None):
        self.id, self.conn, self.host, self.pid = worker_id, conn, host, pid
        #: The GPU ids its backend gave it (None: the run asked for none).
        self.devices = devices
        self.trial: Optional[Trial] = None  # running
        self.next: Optional[Trial] = None   # queued on the worker, not started
        self.last_seen = time.monotonic()
        self.lost = False  # gone for this run: given up on, or released (told to leave)
        self.abort_deadline: Optional[float] = None  # set once told to abort
        #: Ids of trials taken back from it (``revoke``): lines it prints under one of
        #: them are of a copy whose result does not count (see ``RunRecord.absorb``).
        self.revoked: set = set()

    @classmethod
    def registered(cls, conn: rpc.ServerConnection, msg: Dict[str, Any]) -> "WorkerState":
        """The worker a ``register`` frame describes (``devices``: a list of short ids, or
        absent; anything else is dropped, never trusted as text of any length)."""
        devices = msg.get("devices")
        if not (isinstance(devices, list) and len(devices) <= 64 and
                all(isinstance(d, str) and len(d) <= 64 for d in devices)):
            devices = None
        return cls(msg["worker"], conn, str(msg.get("host", "?")), int(msg.get("pid", 0)),
                   devices)

    def joined(self) -> Dict[str, Any]:
        """The fields of its ``worker_joined`` event."""
        fields: Dict[str, Any] = {"worker": self.id, "host": self.host, "pid": self.pid}
        if self.devices is not None:
            fields["devices"] = list(self.devices)
        return fields


class DriverSettings:
    """The knobs of the loop, resolved from an experiment config."""

    def __init__(self, *, direction: str = "max", optimization_key: str = "metric",
                 es_interval: float = 1.0, es_min: int = 10, max_failures: int = 0,
                 max_retries: int = 2, hb_interval: float = 1.0, hb_timeout: float = 60.0,
                 stop_grace: float = 30.0, prefetch: bool = True,
                 rendezvous_timeout: float = 300.0, abort_timeout: float = 10.0,
                 run_dir: Optional[str] = None, files_limit: int = 256 * 1024 * 1024,
                 storage: Optional[str] = None, time_budget: Optional[float] = None,
                 target: Optional[float] = None, release_idle: bool = False):
        self.direction = direction
        self.optimization_key = optimization_key
        self.es_interval = es_interval
        self.es_min = es_min
        self.max_failures = max_failures
        self.max_retries = max_retries
        self.hb_interval = hb_interval
        self.hb_timeout = hb_timeout
        self.stop_grace = stop_grace
        #: Allow queuing a trial ahead on a worker (off for launches that need every
        #: worker busy at once, such as barrier mode).
        self.prefetch = prefetch
        #: Tell idle workers to leave once no trial can reach them (the backend's
        #: ``release_idle``; see :meth:`~.assign.Assigner.release_idle`).
        self.release_idle = release_idle
        #: Gangs: seconds for all members to reach a rendezvous, and for an aborted
        #: worker to disconnect before it is given up on.
        self.rendezvous_timeout = rendezvous_timeout
        self.abort_timeout = abort_timeout
        #: The run directory, told to workers (trials find their TensorBoard folder there).
        self.run_dir = run_dir
        #: Bytes of files one trial (or one recorded checkpoint) may send to the driver,
        #: and the storage URI that workers not sharing the driver's disk upload to.
        self.files_limit, self.storage = files_limit, storage
        #: Stop conditions (see :mod:`.stopping`): seconds this session may take, and the
        #: metric value whose reaching ends the run.
        self.time_budget, self.target = time_budget, target
