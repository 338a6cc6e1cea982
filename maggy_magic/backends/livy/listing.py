"""Which cluster runs are still going: ``%maggy list`` asks the Livy sessions that the
local records of unfinished livy runs name (``config.json``'s ``livy``: URL and session
id), one short statement per session (:func:`.remote.runs`)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Tuple

from ...errors import LivyError
from . import bootstrap, statements
from .session import target_for
from .settings import LivySettings

#: Seconds one session may take to answer; a busy or gone one is reported, not waited for.
ASK_TIMEOUT = 15.0


def unfinished_livy_runs(paths: Iterable[str]) -> Dict[Tuple[str, int], List[str]]:
    """``{(url, session id): [run ids]}`` of the records among ``paths`` that ran on
    Livy and hold no result yet."""
    found: Dict[Tuple[str, int], List[str]] = {}
    for path in paths:
        if os.path.exists(os.path.join(path, "result.json")):
            continue
        try:
            with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
                coords = json.load(handle).get("livy") or {}
        except (OSError, ValueError):
            continue
        if coords.get("url") is not None and coords.get("session_id") is not None:
            key = (str(coords["url"]), int(coords["session_id"]))
            found.setdefault(key, []).append(os.path.basename(os.path.normpath(path)))
    return found


def cluster_runs(paths: Iterable[str], settings: LivySettings) -> List[Dict[str, Any]]:
    """The runs of those sessions (going or not), each with ``session`` (its label), or
    ``{"session", "error"}`` for a session that could not answer."""
    rows: List[Dict[str, Any]] = []
    for (url, session_id), wanted in unfinished_livy_runs(paths).items():
        target = target_for(url, session_id, settings)
        try:
            answer = bootstrap.call(target, statements.runs(),
                                    min(ASK_TIMEOUT, settings.statement_timeout), "list")
        except LivyError as exc:
            rows.append({"session": target.label, "error": str(exc), "runs": wanted})
            continue
        for run in answer.get("runs") or []:
            rows.append(dict(run, session=target.label))
    return rows
