"""What travels to the Livy side for one run, and the reply format coming back.

A *bundle* is the experiment's configuration as JSON (the keyword arguments that rebuild
an equal config there: a search, an ablation study or a dist run) plus the training
function as cloudpickle bytes (uploaded separately, in chunks). The config's objects (an
ablation study and its generators, a dist run's model and dataset, an ablator given as
an object) cannot be JSON: they travel in those bytes with the function
(:func:`config_objects`), and the JSON names them (``objects``). Replies of remote
statements are one JSON object between two markers, so whatever else the session prints
(a background thread writing to stdout while a statement runs) cannot corrupt them.
Stdlib only: this module is read on both sides.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional

from ...errors import ConfigError

#: Markers around a statement's JSON reply.
REPLY_START, REPLY_END = "<<maggy-livy-reply>>", "<<end-maggy-livy-reply>>"
#: Run options every kind sends as they are (every one JSON-serialisable).
RUN_KEYS = ("workers", "max_failures", "max_retries", "hb_timeout", "stop_grace", "seed",
            "run_id", "driver_host", "driver_bind", "driver_port", "gpus_per_trial",
            "cpus_per_trial", "tls", "storage", "files_limit_mb")
#: The keywords of each kind's config that travel as JSON.
KIND_KEYS = {
    "hpo": ("num_trials", "optimizer", "optimizer_options", "optimization_key", "direction",
            "es_interval", "es_min", "es_policy", "name", "description", "hb_interval",
            "time_budget", "target"),
    "ablation": ("ablator", "ablator_options", "optimization_key", "direction", "name",
                 "description", "hb_interval", "time_budget"),
    "dist": ("hparams", "optimization_key", "direction", "name", "description",
             "hb_interval", "max_restarts", "checkpoint_dir", "shard", "rendezvous_timeout",
             "abort_timeout"),
}
#: The names a ``--cell remote`` cell may give for what the cluster's namespace holds.
CELL_NAMES = ("fn", "space", "study", "model", "dataset", "hparams", "framework")
#: The keywords whose values are objects: they travel with the function (cloudpickle).
OBJECT_KEYS = {"hpo": (), "ablation": ("ablation_study",), "dist": ("model", "dataset")}


def config_objects(config: Any) -> Dict[str, Any]:
    """The objects of ``config`` that travel in the payload with the training function:
    an ablation study (its generators are user code), a dist run's model and dataset, an
    ablator given as an object. Empty for a search (its payload is the function alone)."""
    kind = getattr(config, "kind", None)
    objects = {key: getattr(config, key) for key in OBJECT_KEYS.get(kind, ())}
    if kind == "ablation" and not isinstance(config.ablator, str):
        objects["ablator"] = config.ablator
    return objects


def config_spec(config: Any, remote_root: str, spark_options: Dict[str, Any], *,
                from_cell: bool = False) -> Dict[str, Any]:
    """The JSON form of ``config`` to run on the cluster with the spark backend (a dist
    run in barrier mode, unless ``spark_options`` say otherwise).

    ``from_cell``: the cell runs in the session's namespace and the cluster finds the
    search space, the study, the model and dataset there; the spec carries the line's
    options only (no ``searchspace``, ``objects`` or dist ``hparams``).

    A search's optimizer and early-stopping rule must be named (an object would need
    pickling); the objects of other kinds are named in ``objects`` and travel with the
    function. ``remote_root`` is the run directories' folder on the cluster side.
    """
    kind = getattr(config, "kind", None)
    if kind not in KIND_KEYS:
        raise ConfigError(f"the livy backend runs hpo, ablation and dist experiments, not "
                          f"{kind!r}; run it with --backend local or spark")
    if kind == "hpo":
        for key in ("optimizer", "es_policy"):
            if not isinstance(getattr(config, key), str):
                raise ConfigError(f"with the livy backend, {key} must be given by name (an "
                                  f"object cannot be sent to the cluster), got "
                                  f"{type(getattr(config, key)).__name__}")
    spec = {key: getattr(config, key) for key in KIND_KEYS[kind] + RUN_KEYS}
    spec["kind"] = kind
    objects = [] if from_cell else sorted(config_objects(config))
    if objects:
        spec["objects"] = objects
    if "ablator" in objects:
        del spec["ablator"]
    options = dict(spark_options)
    if kind == "hpo" and not from_cell:
        spec["searchspace"] = config.searchspace.to_dict()
    elif kind == "dist":
        if from_cell:
            del spec["hparams"]
        spec["framework"] = config.framework
        options.setdefault("barrier", True)  # every rank at once
    spec["root"] = remote_root
    spec["backend"] = "spark"
    spec["mlflow"] = False  # MLflow logs the events replayed here, never the cluster's side
    spec["backend_options"] = options
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the livy backend sends the config as JSON and cannot send it "
                          f"({exc}); use plain values (numbers, strings, lists, dicts)") from None
    return spec


def python_version() -> list:
    """``[major, minor]`` of this interpreter (cloudpickled code needs the same pair)."""
    return list(sys.version_info[:2])


def reply(data: Dict[str, Any]) -> str:
    """``data`` framed for :func:`read_reply` (printed by a remote statement)."""
    return REPLY_START + json.dumps(data, default=str, separators=(",", ":")) + REPLY_END


def read_reply(text: str) -> Optional[Dict[str, Any]]:
    """The last framed reply in a statement's output, or None if it holds none."""
    end = text.rfind(REPLY_END)
    start = text.rfind(REPLY_START, 0, end if end >= 0 else None)
    if start < 0 or end < 0:
        return None
    return json.loads(text[start + len(REPLY_START):end])
