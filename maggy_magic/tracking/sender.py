"""The MLflow listener: a bounded queue of events and the thread that logs them.

:class:`Sender` is called with every event on the driver's thread (or the livy poller's)
and only queues it; when the queue (:data:`QUEUE_EVENTS`) is full the event is counted as
not logged, never waited for. Its thread imports mlflow, maps events to operations
(:class:`~.mapping.RunMapper`), merges each run's metrics, params and tags into
``MlflowClient.log_batch`` calls within MLflow's limits, and sends them in order.

A call that fails for a reason that may pass (no answer, a 5xx, 429) is retried after a
growing pause (:data:`RETRY_DELAYS`), with one warning the first time (at the end of the
experiment, once more after a second, then what is left is given up); meanwhile events
keep being mapped, up to :data:`PENDING_LIMIT` entities waiting. A call the server
refuses (a 4xx) is dropped and counted. :meth:`Sender.finish` adds the last operations
(the summary, the parent's end) and waits for them while the server takes them (no
longer than :data:`STALL_TIMEOUT` without a call that succeeds, :data:`FLUSH_LIMIT` in
all), then returns the report (:meth:`Sender.report`); the thread is a daemon and gives
up after that (an MLflow call in flight may still end later, but nothing is sent after it).
How long one call may take is MLflow's (``MLFLOW_HTTP_REQUEST_TIMEOUT`` and
``MLFLOW_HTTP_REQUEST_MAX_RETRIES``); the experiment never waits for it.
"""

from __future__ import annotations

import collections
import queue
import re
import sys
import threading
import time
from typing import Any, Deque, Dict, List, Optional

from ..logs import logger
from . import redact
from .batches import plan
from .mapping import PARENT, Op, RunMapper

#: Events queued for the thread; beyond it they are counted as not logged.
QUEUE_EVENTS = 20_000
#: What may wait for a failing server, in :meth:`~.mapping.Op.size` units (metrics,
#: params, tags, 256 bytes of an artifact): some tens of MB at most.
PENDING_LIMIT = 200_000
#: Seconds between tries of a call that failed; the last one repeats.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
#: The end of an experiment waits for what is still to be logged while the server takes
#: it: until no call has succeeded for STALL_TIMEOUT seconds, FLUSH_LIMIT at most.
STALL_TIMEOUT, FLUSH_LIMIT = 10.0, 120.0
_END = object()


class Sender:
    """Logs one experiment to the MLflow tracking server at ``uri`` (see the module
    docstring). Hand it events (its thread starts with the first), then call
    :meth:`finish` once."""

    def __init__(self, uri: str, experiment_name: str):
        self.uri, self.experiment_name = uri, experiment_name
        self.mapper = RunMapper()
        self._queue: "queue.Queue[Any]" = queue.Queue(QUEUE_EVENTS)
        self._lock = threading.RLock()
        self._pending: Deque[Op] = collections.deque()
        self._pending_size = 0
        self._run_ids: Dict[str, str] = {}
        self._failed_runs: set = set()
        self.experiment_id: Optional[str] = None
        #: What was not logged, by what it was: "events", "metrics", "params"...
        self.lost: Dict[str, int] = {}
        self.error: Optional[str] = None
        self._warned = self._started = False
        self._progress = time.monotonic()  # when the last call succeeded
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._work, name="maggy-mlflow", daemon=True)

    # -- the driver's side ----------------------------------------------------------------
    def __call__(self, event: Dict[str, Any]) -> None:
        if not self._started:  # the first event
            self._started = True
            self._progress = time.monotonic()
            self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self._count("events", 1)

    def finish(self, result: Any = None) -> Dict[str, Any]:
        """Queue the last operations (``result``'s summary and record, the parent run's
        end), wait for the thread while it makes progress (see the module docstring),
        print one line if anything was not logged, and return :meth:`report`."""
        if not self._started:  # no event came: nothing to log
            return self.report()
        summary = record = state = None
        if result is not None:
            from ..ui.summary import summary_html

            record, state = result.to_dict(), result.state
            try:
                summary = summary_html(result)
            except Exception as exc:  # noqa: BLE001 - the summary is a view of the result
                with self._lock:
                    self._count("artifacts", 1)
                    self._note(f"no summary: {type(exc).__name__}: {exc}")
        limit = time.monotonic() + FLUSH_LIMIT
        try:
            self._queue.put(("final", summary, record, state), timeout=STALL_TIMEOUT)
            self._queue.put(_END, timeout=STALL_TIMEOUT)
        except queue.Full:
            pass
        while self._thread.is_alive():
            until = min(limit, self._progress + STALL_TIMEOUT)
            if time.monotonic() >= until:
                break
            self._thread.join(until - time.monotonic())
        if self._thread.is_alive():
            self._abandoned.set()
            with self._lock:
                self._note(f"the tracking server took nothing for {STALL_TIMEOUT:g} s" if
                           time.monotonic() < limit else
                           f"the tracking server did not take everything in {FLUSH_LIMIT:g} s")
                self._count_ops(self._pending)
                self._pending.clear()
                self._pending_size = 0
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(item, dict):
                        self._count("events", 1)
        report = self.report()
        if report["not_logged"]:
            print(f"maggy-magic: MLflow ({report['uri']}): not logged: "
                  f"{report['not_logged']}; the run directory has everything",
                  file=sys.stderr)
        return report

    def report(self) -> Dict[str, Any]:
        """``uri`` (its password hidden), ``experiment_id`` and ``run_id`` (the parent
        run's, None if it was never created), ``lost`` (counts by what) and
        ``not_logged`` (one line, or None when everything was logged)."""
        with self._lock:
            lost = {k: v for k, v in self.lost.items() if v}
            line = None
            if lost:
                line = ", ".join(f"{v} {k}" for k, v in lost.items())
                if self.error:
                    line += f" ({self.error})"
            return {"uri": redact(self.uri), "experiment_id": self.experiment_id,
                    "run_id": self._run_ids.get(PARENT), "lost": lost, "not_logged": line}

    # -- the thread -----------------------------------------------------------------------
    def _work(self) -> None:
        try:
            client = self._client()
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the run
            with self._lock:
                self._note(_why(exc))
            self._warn()
            client = None
        self._progress = time.monotonic()
        failures, ending, last_try, next_try = 0, False, False, 0.0
        while not self._abandoned.is_set():
            if not ending:
                ending = self._take(max(0.0, next_try - time.monotonic()) if failures
                                    else None)
                if failures and not ending and time.monotonic() < next_try:
                    continue  # events keep being mapped; the server gets its pause
            if client is None:
                with self._lock:
                    self._count_ops(self._pending)
                    self._pending.clear()
                    self._pending_size = 0
                if ending:
                    return
                continue
            sent = self._send(client)
            failures = 0 if sent else failures + 1
            if failures:
                next_try = time.monotonic() + RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]
            with self._lock:
                if ending and (not self._pending or last_try):
                    self._count_ops(self._pending)  # the server still refuses: give up
                    self._pending.clear()
                    return
            if ending and not sent:  # nothing more comes: one more try, then the report
                last_try = True
                self._abandoned.wait(RETRY_DELAYS[0])

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def _take(self, wait: Optional[float]) -> bool:
        """Map the queued events (waiting up to ``wait`` s for one, forever if None) into
        pending operations. True once the end was taken."""
        try:
            items = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return False
        while len(items) < 1000 and items[-1] is not _END:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        ops: List[Op] = []
        for item in items:
            if item is _END:
                continue
            try:
                ops += self.mapper.final(*item[1:]) if isinstance(item, tuple) \
                    else self.mapper.feed(item)
            except Exception as exc:  # noqa: BLE001 - one odd event costs only itself
                with self._lock:
                    self._count("events", 1)
                    self._note(f"an event could not be read: {type(exc).__name__}: {exc}")
        with self._lock:
            for op in ops:
                if op.kind in ("start", "end") or \
                        self._pending_size + op.size() <= PENDING_LIMIT:
                    self._pending.append(op)
                    self._pending_size += op.size()
                else:
                    self._count_ops([op])
                    self._note("too much was waiting for the tracking server")
        return items[-1] is _END

    def _send(self, client: Any) -> bool:
        """Send the pending operations in order, each taken off once done; False when a
        call failed and may be retried (it and the rest stay pending)."""
        with self._lock:
            self._pending = collections.deque(plan(list(self._pending)))
        while True:
            with self._lock:
                if not self._pending or self._abandoned.is_set():
                    return True
                op = self._pending[0]
            try:
                self._do(client, op)
            except Exception as exc:  # noqa: BLE001 - tracking must never fail the run
                with self._lock:
                    self._note(_why(exc))
                    if _retryable(exc):
                        retry = True
                    else:
                        retry = False
                        self._count_ops([op])
                        if op.kind == "start":
                            self._failed_runs.add(op.key)
                if retry:
                    self._warn()
                    return False
            self._progress = time.monotonic()
            with self._lock:
                if self._pending and self._pending[0] is op:
                    self._pending.popleft()
                    self._pending_size -= op.size()

    def _do(self, client: Any, op: Op) -> None:
        f = op.fields
        if op.key in self._failed_runs:
            raise _Refused(f"run {op.key or 'of the experiment'} could not be created")
        if op.kind == "start":
            if self.experiment_id is None:
                self.experiment_id = _experiment(client, self.experiment_name)
            tags = dict(f["tags"])
            if f["parent"] is not None:
                if f["parent"] not in self._run_ids:
                    raise _Refused("the experiment's run could not be created")
                tags["mlflow.parentRunId"] = self._run_ids[f["parent"]]
            run = client.create_run(self.experiment_id, start_time=f["time"], tags=tags,
                                    run_name=f["name"])
            self._run_ids[op.key] = run.info.run_id
            return
        run_id = self._run_ids.get(op.key)
        if run_id is None:
            raise _Refused(f"no run for trial {op.key}")
        if op.kind == "log":
            from mlflow.entities import Metric, Param, RunTag

            client.log_batch(
                run_id, metrics=[Metric(k, v, ms, step) for k, v, ms, step in f["metrics"]],
                params=[Param(k, v) for k, v in f["params"].items()],
                tags=[RunTag(k, v) for k, v in f["tags"].items()], synchronous=True)
        elif op.kind == "text":
            client.log_text(run_id, f["text"], f["path"])
        elif op.kind == "end":
            _terminate(client, run_id, f["status"], f["time"] or int(time.time() * 1000))

    # -- accounting -----------------------------------------------------------------------
    def _count(self, what: str, n: int) -> None:
        if n:
            self.lost[what] = self.lost.get(what, 0) + n

    def _count_ops(self, ops: List[Op]) -> None:
        for op in ops:
            f = op.fields
            if op.kind == "log":
                self._count("metric values", len(f["metrics"]))
                self._count("params", len(f["params"]))
                self._count("tags", len(f["tags"]))
            elif op.kind == "text":
                self._count("artifacts", 1)
            elif op.kind == "start":
                self._count("runs", 1)

    def _note(self, why: str) -> None:
        self.error = why

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            logger().warning("maggy-magic: MLflow (%s) is not taking the experiment's logs "
                             "(%s); the experiment goes on, and logging is retried",
                             redact(self.uri), self.error)


class _Refused(Exception):
    """An operation that cannot be done (its run was never created)."""


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # noqa: BLE001 - created meanwhile by someone else
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _terminate(client: Any, run_id: str, status: str, end_ms: int) -> None:
    """End a run as ``set_terminated`` does, without the line it prints for each run
    (its store's ``update_run_info``, where the client has one)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not hasattr(store, "update_run_info"):
        client.set_terminated(run_id, status=status, end_time=end_ms)
        return
    from mlflow.entities import RunStatus

    store.update_run_info(run_id, RunStatus.from_string(status), end_ms, None)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _Refused):
        return False
    status = getattr(exc, "get_http_status_code", None)
    code = status() if callable(status) else 500
    return code >= 500 or code == 429


def _why(exc: BaseException) -> str:
    """One line of ``exc``, any password of a URL in it hidden."""
    text = re.sub(r"://([^:/@\s]+):[^@/\s]+@", r"://\1:***@", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text[:300]}"
