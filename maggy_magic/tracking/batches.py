"""Merging a run's operations into ``MlflowClient.log_batch`` calls.

:func:`plan` takes operations in the order they happened and returns them with each run's
metrics, params and tags merged into batches within the REST API's limits. Each run's
operations keep their order (its creation first, its artifacts and end where they were);
different runs' operations may interleave differently, since MLflow keeps them apart.
"""

from __future__ import annotations

from typing import Dict, List

from .mapping import Op

#: ``log_batch`` limits of MLflow's REST API.
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS, BATCH_TOTAL = 1000, 100, 100, 1000


def plan(ops: List[Op]) -> List[Op]:
    """``ops`` with each run's consecutive metrics, params and tags merged into
    ``log_batch``-sized ops; every run's operations keep their order."""
    planned: List[Op] = []
    acc: Dict[str, Op] = {}

    def flush(key: str) -> None:
        op = acc.pop(key, None)
        if op is not None and op.size():
            planned.append(op)

    for op in ops:
        if op.kind != "log":
            flush(op.key)
            planned.append(op)
            continue
        for part in _split(op):
            merged = acc.get(op.key)
            if merged is not None and not _fits(merged, part):
                flush(op.key)
                merged = None
            if merged is None:
                acc[op.key] = part
            else:
                merged.fields["metrics"] += part.fields["metrics"]
                merged.fields["params"].update(part.fields["params"])
                merged.fields["tags"].update(part.fields["tags"])
    for key in list(acc):
        flush(key)
    return planned


def _fits(a: Op, b: Op) -> bool:
    fa, fb = a.fields, b.fields
    return (len(fa["metrics"]) + len(fb["metrics"]) <= BATCH_METRICS
            and len(fa["params"]) + len(fb["params"]) <= BATCH_PARAMS
            and len(fa["tags"]) + len(fb["tags"]) <= BATCH_TAGS
            and a.size() + b.size() <= BATCH_TOTAL
            and not set(fa["params"]) & set(fb["params"]))


def _split(op: Op) -> List[Op]:
    """A log op in pieces that each fit one ``log_batch``."""
    f = op.fields
    metrics, params, tags = list(f["metrics"]), list(f["params"].items()), \
        list(f["tags"].items())
    parts = []
    while metrics or params or tags or not parts:
        parts.append(Op("log", op.key, metrics=metrics[:BATCH_METRICS],
                        params=dict(params[:BATCH_PARAMS]), tags=dict(tags[:BATCH_TAGS])))
        metrics, params, tags = metrics[BATCH_METRICS:], params[BATCH_PARAMS:], \
            tags[BATCH_TAGS:]
    return parts
