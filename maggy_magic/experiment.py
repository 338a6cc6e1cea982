"""The Python API: ``experiment.lagom(train_fn, config)`` runs an experiment and returns
its :class:`~maggy_magic.result.ExperimentResult`.

This module wires the pieces for one run and nothing more: it validates the config and
the training function before anything starts, opens (or resumes) the run directory,
starts the driver's loop in a thread and the backend's workers, waits, and turns the end
state into a result or a :class:`~maggy_magic.errors.MaggyError`. The calling thread only
waits, so Ctrl-C (KeyboardInterrupt) lands here and is turned into a clean interrupt.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Callable, Iterable, Optional

from .backends import get_backend
from .driver import Driver, DriverSettings
from .driver.address import driver_address
from .earlystop import get_earlystop
from .errors import (
    ExperimentInterrupted,
    MaggyError,
    ResumeError,
    RunStoreError,
    error_class,
)
from .events import EventStream, Listener
from .logs import logger
from .portable import serialize
from .resources import Resources
from .result import ExperimentResult
from .runs import find_run
from .store import RunStore, load_trials
from .tracking import start as start_tracking

#: Seconds the workers get to leave after an interrupt before they are killed.
INTERRUPT_GRACE = 3.0


def lagom(train_fn: Callable, config: Any, *, listeners: Iterable[Listener] = ()
          ) -> ExperimentResult:
    """Run ``train_fn`` as the experiment ``config`` describes (Maggy's entry point)."""
    return run(train_fn, config, listeners=listeners)


def run(train_fn: Callable, config: Any, *, listeners: Iterable[Listener] = (),
        on_driver: Optional[Callable[[Driver, Any], None]] = None,
        wait: Optional[Callable[[Driver], None]] = None,
        source: Optional[str] = None) -> ExperimentResult:
    """Run one experiment (its kind is the config's: a search, an ablation study).

    ``listeners`` receive every event (on the driver's thread). ``on_driver(driver,
    backend)`` sees both once they exist, before workers start. ``wait(driver)`` blocks the
    calling thread until ``driver.done`` (default: ``driver.wait()``); a notebook display
    passes one that keeps serving UI messages meanwhile. KeyboardInterrupt raised inside
    it interrupts the run. ``source`` (the notebook cell, say) is kept in the run directory.
    """
    config.validate()
    tracker = start_tracking(config)  # MLflow, when the config asks for it
    if tracker is None:
        return _run(train_fn, config, listeners, on_driver, wait, source)
    try:
        result = _run(train_fn, config, [*listeners, tracker], on_driver, wait, source)
    except MaggyError as exc:
        _tracked(tracker, getattr(exc, "result", None))
        raise
    except BaseException:
        _tracked(tracker, None)
        raise
    return _tracked(tracker, result)


def _tracked(tracker: Any, result: Optional[ExperimentResult]) -> Any:
    """``result`` once the tracker has logged the rest (bounded), with its report as
    ``result.mlflow`` (also in result.json)."""
    try:
        report = tracker.finish(result)
    except Exception as exc:  # noqa: BLE001 - tracking never costs the experiment its result
        logger().warning("maggy-magic: MLflow tracking failed at the end of the run: %s: %s",
                         type(exc).__name__, exc)
        return result
    if result is not None:
        result.mlflow = report
        path = os.path.join(result.run_dir or "", "result.json")
        if result.run_dir and os.path.isfile(path):
            try:
                with open(path + ".tmp", "w", encoding="utf-8") as handle:
                    handle.write(json.dumps(result.to_dict(), default=str))
                os.replace(path + ".tmp", path)
            except OSError as exc:
                print(f"maggy-magic: could not add the MLflow report to result.json "
                      f"({exc})", file=sys.stderr)
    return result


def _run(train_fn: Callable, config: Any, listeners: Iterable[Listener],
         on_driver: Optional[Callable[[Driver, Any], None]],
         wait: Optional[Callable[[Driver], None]], source: Optional[str]) -> ExperimentResult:
    optimizer = config.make_optimizer()
    # what the workers call for each trial: train_fn itself, or a wrapper around it
    function = config.trial_function(train_fn, optimizer)
    payload = serialize(function)
    earlystop = get_earlystop(config.es_policy)
    backend = get_backend(config.backend, **config.backend_options)
    resources = Resources.of(config)
    if resources and not hasattr(backend, "run_experiment"):  # livy: its remote run asks
        backend.request_resources(resources, config.workers)  # GPUs / CPUs per trial
    if hasattr(config, "check_backend"):  # e.g. a dist run needs all its ranks at once
        config.check_backend(backend)
    if hasattr(backend, "run_experiment"):  # the whole experiment runs elsewhere (livy)
        return backend.run_experiment(config, payload, train_fn=train_fn, listeners=listeners,
                                      on_driver=on_driver, wait=wait, source=source)
    address = driver_address(config, backend)  # a bad address fails before the run exists

    trials, first_seq = {}, 0
    if config.resume:
        path = find_run(config.root, str(config.resume), name=config.name)
        trials, old_config, first_seq = load_trials(path)
        _check_resumable(old_config, config.to_dict())
        store = RunStore(path, resumed=True)
    else:
        store = RunStore.create(config.root, config.name, config.run_id)
    store.write_json("config.json", config.to_dict())
    store.write_source(train_fn, cell=source)

    events = EventStream(store.run_id, first_seq)
    events.add(store, required="the run's journal")
    settings = DriverSettings(
        direction=config.direction, optimization_key=config.optimization_key,
        es_interval=config.es_interval, es_min=config.es_min,
        max_failures=config.max_failures, max_retries=config.max_retries,
        hb_interval=config.hb_interval, hb_timeout=config.hb_timeout,
        stop_grace=config.stop_grace, prefetch=not getattr(backend, "barrier", False),
        rendezvous_timeout=getattr(config, "rendezvous_timeout", 300.0),
        abort_timeout=getattr(config, "abort_timeout", 10.0), run_dir=store.path,
        files_limit=int(getattr(config, "files_limit_mb", 256) * 2**20),
        storage=getattr(config, "storage", None),
        time_budget=getattr(config, "time_budget", None), target=getattr(config, "target", None),
        release_idle=getattr(backend, "release_idle", False))
    driver = Driver(optimizer, earlystop, settings, events, host=address,
                    trials=trials, tls=getattr(config, "tls", "auto"))

    def tell_backend(event: dict) -> None:
        if event["type"] == "worker_lost":
            backend.worker_lost(event["worker"])
        elif event["type"] == "worker_joined":
            backend.worker_joined(event["worker"], event.get("host", "?"), event.get("pid", 0))

    events.add(tell_backend, required="the link to the backend")
    for listener in listeners:
        events.add(listener)
    events.on_failure = lambda what, exc: driver.fail(*_record_failure(what, exc))

    def flush() -> None:
        try:
            store.flush()
        except RunStoreError as exc:
            driver.fail(str(exc), "RunStoreError")

    driver.add_periodic(0.5, flush)
    from .hparams_summary import preload as preload_hparams

    # a second in, the summary's imports start on a thread, off the end of the run
    driver.add_periodic(1.0, preload_hparams)
    optimizer.trial_store, optimizer.final_store = driver.trials, driver.final
    optimizer.run_dir = store.path
    optimizer.initialize()
    # grid search and single runs fix their own trial count in initialize()
    workers = config.workers or min(backend.default_workers(),
                                    optimizer.num_trials or config.num_trials)
    # num_trials as the optimizer settled it (a grid's size), so displays show the total
    events.emit("run_started", config=dict(config.to_dict(), workers=workers,
                                           num_trials=optimizer.num_trials or config.num_trials),
                kind=config.kind, name=config.name, run_dir=store.path,
                resumed=bool(config.resume), backend=backend.describe())
    loop = threading.Thread(target=driver.serve, name="maggy-driver", daemon=True)
    interrupted = False
    loop.start()

    def launch() -> None:
        if on_driver is not None:
            on_driver(driver, backend)
        backend.start(_launch(driver, function, payload, workers, store.path, config.kind))

    try:
        interrupted = supervise(driver, wait, INTERRUPT_GRACE, before=launch)
    finally:
        backend.stop(INTERRUPT_GRACE if interrupted else 5.0)
        loop.join(INTERRUPT_GRACE)
        unwritten = store.close()
    driver.files.finish()  # trial folders uploaded to storage come into the run dir

    result = getattr(config, "result_class", ExperimentResult).from_trials(
        [t for t in driver.trials.values() if t.start is not None],  # others never ran
        name=config.name, run_id=store.run_id,
        run_dir=store.path, state=driver.state, direction=config.direction,
        optimization_key=config.optimization_key, error=driver.error,
        rejected_frames=driver.rejected, searchspace=config.to_dict().get("searchspace"))
    try:
        store.write_json("result.json", result.to_dict())
    except OSError as exc:  # the journal is the record; the result still gets out
        print(f"maggy-magic: could not write result.json ({exc})", file=sys.stderr)
    else:
        _write_hparams(store.path, config.to_dict(), result)
    record_run(result)
    if unwritten is not None and driver.state != "failed":
        unwritten.result = result  # the run ended, but its record was cut short
        raise unwritten
    if driver.state == "failed":
        exc = error_class(driver.error_type)(driver.error or "the experiment failed")
        exc.result = result
        raise exc
    if interrupted or driver.state == "interrupted":
        if getattr(config, "resumable", True):
            then = f"resume with resume={store.run_id!r} to run the rest"
        else:
            then = f"a {config.kind} run cannot be resumed; start it again"
        raise ExperimentInterrupted(
            f"experiment interrupted after {result.num_finished} finished trial(s); {then} "
            f"({store.path})", result)
    return result


def _write_hparams(run_dir: str, config: dict, result: ExperimentResult) -> None:
    """Start writing TensorBoard's HParams summary of the run.

    It costs about a millisecond per trial (a folder and an event file each), so it is
    written by a thread of its own (not a daemon: the interpreter waits for it at exit)
    and the result comes back at once; :func:`~maggy_magic.hparams_summary.wait_for_writers`
    waits for it. Failing to write it never costs the result.
    """
    from .hparams_summary import WRITER_THREAD, available, write

    if not available(run_dir):
        return

    def work() -> None:
        try:
            write(run_dir, config, result.trial_records)
        except Exception as exc:  # noqa: BLE001 - the summary is a view, the result is kept
            logger().warning(
                "maggy-magic: no HParams summary for run %s: %s: %s", result.run_id,
                type(exc).__name__, exc)

    threading.Thread(target=work, name=WRITER_THREAD, daemon=False).start()


def supervise(handle: Any, wait: Optional[Callable[[Any], None]], grace: float,
              before: Optional[Callable[[], None]] = None) -> bool:
    """Run ``before()``, then block in ``wait(handle)`` (default ``handle.wait()``) until
    the run ``handle`` (a :class:`Driver`, or a stand-in with ``wait``, ``interrupt`` and
    ``done``) is over. Returns True when the user interrupted it (KeyboardInterrupt →
    ``handle.interrupt``). A run left undone by an error is interrupted too; either way
    it gets ``grace`` seconds to end."""
    interrupted = False
    try:
        if before is not None:
            before()
        try:
            (wait or type(handle).wait)(handle)
        except KeyboardInterrupt:
            interrupted = True
            handle.interrupt("interrupted by the user (KeyboardInterrupt)")
            handle.wait(grace)
    finally:
        if not handle.done:
            handle.interrupt("the experiment was abandoned")
            handle.wait(grace)
    return interrupted


def record_run(result: ExperimentResult) -> None:
    """Tell a supervising ``maggy-magic run`` which runs this process made: a JSON line in
    the file ``$MAGGY_MAGIC_RUN_RECORD`` names (nothing when it is unset). Every backend
    that ends a run calls it with the run's result."""
    record = os.environ.get("MAGGY_MAGIC_RUN_RECORD")
    if not record:
        return
    line = json.dumps({"run_dir": result.run_dir, "run_id": result.run_id,
                       "name": result.name, "state": result.state})
    with open(record, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _record_failure(what: str, exc: BaseException) -> tuple:
    """``(message, error type)`` of a run whose ``what`` (its journal, the backend link)
    failed."""
    if isinstance(exc, RunStoreError):
        return str(exc), "RunStoreError"
    return f"{what} failed: {type(exc).__name__}: {exc}", "RunStoreError"


def _launch(driver: Driver, train_fn: Callable, payload: bytes, workers: int, run_dir: str,
            kind: str):
    from .backends import Launch

    return Launch(host=driver.address[0], port=driver.address[1], secret=driver.secret,
                  function=train_fn, payload=payload, num_workers=workers, run_dir=run_dir,
                  fail=driver.fail, fingerprint=driver.fingerprint,
                  fresh_processes=kind == "dist")


def _check_resumable(old: dict, new: dict) -> None:
    for key in ("kind", "optimizer", "searchspace", "study", "direction", "optimization_key"):
        if old.get(key) != new.get(key):
            raise ResumeError(f"cannot resume: {key} was {old.get(key)!r} in that run and is "
                              f"{new.get(key)!r} now; use the same setting or start a new run")
