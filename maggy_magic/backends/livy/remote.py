"""The Livy side of a run: start the experiment in a daemon thread, answer polls, stop it.

Runs inside the Livy session's Python (the Spark driver on the cluster), called by short
statements that :mod:`.statements` writes. The experiment is the SAME
:func:`maggy_magic.experiment.run` as everywhere, with the spark backend on the session's
SparkSession; its events go into a bounded ring buffer (:class:`EventBuffer`) that polls
read from a cursor. A poll whose cursor fell out of the buffer gets a ``lost`` range,
never a silent hole. Every function takes the session's global namespace, where runs
live between statements (``namespace["_maggy_livy"]``), and returns a framed JSON reply
(:func:`~.bundle.reply`) for the statement to print.
"""

from __future__ import annotations

import base64
import collections
import io
import itertools
import json
import pickle
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

from .bundle import reply

#: Name of the session global that holds uploads and runs.
STATE_KEY = "_maggy_livy"
#: Events the ring buffer keeps (older ones are reported lost to a poll that wants them).
BUFFER_EVENTS = 20000
#: Events one poll returns at most (the next poll continues from its cursor).
POLL_EVENTS = 2000
#: How long the start statement waits for ``run_started`` and the workers' launch (or an
#: early failure).
START_WAIT = 60.0


def session_state(namespace: Dict[str, Any]) -> Dict[str, Any]:
    """The session's ``{"uploads": {key: [base64 chunks]}, "runs": {run_id: RemoteRun}}``."""
    return namespace.setdefault(STATE_KEY, {"uploads": {}, "runs": {}})


class EventBuffer:
    """A bounded, thread-safe list of events addressed by a cursor (events ever added).

    ``__call__`` is an event listener (the driver's thread); ``since`` is read by polls.
    """

    def __init__(self, capacity: int = BUFFER_EVENTS):
        self._events: collections.deque = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.total = 0

    def __call__(self, event: Dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)
            self.total += 1

    def since(self, cursor: int, limit: int = POLL_EVENTS
              ) -> Tuple[List[Dict[str, Any]], Optional[List[int]], int]:
        """``(events, lost, next_cursor)``: up to ``limit`` events from ``cursor`` on;
        ``lost`` is ``[first, end)`` of the cursors no longer held, else None."""
        with self._lock:
            first = self.total - len(self._events)
            lost = None
            if cursor < first:
                lost, cursor = [cursor, first], first
            start = cursor - first
            events = list(itertools.islice(self._events, start, start + limit))
            return events, lost, cursor + len(events)


class RemoteRun:
    """One experiment running in a daemon thread of the session's Python."""

    def __init__(self, config: Any, train_fn: Any, source: Optional[str] = None,
                 capacity: int = BUFFER_EVENTS):
        self.config, self.train_fn, self.source = config, train_fn, source
        self.buffer = EventBuffer(capacity)
        self.run_dir: Optional[str] = None
        self.finished = 0
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[Dict[str, str]] = None
        self._driver: Any = None
        self._pending: Optional[Tuple[str, str]] = None
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._launched = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maggy-livy-run", daemon=True)

    def start(self, wait: float = START_WAIT) -> None:
        """Start the run; return once it has announced itself and the backend has launched
        its workers (or it ended early).

        Launching reads the local modules' source with ``ast`` (what to ship), and on
        CPython 3.11 ``ast`` keeps one recursion counter per interpreter: the REPL parsing
        a poll statement at the same time can make either parse fail ("AST constructor
        recursion depth mismatch"). The start statement holds the REPL until then."""
        deadline = time.monotonic() + wait
        self._thread.start()
        self._started.wait(wait)
        self._launched.wait(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        from ...experiment import run

        try:
            result = run(self.train_fn, self.config, listeners=[self._listen],
                         on_driver=self._on_driver, source=self.source)
            self.result = result.to_dict()
        except BaseException as exc:  # noqa: BLE001 - the client gets every ending
            partial = getattr(exc, "result", None)
            self.result = partial.to_dict() if partial is not None else None
            message = str(exc).strip().splitlines()
            self.error = {"type": type(exc).__name__,
                          "message": message[0] if message else type(exc).__name__,
                          "traceback": "" if _is_user_error(exc) else traceback.format_exc()}
        finally:
            self._done.set()
            self._started.set()
            self._launched.set()

    def _listen(self, event: Dict[str, Any]) -> None:
        self.buffer(event)
        if event["type"] == "trial_finished":
            self.finished += 1
        elif event["type"] == "run_started":
            self.run_dir = event.get("run_dir")
            self._started.set()

    @property
    def going(self) -> bool:
        return not self._done.is_set()

    def describe(self, run_id: str) -> Dict[str, Any]:
        """What ``%maggy list`` shows of this run."""
        return {"run_id": run_id, "name": getattr(self.config, "name", None),
                "kind": getattr(self.config, "kind", None), "going": self.going,
                "finished": self.finished, "events": self.buffer.total,
                "run_dir": self.run_dir}

    def _on_driver(self, driver: Any, backend: Any) -> None:
        launch = backend.start

        def start_then_tell(*args: Any, **kwargs: Any) -> Any:
            try:
                return launch(*args, **kwargs)
            finally:
                self._launched.set()

        backend.start = start_then_tell  # this run's backend instance only
        with self._lock:
            self._driver = driver
            pending, self._pending = self._pending, None
        if pending is not None:
            self._apply(driver, *pending)

    def request(self, mode: str, reason: str) -> None:
        """``mode`` ``stop`` (graceful) or ``interrupt`` (end now, like Ctrl-C)."""
        with self._lock:
            driver = self._driver
            if driver is None:
                self._pending = (mode, reason)
                return
        self._apply(driver, mode, reason)

    @staticmethod
    def _apply(driver: Any, mode: str, reason: str) -> None:
        (driver.interrupt if mode == "interrupt" else driver.request_stop)(reason)

    def poll(self, cursor: int, limit: int = POLL_EVENTS) -> Dict[str, Any]:
        """Events since ``cursor``; once the run is over and every event was returned,
        ``done`` with the result dict (and the error, if it ended with one)."""
        done = self._done.is_set()  # read first: the events taken below are then all
        events, lost, cursor = self.buffer.since(cursor, limit)
        done = done and cursor >= self.buffer.total
        return {"events": events, "lost": lost, "cursor": cursor, "done": done,
                "result": self.result if done else None, "error": self.error if done else None}


def _is_user_error(exc: BaseException) -> bool:
    from ...errors import MaggyError

    return isinstance(exc, MaggyError)


class _Unpickler(pickle.Unpickler):
    """Reads cloudpickle output where only pyspark's copy of cloudpickle is installed."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "cloudpickle" or module.startswith("cloudpickle."):
            try:
                __import__(module)
            except ImportError:
                module = "pyspark." + module
        return super().find_class(module, name)


def load_function(payload: bytes) -> Any:
    """The training function (or, with objects, the ``{"function", "objects"}`` bundle)
    from the bytes the kernel serialised (the launch channel: the user's own
    authenticated Livy session, like a Spark task closure)."""
    return _Unpickler(io.BytesIO(payload)).load()


def spark_options(spec: Dict[str, Any], namespace: Dict[str, Any]) -> Dict[str, Any]:
    """The spec's spark backend options, on the session's SparkSession unless they name
    another one."""
    options = dict(spec.get("backend_options") or {})
    if "spark" not in options and "master" not in options and \
            namespace.get("spark") is not None:
        options["spark"] = namespace["spark"]
    return options


def build_config(spec: Dict[str, Any], namespace: Dict[str, Any],
                 objects: Optional[Dict[str, Any]] = None) -> Any:
    """The config of ``spec["kind"]`` from its JSON form and the ``objects`` that came
    with the function, on the session's SparkSession."""
    kwargs = dict(spec)
    kind = kwargs.pop("kind", "hpo")
    framework = kwargs.pop("framework", None)
    kwargs.pop("objects", None)
    kwargs.update(objects or {})
    kwargs["backend_options"] = spark_options(spec, namespace)
    if kind == "ablation":
        from ...config import AblationConfig

        return AblationConfig(**kwargs)
    if kind == "dist":
        from ...distributed.config import TfDistributedConfig, TorchDistributedConfig

        classes = {"torch": TorchDistributedConfig, "tf": TfDistributedConfig}
        if framework not in classes:
            from ...errors import ConfigError

            raise ConfigError(f"unknown framework {framework!r} for a dist run")
        return classes[framework](kwargs.pop("model"), kwargs.pop("dataset"), **kwargs)
    from ...config import HyperparameterOptConfig
    from ...searchspace import Searchspace

    kwargs["searchspace"] = Searchspace.from_dict(kwargs.pop("searchspace"))
    return HyperparameterOptConfig(**kwargs)


def _refused(exc: BaseException) -> Dict[str, Any]:
    """A poll-like final answer for a run refused before it started."""
    message = str(exc).strip().splitlines()
    return {"events": [], "lost": None, "cursor": 0, "done": True, "result": None,
            "error": {"type": type(exc).__name__,
                      "message": message[0] if message else type(exc).__name__,
                      "traceback": "" if _is_user_error(exc) else traceback.format_exc()}}


# -- what the statements call --------------------------------------------------------------
def start(namespace: Dict[str, Any], spec_json: str, source: Optional[str] = None) -> str:
    """Start the run that ``spec_json`` describes, with the function (and the config's
    objects) uploaded under its run id; reply with the first poll (``run_started``, or
    the early failure: a config this side refuses is that failure, not a crash)."""
    state = session_state(namespace)
    spec = json.loads(spec_json)
    run_id = spec["run_id"]
    payload = base64.b64decode("".join(state["uploads"].pop(run_id)))
    capacity = int(spec.pop("buffer_events", None) or BUFFER_EVENTS)
    going = _still_going(state, run_id)
    if going is not None:
        return going
    loaded = load_function(payload)
    train_fn, objects = loaded, None
    if spec.get("objects"):
        train_fn, objects = loaded["function"], loaded["objects"]
    try:
        config = build_config(spec, namespace, objects)
    except Exception as exc:  # noqa: BLE001 - the client gets it as its one-line error
        return reply(_refused(exc))
    run = RemoteRun(config, train_fn, source, capacity)
    state["runs"][run_id] = run
    run.start()
    return reply(run.poll(0))


def _still_going(state: Dict[str, Any], run_id: str) -> Optional[str]:
    """A refusal when ``run_id`` still runs in this session (resumed while it goes on)."""
    run = state["runs"].get(run_id)
    if run is None or not run.going:
        return None
    from ...errors import ResumeError

    return reply(_refused(ResumeError(
        f"run {run_id} is still going on this Livy session; re-attach to it with "
        f"%maggy attach {run_id} instead of resuming it")))


def start_cell(namespace: Dict[str, Any], spec_json: str) -> str:
    """Run the cell of ``spec_json`` in ``namespace`` (:mod:`.remote_cell`) and start the
    experiment it describes; reply like :func:`start`, with what the cell printed
    (``cell_output``). The cell's errors and the builders' are the early failure."""
    from .remote_cell import build

    spec = json.loads(spec_json)
    capacity = int(spec.pop("buffer_events", None) or BUFFER_EVENTS)
    going = _still_going(session_state(namespace), spec["run_id"])
    if going is not None:
        return going
    try:
        config, train_fn, printed = build(spec, namespace, spark_options(spec, namespace))
    except Exception as exc:  # noqa: BLE001 - the client gets it as its one-line error
        return reply(_refused(exc))
    run = RemoteRun(config, train_fn, spec.get("cell"), capacity)
    session_state(namespace)["runs"][spec["run_id"]] = run
    run.start()
    return reply(dict(run.poll(0), cell_output=printed))


def poll(namespace: Dict[str, Any], run_id: str, cursor: int,
         limit: int = POLL_EVENTS) -> str:
    """Reply with the events of ``run_id`` since ``cursor`` (see :meth:`RemoteRun.poll`)."""
    run = session_state(namespace)["runs"].get(run_id)
    if run is None:
        return reply({"unknown_run": run_id})
    return reply(run.poll(cursor, limit))


def stop(namespace: Dict[str, Any], run_id: str, mode: str, reason: str) -> str:
    """Ask ``run_id`` to stop (``mode`` ``stop`` or ``interrupt``); reply with a poll-like
    acknowledgement."""
    run = session_state(namespace)["runs"].get(run_id)
    if run is None:
        return reply({"unknown_run": run_id})
    run.request(mode, reason)
    return reply({"requested": mode})


def runs(namespace: Dict[str, Any]) -> str:
    """Reply ``{runs: [...]}``: every run this session holds (:meth:`RemoteRun.describe`)."""
    held = session_state(namespace)["runs"]
    return reply({"runs": [run.describe(run_id) for run_id, run in list(held.items())]})


def replay(namespace: Dict[str, Any], run_id: str, first: int, end: int,
           limit: int = POLL_EVENTS) -> str:
    """Reply ``{events}``: up to ``limit`` events of ``run_id`` with ``first <= seq < end``
    from its journal on this side (what fell out of the buffer before a poll took it)."""
    from ...store import read_journal

    run = session_state(namespace)["runs"].get(run_id)
    if run is None or run.run_dir is None:
        return reply({"unknown_run": run_id})
    found: List[Dict[str, Any]] = []
    for event in read_journal(run.run_dir):
        if first <= int(event.get("seq", -1)) < end:
            found.append(event)
            if len(found) >= limit:
                break
    return reply({"events": found})


def forget(namespace: Dict[str, Any], run_id: str) -> str:
    """Drop a finished run's buffer (the client has its result)."""
    session_state(namespace)["runs"].pop(run_id, None)
    return reply({"forgotten": run_id})
