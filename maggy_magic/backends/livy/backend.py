"""The livy backend: run the whole experiment on a cluster's Livy session, shown here live.

:meth:`LivyBackend.run_experiment` is what :func:`maggy_magic.experiment.run` hands an
experiment to (a search, an ablation study, a dist run) when the backend runs experiments
elsewhere. It finds the session (:mod:`.session`), installs maggy_magic there if needed
(:mod:`.bootstrap`), uploads the serialised training function (with the config's objects:
the study, the model and dataset) and starts the same ``experiment.run`` with the spark
backend (barrier mode for a dist run) in a daemon thread of the session (:mod:`.remote`).
A poller thread then runs a short poll statement every ``poll_interval`` seconds and
hands the events since its cursor to the local listeners (dashboard, text progress) and
to a local record (a run directory whose journal holds every event that arrived), exactly
as a local driver would.
:class:`RemoteRunHandle` stands in for the driver: ``request_stop`` / ``interrupt`` become
a stop statement, ``wait`` / ``done`` follow the poller. The result comes back with the
last poll (JSON, never a pickle) and is rebuilt into the config's result class (an
:class:`~maggy_magic.result.ExperimentResult`, a dist run's ``DistResult``).

The cluster cannot connect to this kernel, so everything flows through statements the
kernel sends; if the session dies or Livy fails mid-run, the error is one line and the
result holds the trials of the local record.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional

from ...errors import ExperimentInterrupted, LivyError, LivySessionError, MaggyError, error_class
from ...events import EventStream
from ...result import ExperimentResult
from ...store import RunStore, load_trials, new_run_id
from . import bootstrap, statements
from .bundle import config_objects, config_spec
from .remote import POLL_EVENTS
from .session import LivyTarget, find_session
from .settings import LivySettings

#: Seconds to wait for the run's last poll after an interrupt or a stop on abandon.
INTERRUPT_WAIT = 30.0


class RemoteRunHandle:
    """The local stand-in of the cluster's driver: what displays and magics call.

    ``events.run_id`` names the run; ``request_stop`` and ``interrupt`` are thread-safe
    and return at once (the poller sends the statement); ``wait`` and ``done`` say when
    the last poll arrived (or the poller failed).
    """

    def __init__(self, events: EventStream):
        self.events = events
        self.requests: List[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()

    def request_stop(self, reason: str = "stop requested") -> None:
        self._request("stop", reason)

    def interrupt(self, reason: str = "interrupted") -> None:
        self._request("interrupt", reason)

    def _request(self, mode: str, reason: str) -> None:
        with self._lock:
            self.requests.append((mode, reason))
        self._wake.set()

    def take_requests(self) -> List[tuple]:
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    def pause(self, seconds: float) -> None:
        """Wait up to ``seconds`` (less when a stop is requested)."""
        self._wake.wait(seconds)
        self._wake.clear()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def finish(self) -> None:
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()


class LivyBackend:
    """Runs experiments on a Livy session (options: see :mod:`.settings`)."""

    name = "livy"

    def __init__(self, **options: Any):
        self.settings = LivySettings(**options)

    # -- the run ----------------------------------------------------------------------------
    def run_experiment(self, config: Any, payload: bytes, *, train_fn: Callable,
                       listeners: Iterable[Callable] = (),
                       on_driver: Optional[Callable[[Any, Any], None]] = None,
                       wait: Optional[Callable[[Any], None]] = None,
                       source: Optional[str] = None) -> ExperimentResult:
        """Run ``config`` (a search, an ablation study, a dist run) on the cluster; see
        the module docstring. ``payload`` is the function the workers would call here; the
        cluster gets ``train_fn`` itself (its experiment wraps it again), with the config's
        objects when it has any."""
        settings = self.settings
        run_id = config.run_id or new_run_id()
        spec = dict(config_spec(config, settings.remote_root, settings.spark_options),
                    run_id=run_id)
        objects = config_objects(config)
        if objects:
            payload = _bundle(train_fn, objects)
        target = find_session(settings)
        timeout = settings.statement_timeout
        bootstrap.prepare(target, settings.ship, timeout)
        # the local modules of the function and of the objects' code (generators, model)
        bootstrap.ship_code(target, train_fn, timeout, also=_code_of(objects))

        store = RunStore.create(config.root, config.name, run_id)
        store.write_json("config.json", dict(config.to_dict(), backend="livy",
                                             livy_session=target.label))
        store.write_source(train_fn, cell=source)
        events = EventStream(run_id)
        events.add(store)
        for listener in listeners:
            events.add(listener)
        handle = RemoteRunHandle(events)
        poller = _Poller(target, run_id, handle, events, settings, store)
        try:
            bootstrap.upload(target, run_id, payload, timeout, "function upload")
            first = bootstrap.call(target, statements.start(json.dumps(spec), source),
                                   timeout, "start")
            poller.absorb(first)
        except BaseException:
            store.close()
            raise
        remote_dir = poller.remote_dir
        print(f"maggy-magic: run {run_id} on {target.label}; its directory on the cluster: "
              f"{remote_dir or '(not created)'}; local record: {store.path}")
        interrupted = False
        if not handle.done:
            from ...experiment import supervise

            poller.start()
            try:
                interrupted = supervise(
                    handle, wait, INTERRUPT_WAIT,
                    before=None if on_driver is None else lambda: on_driver(handle, self))
            finally:
                poller.close()
        else:
            _forget(target, run_id, timeout)
        store.close()
        return self._outcome(poller, config, run_id, store, interrupted)

    def _outcome(self, poller: "_Poller", config: Any, run_id: str, store: RunStore,
                 interrupted: bool) -> ExperimentResult:
        final = poller.final
        if final is not None and final.get("result") is not None:
            result = _rebuild(final["result"], store.path,
                              getattr(config, "result_class", ExperimentResult))
        else:
            refused = (final or {}).get("error") or {}  # ended before it had a result
            if refused.get("type") == "ExperimentInterrupted":
                refused = {}
            result = _partial(store.path, config, run_id,
                              poller.failure or refused.get("message"))
        result.remote_run_dir = poller.remote_dir  # type: ignore[attr-defined]
        store.write_json("result.json", dict(result.to_dict(),
                                              remote_run_dir=poller.remote_dir))
        from ... import experiment

        experiment.record_run(result)
        if poller.failure is not None:
            poller.failure.result = result  # type: ignore[attr-defined]
            raise poller.failure
        error = (final or {}).get("error")
        if error:
            message = error.get("message") or "the experiment failed on the cluster"
            cls = error_class(error.get("type"))
            if not issubclass(cls, MaggyError) or cls.__name__ != error.get("type"):
                message = f"{error.get('type')}: {message}"
            if issubclass(cls, ExperimentInterrupted) or (interrupted and final is None):
                raise _interrupted(result, poller.remote_dir)
            exc = cls(message)
            exc.result = result
            raise exc
        if interrupted:
            raise _interrupted(result, poller.remote_dir)
        return result


def _interrupted(result: ExperimentResult, remote_dir: Any) -> ExperimentInterrupted:
    return ExperimentInterrupted(
        f"experiment interrupted after {result.num_finished} finished trial(s); the livy "
        f"backend cannot resume it (run directory on the cluster: {remote_dir})", result)


class _Poller:
    """Runs the poll statements and replays their events (one thread, its own)."""

    def __init__(self, target: LivyTarget, run_id: str, handle: RemoteRunHandle,
                 events: EventStream, settings: LivySettings, store: RunStore):
        self.target, self.run_id, self.handle = target, run_id, handle
        self.events, self.settings, self.store = events, settings, store
        self.cursor = 0
        self.last_seq = -1
        self.final: Optional[Dict[str, Any]] = None
        self.failure: Optional[LivyError] = None
        self.remote_dir: Optional[str] = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="maggy-livy-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop delivering events (the local record is about to close)."""
        with self._lock:
            self._closed = True

    def _loop(self) -> None:
        timeout = self.settings.statement_timeout
        try:
            while self.final is None:
                for mode, reason in self.handle.take_requests():
                    bootstrap.call(self.target, statements.stop(self.run_id, mode, reason),
                                   timeout, "stop")
                answer = bootstrap.call(self.target, statements.poll(self.run_id, self.cursor,
                                                                     POLL_EVENTS),
                                        timeout, "poll")
                self.absorb(answer)
                if self.final is None:
                    self.handle.pause(self.settings.poll_interval)
            bootstrap.call(self.target, statements.forget(self.run_id), timeout, "cleanup")
        except LivyError as exc:
            self.failure = self.failure or exc
        except Exception as exc:  # noqa: BLE001 - the run must end in a known state
            self.failure = LivyError(f"polling the Livy session failed: "
                                     f"{type(exc).__name__}: {exc}")
            print(traceback.format_exc(), file=sys.stderr)
        finally:
            self.handle.finish()

    def absorb(self, answer: Dict[str, Any]) -> None:
        """Deliver one poll's events; note the end of the run."""
        if "unknown_run" in answer:
            raise LivySessionError(f"{self.target.label} no longer knows run {self.run_id} "
                                   "(was the session restarted?); the local record keeps "
                                   "what arrived")
        lost = answer.get("lost")
        if lost:
            self._deliver({"type": "events_lost", "run": self.run_id, "seq": self.last_seq,
                           "t": time.time(), "first": lost[0], "end": lost[1],
                           "count": lost[1] - lost[0],
                           "reason": "the cluster's event buffer overflowed between polls"})
        for event in answer.get("events") or []:
            if event.get("type") == "run_started":
                self.remote_dir = event.get("run_dir")
            self.last_seq = event.get("seq", self.last_seq)
            self._deliver(event)
        self.cursor = int(answer.get("cursor", self.cursor))
        self.store.flush()
        if answer.get("done"):
            self.final = answer
            self.handle.finish()

    def _deliver(self, event: Dict[str, Any]) -> None:
        with self._lock:
            if not self._closed:
                self.events.deliver(event)


def _bundle(train_fn: Callable, objects: Dict[str, Any]) -> bytes:
    """``train_fn`` and the config's ``objects`` as the cloudpickle bytes the cluster reads
    (:func:`.remote.start`); what cannot be pickled is a one-line error."""
    from ...errors import TrainFunctionError
    from ...portable import cloudpickle_module

    try:
        return cloudpickle_module().dumps({"function": train_fn, "objects": objects})
    except Exception as exc:  # noqa: BLE001 - any pickling failure is reported the same way
        for key, value in objects.items():
            try:
                cloudpickle_module().dumps(value)
            except Exception as inner:  # noqa: BLE001
                problem = (str(inner).strip().splitlines() or [""])[0]
                raise TrainFunctionError(
                    f"the config's {key} (a {type(value).__name__}) cannot be sent to the "
                    f"cluster ({type(inner).__name__}: {problem}); build what it cannot "
                    "pickle inside its functions") from None
        problem = (str(exc).strip().splitlines() or [""])[0]
        raise TrainFunctionError(f"the training function cannot be sent to the cluster "
                                 f"({type(exc).__name__}: {problem})") from None


def _code_of(objects: Dict[str, Any]) -> List[Any]:
    """What in ``objects`` may need local modules: a study's generators, an ablator, a
    dist run's model and (each part of) its dataset."""
    found: List[Any] = []
    for key, value in objects.items():
        if key == "ablation_study":
            found.extend(value.generators())
        elif key == "dataset" and isinstance(value, (list, tuple)):
            found.extend(value)
        elif value is not None:
            found.append(value)
    return found


def _rebuild(data: Dict[str, Any], local_dir: str, kind: type = ExperimentResult
             ) -> ExperimentResult:
    """The cluster's result dict as a result of the config's class (an ExperimentResult,
    a DistResult) whose run_dir is the local record."""
    return kind(
        name=data["name"], run_id=data["run_id"], run_dir=local_dir, state=data["state"],
        direction=data["direction"], optimization_key=data["optimization_key"],
        trials=list(data.get("trials") or []), error=data.get("error"),
        rejected_frames=int((data.get("counts") or {}).get("rejected_frames", 0)),
        searchspace=data.get("searchspace"))


def _forget(target: LivyTarget, run_id: str, timeout: float) -> None:
    """Drop a run that ended at once from the session (best effort)."""
    try:
        bootstrap.call(target, statements.forget(run_id), timeout, "cleanup")
    except LivyError:
        pass


def _partial(local_dir: str, config: Any, run_id: str, failure: Any) -> ExperimentResult:
    """What the local record holds when no result came back (the session died...)."""
    trials, _, _ = load_trials(local_dir)
    return getattr(config, "result_class", ExperimentResult).from_trials(
        [t for t in trials.values() if t.start is not None], name=config.name,
        run_id=run_id, run_dir=local_dir, state="failed" if failure else "interrupted",
        direction=config.direction, optimization_key=config.optimization_key,
        error=str(failure) if failure else None,
        searchspace=config.to_dict().get("searchspace"))
