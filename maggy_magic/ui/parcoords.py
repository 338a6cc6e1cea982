"""The parallel-coordinates view of a search: its axes and which trials it draws.

Every display of a search (the live dashboard, the static summary) draws each scored
trial as one line through its parameters' values to its final metric. This module decides
the axes and the lines; drawing is the caller's (``js/dashboard.js``, :mod:`.search_svg`).

- :func:`axes`: one axis per parameter, from the run's search space (its
  ``to_dict()`` form) when known: ``DOUBLE`` / ``INTEGER`` give a ``linear`` axis, or a
  ``log`` one for a log-scale parameter, over the parameter's bounds; ``DISCRETE`` and
  ``CATEGORICAL`` give a ``categorical`` axis with the values in the space's order
  (``DISCRETE`` ones sorted). Without a space the axes are inferred from the trials
  (numbers: linear over their range; anything else: categorical). At most ``MAX_AXES``.
- :func:`pick`: the trials drawn, at most ``limit``: past that, the ``keep_best`` best
  ones and an even spread (by trial number) of the others, so the picture of the search
  stays and the best trials are always in it.
- :func:`line_values`: a trial's coordinate on each axis, as the front-end reads them
  (numbers for numeric axes, the category's index for categorical ones, None where the
  trial has no such parameter or a value outside the axis); :func:`position` maps a
  coordinate to 0..1 along an axis (0 at the bottom), as ``js/state.js`` does.

An ablation study has no parameters to draw (its trials differ in the component left
out, shown by the ablation chart), so callers skip this view for ablation trials.
Axes and lines are plain JSON-ready dicts.
"""

from __future__ import annotations

import heapq
import json
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence

#: At most this many parameter axes are drawn (the search space's first ones).
MAX_AXES = 16
#: A categorical axis lists at most this many values; other values count as missing.
MAX_CATEGORIES = 50
#: Trial states whose final metric is drawn.
SCORED_STATES = ("FINISHED", "EARLY_STOPPED")


def axes(searchspace: Optional[Dict[str, Any]], records: Iterable[Dict[str, Any]]
         ) -> List[Dict[str, Any]]:
    """The parameter axes (see the module docstring); ``records`` have ``params``."""
    if searchspace:
        out = [_axis_from_spec(name, spec) for name, spec in searchspace.items()]
        return [a for a in out if a is not None][:MAX_AXES]
    seen: Dict[str, List[Any]] = {}
    for record in records:
        for name, value in (record.get("params") or {}).items():
            seen.setdefault(name, []).append(value)
    out = []
    for name, values in list(seen.items())[:MAX_AXES]:
        numbers = [float(v) for v in values if _finite(v)]
        if len(numbers) == len(values):
            out.append(_numeric(name, "linear", min(numbers), max(numbers),
                                all(float(v).is_integer() for v in numbers)))
        else:
            categories: List[Any] = []
            for value in values:
                if value not in categories and len(categories) < MAX_CATEGORIES:
                    categories.append(value)
            out.append(_categorical(name, categories))
    return out


def metric_axis(name: str, values: Iterable[float], direction: str) -> Dict[str, Any]:
    """The last axis: the metric over the range of ``values``; ``direction`` says which
    end is better."""
    values = [float(v) for v in values if _finite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    axis = _numeric(name, "linear", low, high, False)
    axis.update(metric=True, direction=direction)
    return axis


def pick(records: Sequence[Dict[str, Any]], direction: str, limit: int,
         keep_best: int, key: str = "value") -> List[Dict[str, Any]]:
    """At most ``limit`` of ``records`` (each with a finite number under ``key``), in
    their given order: all of them, or the ``keep_best`` best and an even spread of the
    others."""
    records = list(records)
    if len(records) <= limit:
        return records
    sign = -1.0 if direction == "max" else 1.0
    best = heapq.nsmallest(min(keep_best, limit), range(len(records)),
                           key=lambda i: (sign * float(records[i][key]), i))
    chosen = set(best)
    rest = [i for i in range(len(records)) if i not in chosen]
    room = limit - len(chosen)
    if room > 0 and rest:
        stride = len(rest) / room
        chosen.update(rest[min(len(rest) - 1, int(k * stride))] for k in range(room))
    return [records[i] for i in sorted(chosen)]


def line_values(axes_: Sequence[Dict[str, Any]], params: Dict[str, Any]) -> List[Any]:
    """The trial's coordinate on each parameter axis (see the module docstring)."""
    out: List[Any] = []
    for axis in axes_:
        if axis["name"] not in params:
            out.append(None)
            continue
        value = params[axis["name"]]
        if axis["kind"] == "categorical":
            key = _key(value)
            out.append(next((i for i, k in enumerate(axis["keys"]) if k == key), None))
        elif _finite(value) and not (axis["kind"] == "log" and value <= 0):
            out.append(value)
        else:
            out.append(None)
    return out


def position(axis: Dict[str, Any], value: Any) -> Optional[float]:
    """Where a coordinate lies along ``axis``: 0 (bottom) .. 1 (top); None if nowhere."""
    if value is None:
        return None
    if axis["kind"] == "categorical":
        count = len(axis["categories"])
        return (value + 0.5) / count if count else None
    low, high = axis["domain"]
    if axis["kind"] == "log":
        if value <= 0:
            return None
        low, high, value = math.log(low), math.log(high), math.log(value)
    return min(1.0, max(0.0, (value - low) / (high - low)))


def public(axis: Dict[str, Any]) -> Dict[str, Any]:
    """The axis as the front-end gets it (without the matching keys)."""
    return {k: v for k, v in axis.items() if k != "keys"}


# -- helpers --------------------------------------------------------------------------
def _axis_from_spec(name: str, spec: Any) -> Optional[Dict[str, Any]]:
    if not isinstance(spec, (list, tuple)) or len(spec) < 2:
        return None
    ptype, values = str(spec[0]).upper(), list(spec[1])
    log = "log" in spec[2:]
    if ptype in ("DOUBLE", "INTEGER") and len(values) == 2:
        return _numeric(name, "log" if log else "linear", float(values[0]),
                        float(values[1]), ptype == "INTEGER")
    if ptype == "DISCRETE" and all(_finite(v) for v in values):
        values = sorted(values)
    return _categorical(name, values[:MAX_CATEGORIES])


def _numeric(name: str, kind: str, low: float, high: float, integer: bool
             ) -> Dict[str, Any]:
    if not high > low:
        pad = (abs(low) * 0.05 or 1.0) if kind == "linear" else 0.0
        low, high = (low - pad, high + pad) if kind == "linear" else (low / 2, high * 2)
    return {"name": name, "kind": kind, "domain": [low, high], "integer": integer}


def _categorical(name: str, values: List[Any]) -> Dict[str, Any]:
    return {"name": name, "kind": "categorical",
            "categories": [_label(v) for v in values], "keys": [_key(v) for v in values]}


def _key(value: Any) -> str:
    """Values equal as JSON match (``True`` is not ``1``)."""
    return json.dumps(value, sort_keys=True, default=str)


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else _key(value)
    return text if len(text) <= 24 else text[:23] + "…"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
