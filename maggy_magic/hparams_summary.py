"""The HParams summary of a run: TensorBoard's HParams tab for every trial.

:func:`write` turns a run's config and trial records into TensorBoard event files under
``<run dir>/tensorboard`` (the folder :func:`maggy_magic.tensorboard.logdir` hands out):

- ``tensorboard/``: the experiment (one HParamInfo per hyperparameter with its domain from
  the search space, one MetricInfo for the optimization metric and each other number the
  trials returned);
- ``tensorboard/<trial id>/``: one session per trial that ran (its params, start and end
  time, status), the metric's history as scalars and its final value.

An ablation study's sessions have the hyperparameters ``component`` (what the trial leaves
out, ``base`` for the base trial) and ``component_kind``. Writing is idempotent: earlier
files of this writer are replaced, so a resumed run's summary holds every trial once.

Uses only TensorBoard's own protobufs and record writer (no TensorFlow), imported when
:func:`write` runs; without the ``tensorboard`` package nothing is written.
"""

from __future__ import annotations

import glob
import json
import math
import os
import socket
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .logs import logger
from .tensorboard import run_logdir, trial_logdir

#: Name of the threads that write a finished run's summary (see experiment.run).
WRITER_THREAD = "maggy-hparams"

#: The thread that imports TensorBoard's modules while a run goes on (see preload).
_PRELOAD: List[threading.Thread] = []
_PRELOAD_LOCK = threading.Lock()

#: Event files of this writer end with this suffix (and are replaced on every write).
SUFFIX = ".maggy-hparams"
#: Trial state → the session status name of TensorBoard's hparams API.
STATUS = {"FINISHED": "STATUS_SUCCESS", "EARLY_STOPPED": "STATUS_SUCCESS",
          "FAILED": "STATUS_FAILURE"}
#: Hyperparameters that describe an ablation trial.
ABLATION_HPARAMS = ("component", "component_kind")


def wait_for_writers(timeout: Optional[float] = None) -> None:
    """Wait until the summaries that runs of this process are still writing are written."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == WRITER_THREAD and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def preload() -> None:
    """Start importing what :func:`write` needs on a thread of its own (once per
    process), so that a run's end does not wait the fifth of a second those imports
    take: call it when a run starts; :func:`available` waits for it. The thread is no
    daemon (an import cut by the interpreter's shutdown would print errors) and keeps
    quiet: :func:`available` reports a missing package."""
    with _PRELOAD_LOCK:
        if _PRELOAD:
            return
        thread = threading.Thread(target=_import_quietly, name="maggy-hparams-import",
                                  daemon=False)
        _PRELOAD.append(thread)
    thread.start()


def _import_quietly() -> None:
    try:
        _import()
    except BaseException:  # noqa: BLE001 - available() says what is missing
        pass


def _import() -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: F401
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2  # noqa: F401
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb  # noqa: F401
    from tensorboard.summary.writer.record_writer import RecordWriter  # noqa: F401


def available(run_dir: str) -> bool:
    """Import what :func:`write` needs (so a writer thread imports nothing, which could
    fail while the interpreter shuts down), after :func:`preload`'s thread is done;
    False, with one info log line naming ``run_dir``'s run, when the ``tensorboard``
    package is not installed."""
    for thread in _PRELOAD:
        if thread is not threading.current_thread():
            thread.join()
    try:
        _import()
    except ImportError:
        logger().info("maggy-magic: tensorboard is not installed, so run %s has no HParams "
                      "summary (pip install tensorboard)", os.path.basename(run_dir))
        return False
    return True


def write(run_dir: str, config: Dict[str, Any], records: List[Dict[str, Any]]) -> Optional[str]:
    """Write the HParams summary of a run; the folder written, or None (and one info log
    line) when the ``tensorboard`` package is not installed.

    ``config`` is the run's ``config.json`` (``ExperimentConfig.to_dict()``), ``records``
    its trial records (``Trial.to_dict()`` / ``result.json``'s ``trials``). Trials that
    never started are left out.
    """
    if not available(run_dir):
        return None
    records = [r for r in records if r.get("start") is not None]
    ablation = config.get("kind") == "ablation"
    sessions = [(r, _session_params(r, ablation)) for r in records]
    hparams = _hparam_infos(config, [p for _, p in sessions], ablation)
    key = config.get("optimization_key") or "metric"
    extra = sorted({k for r in records for k, v in (r.get("metrics") or {}).items()
                    if _number(v) is not None} - {key})
    root = run_logdir(run_dir)
    _clear(root)
    created = config.get("created") or min((r["start"] for r in records), default=time.time())
    _write_events(root, [(created, 0, _experiment(config, hparams, key, extra, created))])
    types = {info.name: info.type for info in hparams}
    for record, params in sessions:
        folder = trial_logdir(run_dir, record["trial"])
        _clear(folder)
        _write_events(folder, _session_events(record, params, types, key, extra))
    return root


# -- what the summary says --------------------------------------------------------------
def _session_params(record: Dict[str, Any], ablation: bool) -> Dict[str, Any]:
    """The hyperparameters one session shows."""
    if ablation:
        from .ablation.ablator import describe

        info = record.get("info") or {}
        kind, label = describe(record.get("params") or {})
        return {"component": info.get("component", label),
                "component_kind": info.get("component_kind", kind)}
    params = dict(record.get("params") or {})
    if record.get("budget") is not None and "budget" not in params:
        params["budget"] = record["budget"]
    return params


def _hparam_infos(config: Dict[str, Any], params: List[Dict[str, Any]], ablation: bool):
    """One HParamInfo per hyperparameter: domains from the search space where it has one,
    else the values the trials used."""
    from tensorboard.plugins.hparams import api_pb2

    space = {} if ablation else dict(config.get("searchspace") or {})
    names = list(ABLATION_HPARAMS) if ablation else list(space)
    names += sorted({name for p in params for name in p} - set(names))
    infos = []
    for name in names:
        spec = space.get(name)
        used = [p[name] for p in params if name in p]
        info = api_pb2.HParamInfo(name=name, display_name=name)
        if spec and spec[0] in ("DOUBLE", "INTEGER"):
            info.type = api_pb2.DATA_TYPE_FLOAT64
            info.domain_interval.min_value = float(spec[1][0])
            info.domain_interval.max_value = float(spec[1][1])
            info.description = f"{spec[0]} in [{spec[1][0]}, {spec[1][1]}]"
        else:
            values = list(spec[1]) if spec else _unique(used)
            info.type = _data_type(values)
            info.domain_discrete.extend(_convert(info.type, v) for v in values)
            if spec:
                info.description = f"{spec[0]} {values}"
        for extra in (spec or [])[2:]:  # "log", or the conditions of a conditional param
            info.description += " (log scale)" if extra == "log" else \
                "".join(f" (only when {parent} in {allowed})"
                        for parent, allowed in dict(extra).items())
        infos.append(info)
    return infos


def _experiment(config: Dict[str, Any], hparams: list, key: str, extra: List[str],
                created: float):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    direction = config.get("direction") or "max"
    goal = "maximized" if direction == "max" else "minimized"
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=key), display_name=key,
                                  description=f"the optimization metric ({goal})")]
    metrics += [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k), display_name=k,
                                   description="also returned by the training function")
                for k in extra]
    description = config.get("description") or ""
    experiment = api_pb2.Experiment(
        name=str(config.get("name") or ""), description=description,
        time_created_secs=created, hparam_infos=hparams, metric_infos=metrics)
    return _summary(metadata.EXPERIMENT_TAG,
                    plugin_data_pb2.HParamsPluginData(experiment=experiment))


def _session_events(record: Dict[str, Any], params: Dict[str, Any], types: Dict[str, int],
                    key: str, extra: List[str]) -> List[Tuple[float, int, Any]]:
    """(wall time, step, Summary) of one trial: session start, metric history and final
    values, session end."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    start = float(record["start"])
    end = float(record.get("end") or start)
    start_info = plugin_data_pb2.SessionStartInfo(group_name=str(record["trial"]),
                                                  start_time_secs=start)
    for name, value in params.items():
        converted = _convert(types.get(name, api_pb2.DATA_TYPE_STRING), value)
        if isinstance(converted, bool):
            start_info.hparams[name].bool_value = converted
        elif isinstance(converted, float):
            start_info.hparams[name].number_value = converted
        else:
            start_info.hparams[name].string_value = converted
    events = [(start, 0, _summary(metadata.SESSION_START_INFO_TAG,
                                  plugin_data_pb2.HParamsPluginData(
                                      session_start_info=start_info)))]
    steps, history = record.get("steps") or [], record.get("history") or []
    for step, value in zip(steps, history):
        events.append((start, int(step), scalar_pb(key, float(value))))
    last = int(steps[-1]) if steps else 0
    final = _number(record.get("value")) if record.get("state") != "FAILED" else None
    if final is not None and not (history and history[-1] == final):
        events.append((end, last + 1 if steps else 0, scalar_pb(key, final)))
    for name in extra:
        value = _number((record.get("metrics") or {}).get(name))
        if value is not None:
            events.append((end, last, scalar_pb(name, value)))
    status = api_pb2.Status.Value(STATUS.get(record.get("state"), "STATUS_UNKNOWN"))
    end_info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end)
    events.append((end, last, _summary(metadata.SESSION_END_INFO_TAG,
                                       plugin_data_pb2.HParamsPluginData(
                                           session_end_info=end_info))))
    return events


# -- protobuf and file helpers ----------------------------------------------------------
def _summary(tag: str, plugin_data: Any):
    """A Summary holding ``plugin_data`` the way the hparams plugin reads it."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(plugin_data),
                      tensor=metadata.NULL_TENSOR)
    return summary


def _write_events(folder: str, events: Iterable[Tuple[float, int, Any]]) -> None:
    """One event file in ``folder`` (TensorBoard's record format, written with its
    RecordWriter on a plain file: its EventFileWriter would import TensorFlow)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    os.makedirs(folder, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}." \
           f"{os.getpid()}{SUFFIX}"
    with open(os.path.join(folder, name), "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                     .SerializeToString())
        for wall_time, step, summary in events:
            writer.write(event_pb2.Event(wall_time=wall_time, step=step, summary=summary)
                         .SerializeToString())


def _clear(folder: str) -> None:
    """Remove the files an earlier :func:`write` left in ``folder``."""
    for path in glob.glob(os.path.join(glob.escape(folder), f"events.out.tfevents.*{SUFFIX}")):
        os.remove(path)


def _data_type(values: List[Any]) -> int:
    from tensorboard.plugins.hparams import api_pb2

    if values and all(isinstance(v, bool) for v in values):
        return api_pb2.DATA_TYPE_BOOL
    if values and all(_number(v) is not None for v in values):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _convert(data_type: int, value: Any) -> Any:
    """``value`` as the Python type of ``data_type`` (bool, float or str)."""
    from tensorboard.plugins.hparams import api_pb2

    if data_type == api_pb2.DATA_TYPE_BOOL and isinstance(value, bool):
        return value
    if data_type == api_pb2.DATA_TYPE_FLOAT64 and _number(value) is not None:
        return float(value)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _unique(values: List[Any]) -> List[Any]:
    seen, unique = set(), []
    for value in values:
        marker = json.dumps(value, sort_keys=True, default=str)
        if marker not in seen:
            seen.add(marker)
            unique.append(value)
    return unique
