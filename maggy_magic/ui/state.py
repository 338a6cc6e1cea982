"""The dashboard's view state: what the experiment's events add up to, kept bounded.

:class:`DashboardState` folds events (schema: :mod:`maggy_magic.events`) into the JSON
parts the front-end draws (``status``, ``trials``, ``curves``, ``logs``, ``search``) and
remembers which parts changed since they were last taken. It is plain Python: no widget,
no thread. The caller serialises access (one writer at a time).

Bounds, whatever the number of trials:

- ``trials``: the whole table stays here (one small dict per trial); a payload carries at
  most ``max_rows`` rows, the first ones in the front-end's current sort.
- ``curves``: points per curve are thinned as they arrive (at most ``max_points`` + 1
  kept); curves are kept only for running trials, the ``top_curves`` best ended ones and
  the ``recent_curves`` last ended ones, so memory and payload stay fixed.
- ``logs``: per worker the last ``log_tail`` lines, each cut to ``max_line`` characters,
  plus the count of lines ever seen so the front-end can tell new lines from old ones,
  and the worker's GPUs (``devices``, ``"0,1"``; None when the run asked for none; trial
  rows then carry theirs too).
- ``search``: parallel coordinates and importances (:mod:`.search_state`), bounded.

An ablation study (its trials' ``info`` names the ``component`` each leaves out) also
gets ``status["ablation"]``: the base first, then at most ``max_bars`` components, each
with its final metric and its difference from the base's, for the live bar chart.
"""

from __future__ import annotations

import collections
import heapq
import math
import time
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

from .search_state import SearchView
from .table_order import first_rows

PARTS = ("status", "trials", "curves", "logs", "search")

_ENDED = ("FINISHED", "EARLY_STOPPED", "FAILED")


class Curve:
    """A metric curve thinned on the fly to at most ``cap`` + 1 points.

    Every ``stride``-th point is kept; when the kept points exceed ``cap`` every other one
    is dropped and the stride doubles, so the kept points stay evenly spread over the
    steps. The latest point is always part of :meth:`points`.
    """

    __slots__ = ("cap", "stride", "seen", "kept", "last")

    def __init__(self, cap: int):
        self.cap = max(2, cap)
        self.stride = 1
        self.seen = 0
        self.kept: List[Tuple[Any, float]] = []
        self.last: Optional[Tuple[Any, float]] = None

    def add(self, step: Any, value: float) -> None:
        point = (step, value)
        if self.seen % self.stride == 0:
            self.kept.append(point)
            if len(self.kept) > self.cap:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.seen += 1
        self.last = point

    def points(self) -> List[List[Any]]:
        out = [list(p) for p in self.kept]
        if self.last is not None and (not self.kept or self.kept[-1] is not self.last):
            out.append(list(self.last))
        return out


class DashboardState:
    """Folds events into bounded, JSON-ready dashboard parts (see the module docstring)."""

    def __init__(self, title: str = "maggy", *, max_rows: int = 200, max_points: int = 100,
                 top_curves: int = 10, recent_curves: int = 20, log_tail: int = 60,
                 max_line: int = 400, max_bars: int = 60, max_lines: int = 300):
        self.title = title
        self.max_rows, self.max_points = max_rows, max_points
        self.top_curves, self.recent_curves = top_curves, recent_curves
        self.log_tail, self.max_line = log_tail, max_line
        self.max_bars = max_bars
        self.search = SearchView(max_lines=max_lines, keep_best=max(1, max_lines // 5))
        self.sort: Dict[str, Any] = {"key": "trial", "desc": True}
        self.dirty: Set[str] = set(PARTS)
        self.state = "starting"
        self.error: Optional[str] = None
        self.started: Optional[float] = None
        self.ended: Optional[float] = None
        self.config: Dict[str, Any] = {}
        self.direction = "max"
        self.metric = "metric"
        self.num_trials: Optional[int] = None
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.with_metrics = 0                            # rows with a step, kept as they go
        self.live: Set[str] = set()                      # trials running or pending
        self.curves: Dict[str, Curve] = {}
        self._top: List[Tuple[float, str]] = []          # heap of the best ended trials
        self._recent: Deque[str] = collections.deque()   # the latest ended trials
        self.best: Optional[Dict[str, Any]] = None
        self.counts = collections.Counter()
        self.workers: Dict[str, Dict[str, Any]] = {}
        self.logs: Dict[str, Deque[List[Any]]] = {}
        self.log_totals: Dict[str, int] = collections.Counter()

    # -- events -------------------------------------------------------------------------
    def apply(self, event: Dict[str, Any]) -> None:
        """Fold one event in. Unknown event types are ignored (newer drivers)."""
        handler = getattr(self, "_on_" + str(event.get("type")), None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, e: Dict[str, Any]) -> None:
        config = e.get("config") or {}
        self.config = config
        self.state = "running"
        self.started = e.get("t")
        self.direction = config.get("direction") or "max"
        self.metric = config.get("optimization_key") or "metric"
        self.num_trials = config.get("num_trials")
        self.search.configure(config, self.metric, self.direction)
        if e.get("name") and self.title in ("", "maggy"):
            self.title = str(e["name"])
        self.dirty.update(("status", "trials", "search"))

    def _on_worker_joined(self, e: Dict[str, Any]) -> None:
        self.workers[str(e["worker"])] = {"host": e.get("host"), "trial": None, "lost": False,
                                          "devices": _devices(e.get("devices"))}
        self.logs.setdefault(str(e["worker"]), collections.deque(maxlen=self.log_tail))
        self.dirty.add("logs")

    def _on_worker_lost(self, e: Dict[str, Any]) -> None:
        worker = self.workers.setdefault(str(e["worker"]), {"host": None, "trial": None})
        worker.update(lost=True, trial=None)
        self._log(str(e["worker"]), None, f"worker lost: {e.get('reason')}")

    def _on_trial_started(self, e: Dict[str, Any]) -> None:
        trial = str(e["trial"])
        old = self.rows.get(trial)
        if old is not None and old["state"] in _ENDED:
            self.counts[old["state"]] -= 1
        if old is not None and old["step"] is not None:
            self.with_metrics -= 1  # a retried trial starts its curve again
        self.rows[trial] = {"trial": trial, "state": "RUNNING", "params": e.get("params") or {},
                            "step": None, "metric": None, "worker": e.get("worker"),
                            "start": e.get("t"), "end": None, "duration": None,
                            "attempt": e.get("attempt") or 0, "error": None}
        info = e.get("info") or {}
        if "component" in info:  # an ablation trial: what it leaves out
            self.rows[trial].update(component=str(info["component"]),
                                    kind=info.get("component_kind"),
                                    order=info.get("ablation_index"))
        if "rank" in info:  # one rank of a distributed run
            self.rows[trial].update(rank=info["rank"])
        devices = _devices(e.get("devices"))
        if devices is not None:  # the GPUs it runs on (only runs that asked for GPUs)
            self.rows[trial].update(devices=devices)
        self.curves[trial] = Curve(self.max_points)
        self.live.add(trial)
        worker = self.workers.setdefault(str(e.get("worker")), {"host": None, "lost": False})
        worker["trial"] = trial
        self.dirty.update(("status", "trials", "curves", "logs"))

    def _on_metric(self, e: Dict[str, Any]) -> None:
        row = self.rows.get(str(e["trial"]))
        if row is None:
            return
        value = e.get("value")
        if row["step"] is None:
            self.with_metrics += 1
        row["step"], row["metric"] = e.get("step"), value
        curve = self.curves.get(row["trial"])
        if curve is not None and _finite(value):
            curve.add(e.get("step"), float(value))
            self.dirty.add("curves")
        self.dirty.add("trials")

    def _on_log(self, e: Dict[str, Any]) -> None:
        worker = str(e.get("worker"))
        for line in e.get("lines") or ():
            self._log(worker, e.get("trial"), line)

    def _log(self, worker: str, trial: Optional[str], line: Any) -> None:
        text = str(line)
        if len(text) > self.max_line:
            text = text[: self.max_line - 1] + "…"
        self.logs.setdefault(worker, collections.deque(maxlen=self.log_tail)).append(
            [trial, text])
        self.log_totals[worker] += 1
        self.dirty.add("logs")

    def _on_early_stopped(self, e: Dict[str, Any]) -> None:
        row = self.rows.get(str(e["trial"]))
        if row is not None:
            row["stopping"] = True
            self.dirty.add("trials")

    def _on_trial_finished(self, e: Dict[str, Any]) -> None:
        state = e.get("state") or "FINISHED"
        self._ended(e, state, e.get("value"))

    def _on_trial_failed(self, e: Dict[str, Any]) -> None:
        row = self._ended(e, "FAILED", None)
        if row is not None:
            row["error"] = f"{e.get('error_type') or 'Error'}: {e.get('error')}"

    def _ended(self, e: Dict[str, Any], state: str, value: Any) -> Optional[Dict[str, Any]]:
        trial = str(e["trial"])
        row = self.rows.get(trial)
        if row is None:
            return None
        row.update(state=state, end=e.get("t"), duration=e.get("duration"))
        row.pop("stopping", None)
        self.live.discard(trial)
        # a failed trial has no result: its last reported value would mislead a sort
        row["metric"] = value if state != "FAILED" else None
        self.counts[state] += 1
        worker = self.workers.get(str(row.get("worker")))
        if worker is not None and worker.get("trial") == trial:
            worker["trial"] = None
        chief = row.get("rank", 0) == 0  # in a distributed run the chief speaks for all
        if state != "FAILED" and chief and _finite(value) and self._better(value, self.best):
            self.best = {"trial": trial, "value": value, "params": row["params"]}
        self._keep_curve(trial, value if state != "FAILED" else None)
        self.dirty.update(("status", "trials", "curves", "logs", "search"))
        return row

    def _on_trial_retried(self, e: Dict[str, Any]) -> None:
        row = self.rows.get(str(e["trial"]))
        if row is not None:
            row.update(state="PENDING", step=None, metric=None, worker=None)
            self.curves.pop(row["trial"], None)
            self.dirty.update(("status", "trials", "curves", "search"))

    def _on_stop_requested(self, e: Dict[str, Any]) -> None:
        if self.state == "running":
            self.state = "stopping"
            self.dirty.add("status")

    def _on_run_finished(self, e: Dict[str, Any]) -> None:
        self.state = e.get("state") or "finished"
        self.error = e.get("error")
        self.ended = e.get("t")
        if e.get("best"):
            self.best = dict(e["best"])
        for trial in self.live:   # an interrupted run leaves these for a resume
            self.rows[trial]["state"] = "INCOMPLETE"
        self.live = set()
        for worker in self.workers.values():
            worker["trial"] = None
        self.dirty.update(PARTS)

    # -- which curves to keep -----------------------------------------------------------
    def _better(self, value: float, best: Optional[Dict[str, Any]]) -> bool:
        if best is None or not _finite(best.get("value")):
            return True
        return value > best["value"] if self.direction == "max" else value < best["value"]

    def _keep_curve(self, trial: str, value: Any) -> None:
        """An ended trial keeps its curve while it is among the best or the latest; a
        curve that leaves both never comes back, so it is dropped for good."""
        if trial in self.live:
            return
        if _finite(value):
            score = float(value) if self.direction == "max" else -float(value)
            if len(self._top) < self.top_curves:
                heapq.heappush(self._top, (score, trial))
            elif score > self._top[0][0]:
                _, dropped = heapq.heapreplace(self._top, (score, trial))
                self._drop_curve(dropped)
        self._recent.append(trial)
        while len(self._recent) > self.recent_curves:
            self._drop_curve(self._recent.popleft())

    def _drop_curve(self, trial: str) -> None:
        if trial in self._recent or any(t == trial for _, t in self._top):
            return
        if trial not in self.live:
            self.curves.pop(trial, None)

    # -- payloads -----------------------------------------------------------------------
    def set_sort(self, sort: Dict[str, Any]) -> None:
        """The front-end's table sort: ``{"key": column, "desc": bool}``."""
        key = str((sort or {}).get("key") or "trial")
        self.sort = {"key": key, "desc": bool((sort or {}).get("desc"))}
        self.dirty.add("trials")

    def take(self, now: Optional[float] = None) -> Dict[str, Any]:
        """The payloads of the parts that changed since the last call, and forget them."""
        now = time.time() if now is None else now
        parts, self.dirty = self.dirty, set()
        return {part: getattr(self, f"{part}_payload")(now) for part in PARTS if part in parts}

    def status_payload(self, now: float) -> Dict[str, Any]:
        live = [self.rows[t]["state"] for t in self.live]
        counts = {"finished": self.counts["FINISHED"],
                  "early_stopped": self.counts["EARLY_STOPPED"],
                  "failed": self.counts["FAILED"],
                  "running": live.count("RUNNING"), "pending": live.count("PENDING")}
        payload = {"title": self.title, "state": self.state, "started": self.started,
                   "ended": self.ended, "now": now, "num_trials": self.num_trials,
                   "counts": counts, "best": self.best, "metric": self.metric,
                   "direction": self.direction, "error": self.error,
                   "workers": len(self.workers)}
        ablation = self.ablation_payload()
        if ablation is not None:
            payload["ablation"] = ablation
        return payload

    def set_importances(self, answer: Optional[Dict[str, Any]]) -> None:  # search's
        self.search.set_importances(answer)
        self.dirty.add("search")

    def search_payload(self, now: float) -> Dict[str, Any]:  # at most max_lines lines
        return self.search.payload(self.rows.values(), (self.best or {}).get("trial"))

    def ablation_payload(self) -> Optional[Dict[str, Any]]:
        """The components of an ablation study against its base (None for other runs):
        ``{"base": {...} or None, "components": [...], "total": n}``; each item has
        ``component``, ``kind``, ``trial``, ``state``, ``value`` (final metric, None
        until the trial ends well) and ``difference`` (``value`` minus the base's)."""
        rows = [r for r in self.rows.values() if "component" in r]
        if not rows:
            return None
        rows.sort(key=lambda r: (r.get("kind") != "base", _order(r.get("order")),
                                 r["trial"]))

        def item(row: Dict[str, Any]) -> Dict[str, Any]:
            ended = row["state"] in ("FINISHED", "EARLY_STOPPED")
            value = row["metric"] if ended and _finite(row["metric"]) else None
            return {"component": row["component"], "kind": row.get("kind"),
                    "trial": row["trial"], "state": row["state"], "value": value,
                    "difference": None}

        base = item(rows[0]) if rows[0].get("kind") == "base" else None
        others = [item(r) for r in rows if r.get("kind") != "base"]
        if base is not None and base["value"] is not None:
            base["difference"] = 0.0
            for other in others:
                if other["value"] is not None:
                    other["difference"] = other["value"] - base["value"]
        return {"base": base, "components": others[: self.max_bars], "total": len(others)}

    def trials_payload(self, now: float) -> Dict[str, Any]:
        rows = first_rows(self.rows.values(), self.sort["key"], self.sort["desc"],
                          self.max_rows)
        out = []
        for row in rows:
            item = {k: v for k, v in row.items() if k not in ("start", "end")}
            if row["state"] == "RUNNING" and row.get("start"):
                item["duration"] = max(0.0, now - row["start"])
            out.append(item)
        return {"rows": out, "total": len(self.rows), "sort": dict(self.sort)}

    def curves_payload(self, now: float) -> Dict[str, Any]:
        curves = [{"trial": t, "state": self.rows[t]["state"], "points": c.points()}
                  for t, c in self.curves.items() if t in self.rows and c.seen]
        return {"curves": curves, "best": (self.best or {}).get("trial"),
                "total": max(self.with_metrics, len(curves))}

    def logs_payload(self, now: float) -> Dict[str, Any]:
        workers = {}
        for worker in sorted(set(self.workers) | set(self.logs)):
            info = self.workers.get(worker, {})
            workers[worker] = {"host": info.get("host"), "trial": info.get("trial"),
                               "lost": bool(info.get("lost")), "devices": info.get("devices"),
                               "total": self.log_totals[worker],
                               "lines": list(self.logs.get(worker, ()))}
        return {"workers": workers}


def _devices(value: Any) -> Optional[str]:
    """GPU ids as the dashboard shows them (``"0,1"``), None when there are none."""
    if not isinstance(value, list):
        return None
    return ",".join(str(d) for d in value)[:200]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _order(value: Any) -> float:
    return float(value) if _number(value) else math.inf


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
