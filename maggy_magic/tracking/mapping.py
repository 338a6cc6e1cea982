"""What each experiment event becomes in MLflow: operations on runs named by keys.

:class:`RunMapper` reads the events of one experiment (see :mod:`maggy_magic.events`)
in order and returns :class:`Op` s; it never talks to MLflow (the sender does) and is
used by one thread. Runs are named by keys: ``PARENT`` for the experiment's run, a trial
id for a trial's nested run. A dist run is one run: its ranks' metrics are
``rank<r>/<key>``, the chief's (rank 0) final metrics are the run's own, each rank's log
is ``logs/rank-<r>.txt`` (``logs/attempt-<a>/rank-<r>.txt`` after a restart).

A trial's metric ``<key>`` (the optimization key) has every step it broadcast; its
final value is logged at the last step after them, so it is the key's latest value (what
MLflow shows and sorts runs by); the other returned metrics are logged at that step too.

Memory is bounded: a trial's log is kept up to :data:`LOG_BYTES` until the trial ends
(then handed over as an artifact and forgotten); lines beyond it are counted and said at
the end of that log.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Tuple

#: The key of the experiment's own (parent) run.
PARENT = ""
#: Bytes of one trial's (or worker's) log kept for its artifact.
LOG_BYTES = 1 << 20
#: Longest parameter and tag values sent (MLflow's limits are 6000 and 8000 characters).
PARAM_CHARS, TAG_CHARS = 500, 5000
#: What MLflow calls the state each end of a run becomes.
_RUN_STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "failed": "FAILED",
               "interrupted": "KILLED"}


class Op:
    """One thing to do in MLflow. ``kind`` is ``start`` (create the run ``key``, nested
    under ``parent`` unless it is None; ``name``, ``time`` in ms, ``tags``), ``log``
    (``metrics``: (name, value, ms, step) tuples, ``params``, ``tags``), ``text``
    (``path``, ``text``: an artifact) or ``end`` (``status``, ``time``)."""

    __slots__ = ("kind", "key", "fields")

    def __init__(self, kind: str, key: str, **fields: Any):
        self.kind, self.key, self.fields = kind, key, fields

    def size(self) -> int:
        """What the op holds, in entities (metrics, params, tags; a few hundred bytes each
        in memory) or, for an artifact, its text in 256-byte units."""
        f = self.fields
        if self.kind == "text":
            return 1 + len(f["text"]) // 256
        return len(f.get("metrics", ())) + len(f.get("params", {})) + len(f.get("tags", {}))

    def __repr__(self) -> str:
        return f"Op({self.kind}, {self.key!r})"


class _Log:
    """A bounded text buffer: the first :data:`LOG_BYTES` of a log, then a count."""

    def __init__(self) -> None:
        self.lines: List[str] = []
        self.size, self.dropped = 0, 0

    def add(self, lines: List[str]) -> None:
        for line in lines:
            line = str(line)
            if self.size + len(line) + 1 > LOG_BYTES:
                self.dropped += 1
                continue
            self.lines.append(line)
            self.size += len(line) + 1

    def text(self) -> str:
        tail = [f"[... {self.dropped} more line(s) not kept here; the run directory has "
                "the whole log]"] if self.dropped else []
        return "\n".join(self.lines + tail) + "\n"


class RunMapper:
    """Turns an experiment's events into MLflow operations (see the module docstring)."""

    def __init__(self) -> None:
        self.kind, self.key_name, self.name = "hpo", "metric", "experiment"
        self.run_id: Optional[str] = None
        self.state: Optional[str] = None
        self.hosts: Dict[str, str] = {}
        self.open: Dict[str, dict] = {}  # trial id -> what its run needs until it ends
        self.logs: Dict[str, _Log] = {}  # trial id, or "worker <w>", -> its log
        self.started = False

    def feed(self, event: Dict[str, Any]) -> List[Op]:
        """The operations for one event (none for types that MLflow does not show)."""
        handler = getattr(self, "_" + str(event.get("type")), None)
        return handler(event) if handler is not None else []

    # -- the experiment -------------------------------------------------------------------
    def _run_started(self, e: Dict[str, Any]) -> List[Op]:
        config = dict(e.get("config") or {})
        self.kind = e.get("kind") or config.get("kind") or "hpo"
        self.key_name = config.get("optimization_key") or "metric"
        self.name, self.run_id = e.get("name") or config.get("name") or "experiment", e["run"]
        tags = {"maggy.run_id": e["run"], "maggy.kind": self.kind, "maggy.name": self.name,
                "maggy.backend": e.get("backend"), "maggy.run_dir": e.get("run_dir"),
                "maggy.resumed": bool(e.get("resumed"))}
        if config.get("description"):
            tags["mlflow.note.content"] = config["description"]
        ops = [] if self.started else [Op("start", PARENT, parent=None, name=e["run"],
                                          time=_ms(e), tags=_tags(tags))]
        self.started = True
        params = {k: v for k, v in config.items()
                  if k not in ("searchspace", "study", "description") and v is not None}
        ops.append(Op("log", PARENT, metrics=[], params=_params(params), tags={}))
        ops.append(Op("text", PARENT, path="config.json", text=_json(config)))
        for what in ("searchspace", "study"):
            if config.get(what):
                ops.append(Op("text", PARENT, path=f"{what}.json", text=_json(config[what])))
        return ops

    def _worker_joined(self, e: Dict[str, Any]) -> List[Op]:
        self.hosts[str(e.get("worker"))] = str(e.get("host"))
        return []

    def _run_finished(self, e: Dict[str, Any]) -> List[Op]:
        self.state = e.get("state")
        best = e.get("best") or {}
        tags = {"maggy.state": self.state, "maggy.error": e.get("error")}
        metrics = [(f"trials_{k}", v, _ms(e), 0) for k, v in (e.get("counts") or {}).items()]
        ops = []
        if best.get("trial") is not None:
            tags["maggy.best_trial"] = best["trial"]
            metrics.append((f"best_{self.key_name}", best.get("value"), _ms(e), 0))
            if self.kind != "dist":
                ops.append(Op("log", str(best["trial"]), metrics=[], params={},
                              tags={"maggy.best": "true"}))
        ops.insert(0, Op("log", PARENT, metrics=_metrics(metrics), params={},
                         tags=_tags(tags)))
        for trial in list(self.open):  # trials the end of the run cut short
            ops += self._end_trial(trial, e, "KILLED")
        for who in list(self.logs):  # what workers printed between trials
            ops.append(Op("text", PARENT, path=f"logs/{who.replace(' ', '-')}.txt",
                          text=self.logs.pop(who).text()))
        return ops

    def _events_lost(self, e: Dict[str, Any]) -> List[Op]:
        return [Op("log", PARENT, metrics=[], params={},
                   tags={"maggy.events_lost": str(e.get("count"))})]

    def final(self, summary_html: Optional[str], result: Optional[dict],
              state: Optional[str]) -> List[Op]:
        """The last operations: the summary and result artifacts, the parent's end."""
        if not self.started:
            return []
        ops = []
        if summary_html:
            ops.append(Op("text", PARENT, path="summary.html", text=summary_html))
        if result is not None:
            ops.append(Op("text", PARENT, path="result.json", text=_json(result)))
        status = _RUN_STATUS.get(state or self.state or "", "KILLED")
        return ops + [Op("end", PARENT, status=status, time=None)]

    # -- trials ---------------------------------------------------------------------------
    def _trial_started(self, e: Dict[str, Any]) -> List[Op]:
        trial, info = str(e["trial"]), dict(e.get("info") or {})
        worker = str(e.get("worker"))
        tags = {"maggy.trial": trial, "maggy.worker": worker,
                "maggy.host": self.hosts.get(worker), "maggy.attempt": e.get("attempt"),
                "maggy.devices": _devices(e.get("devices"))}
        if self.kind == "dist":
            rank = info.get("rank", trial)
            self.open[trial] = {"rank": rank, "attempt": info.get("attempt", 0), "step": 0}
            tags = {f"maggy.rank{rank}.{k[6:]}": v for k, v in tags.items()}
            tags.update({"maggy.world_size": info.get("world_size"),
                         "maggy.framework": info.get("framework")})
            params = _params(e.get("params") or {}) if rank == 0 else {}
            return [Op("log", PARENT, metrics=[], params=params, tags=_tags(tags))]
        tags.update({"maggy.sample_type": info.get("sample_type"),
                     "maggy.component": info.get("component"),
                     "maggy.component_kind": info.get("component_kind")})
        if trial in self.open:  # the same trial again after its worker was lost
            return [Op("log", trial, metrics=[], params={}, tags=_tags(tags))]
        self.open[trial] = {"step": 0}
        params = dict(e.get("params") or {})
        if e.get("budget") is not None:
            params["budget"] = e["budget"]
        return [Op("start", trial, parent=PARENT, name=f"trial {trial}", time=_ms(e),
                   tags=_tags(tags)),
                Op("log", trial, metrics=[], params=_params(params), tags={})]

    def _metric(self, e: Dict[str, Any]) -> List[Op]:
        trial = str(e["trial"])
        run = self.open.get(trial)
        if run is None:
            return []
        step = int(e.get("step") or 0)
        run["step"], run["ms"] = max(run["step"], step), max(run.get("ms", 0), _ms(e))
        return [Op("log", self._run_of(trial), params={}, tags={},
                   metrics=_metrics([(self._metric_name(trial, self.key_name),
                                      e.get("value"), _ms(e), step)]))]

    def _log(self, e: Dict[str, Any]) -> List[Op]:
        trial = e.get("trial")
        who = str(trial) if trial is not None and str(trial) in self.open \
            else f"worker {e.get('worker')}"
        self.logs.setdefault(who, _Log()).add(list(e.get("lines") or ()))
        return []

    def _early_stopped(self, e: Dict[str, Any]) -> List[Op]:
        trial = str(e["trial"])
        if trial not in self.open:
            return []
        return [Op("log", self._run_of(trial), metrics=[], params={},
                   tags=_tags({self._tag_name(trial, "early_stopped_at"): e.get("step")}))]

    def _trial_retried(self, e: Dict[str, Any]) -> List[Op]:
        trial = str(e["trial"])
        if trial not in self.open:
            return []
        return [Op("log", self._run_of(trial), metrics=[], params={},
                   tags=_tags({self._tag_name(trial, "retries"): e.get("retries"),
                               self._tag_name(trial, "retry_reason"): e.get("reason")}))]

    def _trial_finished(self, e: Dict[str, Any]) -> List[Op]:
        trial = str(e["trial"])
        run = self.open.get(trial)
        if run is None:
            return []
        values = {self.key_name: e.get("value")}
        values.update({k: v for k, v in (e.get("metrics") or {}).items()
                       if k != self.key_name})
        chief = self.kind != "dist" or run.get("rank") == 0
        metrics, tags = [], {self._tag_name(trial, "state"): e.get("state")}
        # at the last step, after its value: the latest value of the key is the final one
        ms = max(_ms(e), run.get("ms", 0) + 1)
        for name, value in values.items():
            if _number(value) is not None:
                metrics.append((self._metric_name(trial, name), value, ms, run["step"]))
                if self.kind == "dist" and chief:  # the chief's are the run's own
                    metrics.append((name, value, ms, run["step"]))
            elif value is not None and chief:
                tags[f"maggy.result.{name}"] = value
        metrics.append((self._metric_name(trial, "duration_s"), e.get("duration"), _ms(e), 0))
        ops = [Op("log", self._run_of(trial), metrics=_metrics(metrics), params={},
                  tags=_tags(tags))]
        return ops + self._end_trial(trial, e, "FINISHED")

    def _trial_failed(self, e: Dict[str, Any]) -> List[Op]:
        trial = str(e["trial"])
        if trial not in self.open:
            return []
        tags = {self._tag_name(trial, "state"): "FAILED",
                self._tag_name(trial, "error"): e.get("error"),
                self._tag_name(trial, "error_type"): e.get("error_type")}
        if e.get("traceback"):
            self.logs.setdefault(trial, _Log()).add(str(e["traceback"]).splitlines())
        ops = [Op("log", self._run_of(trial), params={}, tags=_tags(tags), metrics=_metrics(
            [(self._metric_name(trial, "duration_s"), e.get("duration"), _ms(e), 0)]))]
        return ops + self._end_trial(trial, e, "FAILED")

    def _end_trial(self, trial: str, e: Dict[str, Any], status: str) -> List[Op]:
        run = self.open.pop(trial)
        log = self.logs.pop(trial, None)
        ops = []
        if self.kind == "dist":
            attempt = run.get("attempt") or 0
            folder = f"logs/attempt-{attempt}" if attempt else "logs"
            if log is not None:
                ops.append(Op("text", PARENT, path=f"{folder}/rank-{run['rank']}.txt",
                              text=log.text()))
            return ops
        if log is not None:
            ops.append(Op("text", trial, path="log.txt", text=log.text()))
        return ops + [Op("end", trial, status=status, time=_ms(e))]

    def _run_of(self, trial: str) -> str:
        return PARENT if self.kind == "dist" else trial

    def _metric_name(self, trial: str, name: str) -> str:
        if self.kind != "dist":
            return name
        return f"rank{self.open.get(trial, {}).get('rank', trial)}/{name}"

    def _tag_name(self, trial: str, name: str) -> str:
        if self.kind != "dist":
            return f"maggy.{name}"
        return f"maggy.rank{self.open.get(trial, {}).get('rank', trial)}.{name}"


def _ms(event: Dict[str, Any]) -> int:
    return int(float(event.get("t") or 0) * 1000)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _metrics(items: List[Tuple[str, Any, int, int]]) -> List[Tuple[str, float, int, int]]:
    """The finite numeric ones (MLflow refuses the rest)."""
    return [(name, _number(value), ms, step) for name, value, ms, step in items
            if _number(value) is not None]


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _params(values: Dict[str, Any]) -> Dict[str, str]:
    return {str(k)[:250]: _text(v, PARAM_CHARS) for k, v in values.items()}


def _tags(values: Dict[str, Any]) -> Dict[str, str]:
    return {k: _text(v, TAG_CHARS) for k, v in values.items() if v is not None}


def _devices(devices: Any) -> Optional[str]:
    if not devices:
        return None
    return ",".join(str(d) for d in devices) if isinstance(devices, (list, tuple)) \
        else str(devices)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
