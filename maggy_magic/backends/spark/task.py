"""What runs inside a Spark task: one worker loop, serving trials until the driver ends.

Imported on executors (from the installed package or from the zip the backend ships);
it needs nothing but the standard library, :mod:`maggy_magic`'s worker loop and, for the
task and barrier contexts, the ``pyspark`` that every executor has. The training function
arrives as bytes produced by ``pyspark.cloudpickle`` (the copy every executor has, so the
cluster needs no cloudpickle of its own) inside :class:`TaskSetup`, which travels in the
Spark task closure; only JSON travels over the driver's socket.
"""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import socket
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

#: ``exit`` values of a task's summary: the loop ended (driver said shutdown or dropped
#: the connection), nothing listened at the driver's address, the connection broke at once,
#: the driver could not be reached (no route, timeout, unknown host: ``reason`` says which).
DONE, REFUSED, BROKEN, UNREACHABLE = "done", "refused", "broken", "unreachable"
#: Connecting to the driver: seconds per attempt, and for all attempts. A task that cannot
#: reach it then ends (successfully, so that Spark does not run it again for minutes) with
#: exit ``unreachable``, and tells the backend at once through :attr:`TaskSetup.notices`.
CONNECT = {"timeout": 3.0, "budget": 15.0}


class ListParam:
    """Accumulator parameter of a list (what tasks tell the backend before they end)."""

    def zero(self, value: List[Any]) -> List[Any]:
        return []

    def addInPlace(self, first: List[Any], second: List[Any]) -> List[Any]:  # noqa: N802
        return first + second


class TaskSetup:
    """Everything a worker task needs, pickled into the Spark closure.

    ``payload`` is the cloudpickled training function, loaded lazily (after registering)
    so that a function that cannot be loaded is reported to the driver as a fatal error
    of the run rather than as a task failure that Spark would retry. ``gpus`` / ``cpus``:
    the run's request per task (None: none), which Spark's scheduling honours; the task
    takes the GPU addresses Spark gave it.
    """

    gpus: Optional[float] = None
    cpus: Optional[int] = None

    def __init__(self, host: str, port: int, secret: bytes, payload: bytes, version: str,
                 extras: Optional[Dict[str, Any]] = None, fingerprint: Optional[str] = None):
        self.host, self.port, self.secret = host, port, secret
        self.fingerprint = fingerprint  # the driver's pinned TLS certificate (or None)
        self.payload = payload
        self.version = version
        self.extras = dict(extras or {})
        #: A list accumulator (:class:`ListParam`) of the reasons tasks could not reach
        #: the driver, set by the backend; None: tell only through the summary.
        self.notices: Any = None

    def loader(self) -> Callable[[], Callable]:
        def load() -> Callable:
            forget_modules(getattr(self, "local_modules", ()))
            return pickle.loads(self.payload)

        return load


def forget_modules(names: Iterable[str]) -> None:
    """Drop the copies of the user's local modules ``names`` that this Python worker (Spark
    reuses them) imported for an earlier run: loading the function imports them again,
    from the newest zip of them, which Spark put first on ``sys.path``."""
    names = set(names)
    for name in [m for m in sys.modules if m.split(".")[0] in names]:
        del sys.modules[name]
    if names:
        importlib.invalidate_caches()


def serve(setup: TaskSetup, index: int, iterator: Iterator[Any]) -> Iterator[Dict[str, Any]]:
    """``mapPartitionsWithIndex`` body: partition ``index`` is worker ``str(index)``."""
    from pyspark import TaskContext

    yield _run(setup, index, TaskContext.get(), {})


def serve_barrier(setup: TaskSetup, iterator: Iterator[Any]) -> Iterator[Dict[str, Any]]:
    """``barrier().mapPartitions`` body: every worker knows its rank and its peers.

    The training function can take ``rank`` (= the worker id as an int), ``world_size``,
    ``peers`` (``host:port`` of every task's executor, in rank order) and
    ``barrier_context`` (the :class:`pyspark.BarrierTaskContext`, e.g. for
    ``allGather``). The workers register with the driver only after all of them reached
    the same barrier, so they start together.
    """
    from pyspark import BarrierTaskContext

    context = BarrierTaskContext.get()
    peers: List[str] = [info.address for info in context.getTaskInfos()]
    rank = context.partitionId()
    extras = {"rank": rank, "world_size": len(peers), "peers": peers,
              "barrier_context": context}
    context.barrier()
    yield _run(setup, rank, context, extras)


def task_devices(setup: TaskSetup, context: Any) -> Optional[List[str]]:
    """With a GPU request, the addresses Spark gave this task (None without one), set
    in ``CUDA_VISIBLE_DEVICES`` (and the rest of the worker's environment, see
    :func:`maggy_magic.resources.worker_env`) before the training function is loaded,
    so the frameworks it imports see exactly these devices."""
    from maggy_magic.resources import apply_env

    devices = None
    if getattr(setup, "gpus", None):
        given = context.resources() if context is not None else {}
        devices = list(given["gpu"].addresses) if "gpu" in given else []
    apply_env(devices, getattr(setup, "cpus", None))
    return devices


def _run(setup: TaskSetup, index: int, context: Any, extras: Dict[str, Any]) -> Dict[str, Any]:
    import maggy_magic
    from maggy_magic.worker import WorkerLoop

    if maggy_magic.__version__ != setup.version:
        raise RuntimeError(
            f"this executor imports maggy_magic {maggy_magic.__version__} from "
            f"{os.path.dirname(maggy_magic.__file__)} but the driver runs {setup.version}; "
            "install the same version on the cluster or let the backend ship it "
            "(backend option ship='always')")
    summary = {"worker": str(index), "attempt": context.attemptNumber() if context else 0,
               "pid": os.getpid(), "host": socket.gethostname(), "trials": 0, "exit": DONE}
    devices = task_devices(setup, context)
    if devices is not None:
        summary["devices"] = devices
    loop = WorkerLoop(setup.loader(), str(index), setup.host, setup.port, setup.secret,
                      on_driver_lost="return", extras=dict(setup.extras, **extras),
                      fingerprint=getattr(setup, "fingerprint", None), connect=CONNECT,
                      devices=devices)
    started = time.monotonic()
    try:
        summary["trials"] = loop.run()
    except OSError as exc:
        if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            # Nothing listens at the driver's address: the experiment is over (a task that
            # Spark started late) or the address is wrong; the backend tells them apart.
            summary["exit"] = REFUSED
        elif isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            summary["exit"] = BROKEN
        else:
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            summary["exit"] = UNREACHABLE
            summary["reason"] = (f"worker {index} on {socket.gethostname()} could not reach "
                                 f"{setup.host}:{setup.port} in "
                                 f"{time.monotonic() - started:.0f} s ({detail})")
            notices = getattr(setup, "notices", None)
            if notices is not None:
                notices.add([summary["reason"]])
    return summary
