"""Run directories: where every run leaves its record, and what resume reads back.

Layout of ``<root>/<name>/<run_id>/``::

    config.json        the experiment's configuration (JSON)
    train.py           source of the training function (when it can be found)
    cell.py            the notebook cell that started the run (magics only)
    journal.jsonl      every event of the run, one JSON object per line, append-only
    trials/<id>/       log.txt: what the trial printed (only trials that printed)
    workers/<id>.log   lines a worker printed outside any trial; <id>.out raw process output
    result.json        the summary and every trial's record (params, state, metric
                       history, timings, error), written when the run ends

The journal is the source of truth: ``load_trials`` rebuilds every trial from it.
Secrets never reach this directory.
"""

from __future__ import annotations

import datetime
import inspect
import json
import math
import os
import secrets
import shutil
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .errors import ResumeError, RunStoreError
from .trial import Trial

JOURNAL = "journal.jsonl"

#: How the journal writes an event: compact JSON, NaN and Infinity allowed, anything else
#: as its ``str``.
encode_event = json.JSONEncoder(separators=(",", ":"), default=str).encode
#: A metric event's keys in the order the driver's event stream builds them.
_METRIC_KEYS = ("type", "run", "seq", "t", "trial", "step", "value")
_float_repr, _int_repr = float.__repr__, int.__repr__


def journal_line(event: Dict[str, Any],
                 dumps: Callable[[Any], str] = encode_event) -> str:
    """``event`` as its journal line: ``dumps(event)``, except for a metric event of the
    usual shape (str ids, int seq and step, a finite float time, an int or float value:
    most of a journal when trials report hundreds of results a second), which is written
    directly, about twice as fast and byte for byte what :data:`encode_event` writes."""
    if tuple(event) != _METRIC_KEYS or event["type"] != "metric":
        return dumps(event)
    run, seq, t, trial, step, value = (event["run"], event["seq"], event["t"], event["trial"],
                                       event["step"], event["value"])
    kind = type(value)
    if type(run) is not str or type(trial) is not str or type(seq) is not int or \
            type(t) is not float or not math.isfinite(t) or type(step) is not int or \
            (kind is not float and kind is not int):
        return dumps(event)
    if kind is int:
        number = _int_repr(value)
    elif math.isfinite(value):
        number = _float_repr(value)
    else:
        number = "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    return (f'{{"type":"metric","run":{_json_str(run)},"seq":{_int_repr(seq)},'
            f'"t":{_float_repr(t)},"trial":{_json_str(trial)},"step":{_int_repr(step)},'
            f'"value":{number}}}')


def new_run_id() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).strip(".")
    return cleaned or "experiment"


class RunStore:
    """Writes one run's directory; is an event listener (call it with each event).

    Journal lines are buffered and written by ``flush()`` (the driver calls it a few times
    a second and at the end, and the store before it copies a log batch into a trial's
    log file, so the journal never lags behind the logs), so the hot path does no system
    call per metric event.

    A write that fails (a full disk, a lost mount) raises :class:`RunStoreError` naming
    the file and the disk, and the store writes nothing more: the journal keeps every
    line written before (a line cut short is dropped when the run is resumed), so the run
    can be resumed once the cause is gone. ``close()`` never raises.
    """

    def __init__(self, path: str, *, resumed: bool = False):
        self.path = os.path.abspath(path)
        self.run_id = os.path.basename(self.path)
        self.resumed = resumed
        os.makedirs(os.path.join(self.path, "trials"), exist_ok=True)
        os.makedirs(os.path.join(self.path, "workers"), exist_ok=True)
        _drop_torn_line(os.path.join(self.path, JOURNAL))
        self._journal = open(os.path.join(self.path, JOURNAL), "a", encoding="utf-8")
        self._pending: List[str] = []
        #: The write error that stopped this store, if any.
        self.failed: Optional[RunStoreError] = None

    @classmethod
    def create(cls, root: str, name: str, run_id: Optional[str] = None) -> "RunStore":
        run_id = run_id or new_run_id()
        path = os.path.join(root, _safe(name), run_id)
        if os.path.exists(os.path.join(path, JOURNAL)):
            raise ResumeError(f"run directory {path} already exists; pick another run id "
                              "or resume it")
        return cls(path)

    # -- writing ------------------------------------------------------------------------
    def write_json(self, filename: str, data: Any) -> None:
        """Replace ``filename`` atomically with ``data`` as JSON (one write call)."""
        tmp = os.path.join(self.path, filename + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, default=str))
        os.replace(tmp, os.path.join(self.path, filename))

    def write_cell(self, cell: str) -> None:
        """Keep the cell (``cell.py``) of a run whose training function lives elsewhere
        (a cell run in a Livy session's namespace)."""
        with open(os.path.join(self.path, "cell.py"), "w", encoding="utf-8") as handle:
            handle.write(cell)

    def write_source(self, fn: Any, cell: Optional[str] = None) -> None:
        """Keep the training function's source (``train.py``) and the cell (``cell.py``)."""
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = f"# source of {getattr(fn, '__qualname__', fn)!r} is not available\n"
        with open(os.path.join(self.path, "train.py"), "w", encoding="utf-8") as handle:
            handle.write(source)
        if cell is not None:
            self.write_cell(cell)

    def __call__(self, event: Dict[str, Any]) -> None:
        if self.failed is not None:
            return
        self._pending.append(journal_line(event))
        kind = event["type"]
        if kind == "log":
            self.flush()  # the journal first: a trial's log file is its copy of these lines
            trial = event.get("trial")
            if trial is not None:
                target = os.path.join(self.path, "trials", trial, "log.txt")
            else:
                target = os.path.join(self.path, "workers", f"{_safe(event['worker'])}.log")
            self._append(target, event["lines"])
        elif kind == "run_finished":
            self.flush()

    def _append(self, target: str, lines: List[str]) -> None:
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        except OSError as exc:
            raise self._fail(target, exc) from None

    def flush(self) -> None:
        """Write the buffered journal lines (raises :class:`RunStoreError` if it cannot)."""
        if self.failed is not None:
            return
        try:
            if self._pending:
                self._journal.write("\n".join(self._pending) + "\n")
                self._pending = []
            self._journal.flush()
        except OSError as exc:
            raise self._fail(os.path.join(self.path, JOURNAL), exc) from None

    def close(self) -> Optional[RunStoreError]:
        """Flush and close the journal; returns the error that stopped the store, if
        any (never raises: the run's result still gets out)."""
        try:
            self.flush()
            if self.failed is None:
                os.fsync(self._journal.fileno())
        except (OSError, RunStoreError):
            pass
        try:
            self._journal.close()
        except OSError:
            pass
        return self.failed

    def _fail(self, target: str, exc: OSError) -> RunStoreError:
        try:
            free = f"{shutil.disk_usage(self.path).free / 1e6:.1f} MB free on that disk"
        except OSError:
            free = "the disk cannot be read"
        self.failed = RunStoreError(
            f"cannot write the run's record ({target}: {exc.strerror or exc}; {free}); "
            f"the journal keeps what was written before: free the disk, then resume run "
            f"{self.run_id}")
        self._pending = []
        return self.failed


def _drop_torn_line(journal: str) -> None:
    """End the journal with a whole line before anything is appended to it: a last line
    that a crash cut short is dropped (appended events would join it, and the unreadable
    line would end the readable journal there); one that only lacks its newline gets it."""
    try:
        with open(journal, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            keep = size
            while keep > 0:  # back to the end of the last whole line
                start = max(0, keep - 65536)
                handle.seek(start)
                newline = handle.read(keep - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
            if keep == size:
                return
            handle.seek(keep)
            try:
                json.loads(handle.read())
            except ValueError:
                handle.truncate(keep)
            else:
                handle.write(b"\n")
    except FileNotFoundError:
        return


# -- reading --------------------------------------------------------------------------
def read_journal(path: str) -> Iterator[Dict[str, Any]]:
    """The events of a run directory, in order; a torn last line is ignored."""
    journal = os.path.join(path, JOURNAL)
    if not os.path.exists(journal):
        raise ResumeError(f"{path} has no {JOURNAL}; pass the directory of an earlier run")
    with open(journal, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                return  # a line cut short by a crash ends the readable journal


def load_trials(path: str) -> Tuple[Dict[str, Trial], Dict[str, Any], int]:
    """``(trials, config, next_seq)`` rebuilt from a run's journal.

    Trials that ended keep their outcome; trials that started but never ended come back
    PENDING (the driver queues them again); trials created but never started are not
    recorded, so the optimizer creates them again.
    """
    trials: Dict[str, Trial] = {}
    config: Dict[str, Any] = {}
    next_seq = 0
    for event in read_journal(path):
        next_seq = max(next_seq, int(event.get("seq", 0)) + 1)
        kind = event.get("type")
        trial = trials.get(event.get("trial")) if "trial" in event else None
        if kind == "run_started" and not config:
            config = event.get("config") or {}
        elif kind == "trial_started":
            trial = trials.get(event["trial"])
            if trial is None:
                trial = Trial(event.get("params") or {}, info_dict=event.get("info") or {},
                              budget=event.get("budget"))
                trial.trial_id = event["trial"]
                trials[trial.trial_id] = trial
            trial.status, trial.worker = Trial.RUNNING, event.get("worker")
            trial.retries = int(event.get("attempt") or 0)
            trial.devices = event.get("devices")
            trial.start = event["t"]
            trial.step_history, trial.metric_history = [], []
        elif trial is None:
            continue
        elif kind == "metric":
            trial.append_metric(event["step"], event["value"])
        elif kind == "early_stopped":
            trial.early_stop = True
        elif kind == "trial_finished":
            trial.status = event.get("state") or Trial.FINISHED
            trial.final_metric = event.get("value")
            trial.metric_dict = event.get("metrics") or {}
            trial.end = event["t"]
        elif kind == "trial_failed":
            trial.status = Trial.FAILED
            trial.error, trial.traceback = event.get("error"), event.get("traceback")
            trial.info_dict.setdefault("error_type", event.get("error_type"))
            trial.end = event["t"]
    for trial in trials.values():
        if not trial.done:
            trial.status = Trial.PENDING
    return trials, config, next_seq
