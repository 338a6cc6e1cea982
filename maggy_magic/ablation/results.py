"""Each component of an ablation study against the base: plain rows for every display.

Rows come from trial records (``trial.to_dict()`` / ``result.json``), whose ``info`` holds
what the ablator recorded (``component``, ``component_kind``, ``ablation_index``), so the
comparison can be made again from any finished or resumed run directory.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .ablator import BASE


def component_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per ablation trial, in the study's order (base first): ``component``,
    ``kind``, ``trial``, ``state``, ``value`` (None unless the trial produced a metric)
    and ``difference`` (``value`` minus the base's; None when either is missing).
    Empty when ``records`` are not those of an ablation study."""
    trials = [r for r in records if "component" in (r.get("info") or {})]
    if not trials:
        return []
    trials.sort(key=lambda r: (r["info"].get("component_kind") != BASE,
                               r["info"].get("ablation_index", 0), str(r.get("trial"))))
    base = base_record(trials)
    base_value = _value(base) if base is not None else None
    rows = []
    for record in trials:
        value = _value(record)
        rows.append({"component": record["info"]["component"],
                     "kind": record["info"].get("component_kind"),
                     "trial": record.get("trial"), "state": record.get("state"),
                     "value": value,
                     "difference": value - base_value if value is not None and
                     base_value is not None and record is not base else
                     (0.0 if record is base and value is not None else None)})
    return rows


def base_record(records: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The base trial's record (every component kept), or None."""
    return next((r for r in records
                 if (r.get("info") or {}).get("component_kind") == BASE), None)


def _value(record: Dict[str, Any]) -> Optional[float]:
    if record.get("state") == "FAILED":
        return None
    return record.get("value")
