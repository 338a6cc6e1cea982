"""The livy backend: run the whole experiment on a cluster's Livy session, shown here live.

:meth:`LivyBackend.run_experiment` is what :func:`maggy_magic.experiment.run` hands an
experiment to (a search, an ablation study, a dist run) when the backend runs experiments
elsewhere. It finds the session (:mod:`.session`), installs maggy_magic there if needed
(:mod:`.bootstrap`), uploads the serialised training function (with the config's objects:
the study, the model and dataset) and starts the same ``experiment.run`` with the spark
backend (barrier mode for a dist run) in a daemon thread of the session (:mod:`.remote`).
A poller thread (:mod:`.follow`) then runs a short poll statement every ``poll_interval``
seconds and hands the events since its cursor to the local listeners (dashboard, text
progress) and to a local record (a run directory whose journal holds every event that
arrived), exactly as a local driver would. :meth:`LivyBackend.run_cell` does the same for
a cell whose body runs in the session's namespace (:mod:`.remote_cell`); a ``resume=``
run keeps its id and continues its local record while the cluster resumes its journal;
:meth:`LivyBackend.attach` follows a run again from its first event (``%maggy attach``).
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
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ...errors import (
    ConfigError,
    ExperimentInterrupted,
    LivyError,
    LivySessionError,
    MaggyError,
    ResumeError,
    error_class,
)
from ...events import EventStream
from ...result import ExperimentResult
from ...runs import find_run
from ...store import RunStore, load_trials, new_run_id, read_journal
from . import bootstrap, statements
from .bundle import CELL_NAMES, config_objects, config_spec
from .follow import After, Poller, RemoteRunHandle
from .payload import big_payload_note
from .remote import POLL_EVENTS
from .session import LivyTarget, find_session, following, target_for
from .settings import LivySettings

#: Seconds to wait for the run's last poll after an interrupt or a stop on abandon.
INTERRUPT_WAIT = 30.0


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
        run_id, resumed = _run_id(config)
        spec = dict(config_spec(config, settings.remote_root, settings.spark_options),
                    run_id=run_id, resume=run_id if resumed else None,
                    buffer_events=settings.buffer_events)
        objects = config_objects(config)
        if objects:
            payload = _bundle(train_fn, objects)

        big_payload_note(train_fn, objects, len(payload))

        def send(target: LivyTarget, timeout: float) -> Dict[str, Any]:
            # the local modules of the function and of the objects' code (generators, model)
            bootstrap.ship_code(target, train_fn, timeout, also=_code_of(objects),
                                chunk=settings.chunk_bytes)
            bootstrap.upload(target, spec["run_id"], payload, timeout, "function upload",
                             settings.chunk_bytes)
            return bootstrap.call(target, statements.start(json.dumps(spec), source),
                                  timeout, "start")

        return self._drive(config, run_id, send, listeners, on_driver, wait, train_fn,
                           source, resumed)

    def run_cell(self, config: Any, magic: Dict[str, Any], cell: str, *,
                 listeners: Iterable[Callable] = (),
                 on_driver: Optional[Callable[[Any, Any], None]] = None,
                 wait: Optional[Callable[[Any], None]] = None) -> ExperimentResult:
        """Run a ``%%maggy`` cell whose body runs in the session's namespace (``--cell
        remote``): the body, the names in ``magic`` (``fn``, ``space``, ``study``,
        ``model``...) and the experiment are all found on the cluster
        (:mod:`.remote_cell`); ``config`` holds the line's options (checked here). The
        rest is :meth:`run_experiment`'s: the same dashboard, errors and result."""
        run_id, resumed = _run_id(config)
        spec = dict(config_spec(config, self.settings.remote_root, self.settings.spark_options,
                                from_cell=True),
                    run_id=run_id, resume=run_id if resumed else None, cell=cell,
                    buffer_events=self.settings.buffer_events,
                    magic={k: v for k, v in magic.items() if k in CELL_NAMES and v})

        def send(target: LivyTarget, timeout: float) -> Dict[str, Any]:
            answer = bootstrap.call(target, statements.start_cell(json.dumps(spec)), timeout,
                                    "start")
            printed = answer.pop("cell_output", "")
            if printed:
                print(printed)
            return answer

        return self._drive(config, run_id, send, listeners, on_driver, wait, None, cell,
                           resumed)

    def _drive(self, config: Any, run_id: str,
               send: Callable[[LivyTarget, float], Dict[str, Any]],
               listeners: Iterable[Callable], on_driver: Optional[Callable[[Any, Any], None]],
               wait: Optional[Callable[[Any], None]], train_fn: Optional[Callable],
               source: Optional[str], resumed: Optional[str] = None) -> ExperimentResult:
        """Find the session, install maggy_magic there, open the local record (the one of
        ``resumed``, continued), ``send`` the run (its reply is the first poll), then
        follow it until its result."""
        settings = self.settings
        target = find_session(settings)
        timeout = settings.statement_timeout
        bootstrap.prepare(target, settings.ship, timeout, settings.chunk_bytes)

        store = RunStore(resumed, resumed=True) if resumed else \
            RunStore.create(config.root, config.name, run_id)
        store.write_json("config.json", dict(
            config.to_dict(), backend="livy", livy_session=target.label,
            livy={"url": target.client.shown, "session_id": target.session_id}))
        if train_fn is not None:
            store.write_source(train_fn, cell=source)
        else:
            store.write_cell(source or "")
        poller, handle = self._poller(target, run_id, store, listeners)
        try:
            poller.absorb(send(target, timeout))
        except BaseException:
            store.close()
            raise
        print(f"maggy-magic: run {run_id} on {target.label}; its directory on the cluster: "
              f"{poller.remote_dir or '(not created)'}; local record: {store.path}")
        return self._follow(poller, handle, config, store, on_driver, wait)

    def attach(self, path: str, *, listeners: Iterable[Callable] = (),
               on_driver: Optional[Callable[[Any, Any], None]] = None,
               wait: Optional[Callable[[Any], None]] = None) -> ExperimentResult:
        """Follow again the cluster run whose local record is ``path`` (``%maggy attach``):
        the listeners get every event from the start (the session's buffer, and its
        journal for what fell out of the buffer), the local record gets the events it
        lacks; then as :meth:`run_experiment`, to the same result."""
        recorded = _recorded_config(path)
        coords = recorded.get("livy") or {}
        run_id = os.path.basename(os.path.normpath(path))
        if recorded.get("backend") != "livy" or not coords.get("url"):
            raise ConfigError(f"run {run_id} did not run on a Livy session ({path}); "
                              "%maggy show replays it")
        target = target_for(coords["url"], int(coords["session_id"]), self.settings)
        timeout = self.settings.statement_timeout
        first = bootstrap.call(target, statements.poll(run_id, 0, POLL_EVENTS), timeout,
                               "attach")
        if "unknown_run" in first:
            raise LivySessionError(f"{target.label} no longer has run {run_id} (it ended and "
                                   "its result was taken, or the session was restarted); "
                                   f"%maggy show {run_id} shows what the local record kept")
        store = RunStore(path, resumed=True)
        kept = max((int(e.get("seq", -1)) for e in read_journal(path)), default=-1)
        poller, handle = self._poller(target, run_id, store, listeners, kept)
        poller.absorb(first)
        print(f"maggy-magic: attached to run {run_id} on {target.label}; local record: "
              f"{store.path}")
        return self._follow(poller, handle, _Recorded(recorded, path), store, on_driver, wait)

    def _poller(self, target: LivyTarget, run_id: str, store: RunStore,
                listeners: Iterable[Callable], kept: int = -1) -> Tuple["Poller", Any]:
        events = EventStream(run_id)
        events.add(After(store, kept))
        for listener in listeners:
            events.add(listener)
        handle = RemoteRunHandle(events)
        return Poller(target, run_id, handle, events, self.settings, store), handle

    def _follow(self, poller: "Poller", handle: RemoteRunHandle, config: Any,
                store: RunStore, on_driver: Optional[Callable[[Any, Any], None]],
                wait: Optional[Callable[[Any], None]]) -> ExperimentResult:
        target, run_id, timeout = poller.target, poller.run_id, self.settings.statement_timeout
        interrupted = False
        if not handle.done:
            from ...experiment import supervise

            following(target, run_id, True)  # its session stays up if this process ends
            poller.start()
            try:
                interrupted = supervise(
                    handle, wait, INTERRUPT_WAIT,
                    before=None if on_driver is None else lambda: on_driver(handle, self))
            finally:
                poller.close()
                following(target, run_id, False)
        else:
            _forget(target, run_id, timeout)
        store.close()
        return self._outcome(poller, config, run_id, store, interrupted)

    def _outcome(self, poller: "Poller", config: Any, run_id: str, store: RunStore,
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
                raise _interrupted(result, poller.remote_dir, config)
            exc = cls(message)
            exc.result = result
            raise exc
        if interrupted:
            raise _interrupted(result, poller.remote_dir, config)
        return result


def _interrupted(result: ExperimentResult, remote_dir: Any, config: Any
                 ) -> ExperimentInterrupted:
    if getattr(config, "resumable", True):
        then = f"resume with resume={result.run_id!r} to run the rest"
    else:
        then = f"a {config.kind} run cannot be resumed; start it again"
    return ExperimentInterrupted(
        f"experiment interrupted after {result.num_finished} finished trial(s); {then} "
        f"({result.run_dir}; on the cluster: {remote_dir})", result)


def _run_id(config: Any) -> Tuple[str, Optional[str]]:
    """``(run id, local record to continue or None)``: a resumed run keeps its id and
    record (it must have run on Livy); otherwise the config's id or a new one."""
    if not config.resume:
        return config.run_id or new_run_id(), None
    path = find_run(config.root, str(config.resume), name=config.name)
    backend = _recorded_config(path).get("backend")
    if backend != "livy":
        raise ResumeError(f"run {os.path.basename(path)} ran with the {backend} backend, not on "
                          f"Livy; resume it with --backend {backend}")
    return os.path.basename(os.path.normpath(path)), path


def _recorded_config(path: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


class _Recorded:
    """What the end of a run needs of its config, read from its local record."""

    def __init__(self, recorded: Dict[str, Any], path: str):
        self.kind = recorded.get("kind", "hpo")
        self.name = recorded.get("name") or os.path.basename(os.path.dirname(path))
        self.direction = recorded.get("direction", "max")
        self.optimization_key = recorded.get("optimization_key", "metric")
        self.resumable = self.kind != "dist"
        if self.kind == "dist":
            from ...distributed.result import DistResult

            self.result_class = DistResult


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
