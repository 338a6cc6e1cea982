"""The order of the dashboard's trials table: the Python twin of js/state.js ``sortRows``,
so the rows sent to the front-end are the first ones it would show."""

from __future__ import annotations

import heapq
import math
from typing import Any, Dict, Iterable, List, Tuple

#: How the ``state`` column sorts: live trials first, then by how they ended.
STATE_ORDER = {"RUNNING": 0, "PENDING": 1, "FINISHED": 2, "EARLY_STOPPED": 3, "FAILED": 4}


def first_rows(rows: Iterable[Dict[str, Any]], key: str, desc: bool,
               limit: int) -> List[Dict[str, Any]]:
    """The first ``limit`` rows in the front-end's order (js/state.js ``sortRows``):
    missing values last and numbers before text in both directions, numbers compared
    numerically, text as strings, ties by trial id."""
    if key == "trial":  # unique strings: no missing values, no ties (the default sort)
        pick = heapq.nlargest if desc else heapq.nsmallest
        return pick(limit, rows, key=lambda row: row["trial"])

    def value(row: Dict[str, Any]) -> Any:
        if key.startswith("param:"):
            return (row.get("params") or {}).get(key[6:])
        if key == "state":
            return STATE_ORDER.get(row.get("state"), 9)
        return row.get(key)

    items = [(value(row), row) for row in rows]
    # text ranks once, so that every comparison below is between plain tuples
    texts = sorted({str(v) for v, _ in items if v is not None and not _number(v)})
    rank = {text: i for i, text in enumerate(texts)}
    sign = -1 if desc else 1

    def sort_key(item: Tuple[Any, Dict[str, Any]]) -> Tuple[int, float, str]:
        v, row = item
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return (2, 0.0, row["trial"])
        if _number(v):
            return (0, sign * v, row["trial"])
        return (1, sign * rank[str(v)], row["trial"])

    return [row for _, row in heapq.nsmallest(limit, items, key=sort_key)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
