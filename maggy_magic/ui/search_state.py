"""The dashboard's ``search`` part: parallel coordinates and parameter importances.

:class:`SearchView` is kept by :class:`~maggy_magic.ui.state.DashboardState` (same lock,
same writer) and turns its trial rows into the JSON the front-end draws::

    {"axes": [...],        # one per parameter (parcoords.axes), then the metric's
     "lines": [{"trial", "state", "values": [...one per axis...]}, ...],
     "total": n,           # scored trials (finished or early-stopped with a metric)
     "best": trial id, "note": "showing 300 of 4000 trials: ..." or None,
     "importances": {...} or None}   # importance.param_importances' answer

Bounded: at most ``max_lines`` lines (the ``keep_best`` best and an even spread of the
rest, :func:`~maggy_magic.ui.parcoords.pick`), at most ``parcoords.MAX_AXES`` axes.
Ablation studies and distributed runs have no search to draw: their part has no axes.
Importances are computed elsewhere (:class:`~maggy_magic.ui.importance.ImportanceLoop`
on its own thread, from :meth:`SearchView.snapshot`) and handed in with
:meth:`SearchView.set_importances`; only runs whose search space is known get them live.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import parcoords

#: Experiment kinds without parameters to draw.
NO_SEARCH = ("ablation", "dist")


class SearchView:
    """The ``search`` part of the dashboard (see the module docstring). Not thread-safe:
    the dashboard state's lock covers it."""

    def __init__(self, *, max_lines: int = 300, keep_best: int = 60):
        self.max_lines, self.keep_best = max_lines, keep_best
        self.searchspace: Optional[Dict[str, Any]] = None
        self.kind: Optional[str] = None
        self.metric, self.direction = "metric", "max"
        self.importances: Optional[Dict[str, Any]] = None

    def configure(self, config: Dict[str, Any], metric: str, direction: str) -> None:
        """The run's config (from ``run_started``)."""
        self.searchspace = config.get("searchspace") or None
        self.kind = config.get("kind")
        self.metric, self.direction = metric, direction

    @property
    def active(self) -> bool:
        return self.kind not in NO_SEARCH

    def set_importances(self, answer: Optional[Dict[str, Any]]) -> None:
        self.importances = answer

    def snapshot(self, rows: Iterable[Dict[str, Any]]
                 ) -> Optional[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
        """What importances are computed from: ``(searchspace, records)``, or None when
        this run gets no live importances (no known search space, no search)."""
        if not self.active or not self.searchspace:
            return None
        records = [{"trial": r["trial"], "state": r["state"], "params": r["params"],
                    "value": r["metric"]} for r in rows
                   if r["state"] == "FINISHED" and "component" not in r]
        return self.searchspace, records

    def payload(self, rows: Iterable[Dict[str, Any]], best: Optional[str]) -> Dict[str, Any]:
        if not self.active:
            return {"axes": [], "lines": [], "total": 0, "best": None, "note": None,
                    "importances": None}
        scored = [r for r in rows if r["state"] in parcoords.SCORED_STATES
                  and _finite(r.get("metric")) and "component" not in r]
        drawn = parcoords.pick(sorted(scored, key=lambda r: _trial_key(r["trial"])),
                               self.direction, self.max_lines, self.keep_best, key="metric")
        axes = parcoords.axes(self.searchspace, drawn)
        lines = [{"trial": r["trial"], "state": r["state"],
                  "values": parcoords.line_values(axes, r["params"]) + [r["metric"]]}
                 for r in drawn]
        metric_axis = parcoords.metric_axis(self.metric, [r["metric"] for r in drawn],
                                            self.direction)
        note = None
        if len(drawn) < len(scored):
            note = (f"showing {len(drawn)} of {len(scored)} trials: the best "
                    f"{min(self.keep_best, len(drawn))} and an even spread of the others")
        return {"axes": [parcoords.public(a) for a in axes] + [metric_axis] if axes else [],
                "lines": lines if axes else [], "total": len(scored), "best": best,
                "note": note, "importances": self.importances}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _trial_key(trial: Any) -> Tuple[int, int, str]:
    text = str(trial)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)
