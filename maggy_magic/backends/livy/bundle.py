"""What travels to the Livy side for one run, and the reply format coming back.

A *bundle* is the experiment's configuration as JSON (the keyword arguments that rebuild
an equal :class:`~maggy_magic.config.HyperparameterOptConfig` there) plus the training
function as the bytes :func:`maggy_magic.portable.serialize` made (uploaded separately,
in chunks). Replies of remote statements are one JSON object between two markers, so
whatever else the session prints (a background thread writing to stdout while a
statement runs) cannot corrupt them. Stdlib only: this module is read on both sides.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional

from ...errors import ConfigError

#: Markers around a statement's JSON reply.
REPLY_START, REPLY_END = "<<maggy-livy-reply>>", "<<end-maggy-livy-reply>>"
#: Config keywords that travel as they are (every one JSON-serialisable).
PLAIN_KEYS = ("num_trials", "optimizer", "optimizer_options", "optimization_key",
              "direction", "es_interval", "es_min", "es_policy", "name", "description",
              "hb_interval", "workers", "max_failures", "max_retries", "hb_timeout",
              "stop_grace", "seed", "run_id", "driver_host", "driver_bind", "driver_port",
              "gpus_per_trial", "cpus_per_trial")


def config_spec(config: Any, remote_root: str, spark_options: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON form of a search ``config`` to run on the cluster with the spark backend.

    Only named optimizers and early-stopping rules can travel (an object would need
    pickling); ``remote_root`` is the run directories' folder on the cluster side.
    """
    if getattr(config, "kind", None) != "hpo":
        raise ConfigError(f"the livy backend runs hyperparameter searches (%%maggy hpo); "
                          f"run this {getattr(config, 'kind', '?')} experiment with --backend "
                          "local or spark")
    for key in ("optimizer", "es_policy"):
        if not isinstance(getattr(config, key), str):
            raise ConfigError(f"with the livy backend, {key} must be given by name (an object "
                              f"cannot be sent to the cluster), got "
                              f"{type(getattr(config, key)).__name__}")
    if config.resume:
        raise ConfigError("the livy backend cannot resume a run yet; drop --resume (resume= "
                          "in the API) or resume with --backend local or spark")
    spec = {key: getattr(config, key) for key in PLAIN_KEYS}
    spec["searchspace"] = config.searchspace.to_dict()
    spec["root"] = remote_root
    spec["backend"] = "spark"
    spec["backend_options"] = dict(spark_options)
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
