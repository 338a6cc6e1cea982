"""MLflow tracking of an experiment: ``mlflow=`` on every config, ``--mlflow [URI]``.

What it logs (see :mod:`.mapping`): one parent run per experiment (its config and search
space or study, the best trial, the summary and result as artifacts) and one nested run
per trial (its parameters, every metric step, its final metrics, state, duration, worker
and devices, its log as an artifact); an ablation trial is tagged with the component it
leaves out; a dist run is one run with each rank's metrics and log.

It is an event listener (:class:`.sender.Sender`) on the experiment's
:class:`~maggy_magic.events.EventStream`, so every backend logs the same way (the livy
backend replays the cluster's events here); only the driver's side talks to MLflow.
The listener only queues events (a bounded queue); a thread of its own turns them into
``MlflowClient`` calls, batched with ``log_batch``. A slow or failing tracking server
never slows or fails the experiment: it is warned about once, calls are retried, and what
could not be logged is said once at the end and kept in ``result.mlflow``.

mlflow (or mlflow-skinny) is imported only when tracking is on, by that thread.

``mlflow=`` takes:

- a tracking URI (``http://host:5000``, ``https://...``, ``file:///path``,
  ``sqlite:///path.db``, ``databricks``...): log there;
- ``True``: log to ``$MLFLOW_TRACKING_URI`` (an error when it is unset);
- ``False``: never log;
- ``None`` (the default): what ``$MAGGY_MAGIC_MLFLOW`` says (``maggy-magic run --mlflow``
  sets it for a notebook's kernel): a URI, ``on`` (as True) or ``off``; no logging when
  it is unset.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

#: Environment variable: the default of ``mlflow=`` (a URI, ``on`` or ``off``).
MLFLOW_ENV = "MAGGY_MAGIC_MLFLOW"
#: MLflow's own variable: where ``mlflow=True`` logs.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: URI schemes a tracking URI may have (MLflow's tracking stores).
SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks",
           "databricks-uc", "uc")
_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no", "none", "")


def tracking_option(value: Any) -> Optional[str]:
    """The tracking URI that ``mlflow=value`` logs to, or None for no logging (see the
    module's docstring). Raises a one-line :class:`ConfigError` for a value that is not a
    tracking URI, for True without ``$MLFLOW_TRACKING_URI``, and when mlflow is not
    installed."""
    source = "mlflow"
    if value is None:
        value, source = os.environ.get(MLFLOW_ENV, "").strip(), f"${MLFLOW_ENV}"
        if value.lower() in _OFF:
            return None
        if value.lower() in _ON:
            value = True
    if value is False:
        return None
    if value is True:
        uri = os.environ.get(TRACKING_URI_ENV, "").strip()
        if not uri:
            raise ConfigError(f"{source} is on without a URI, so it logs to "
                              f"${TRACKING_URI_ENV}, which is not set; set it or give the "
                              "URI (e.g. --mlflow http://127.0.0.1:5000)")
        value, source = uri, f"${TRACKING_URI_ENV}"
    if not isinstance(value, str):
        raise ConfigError(f"mlflow must be a tracking URI, True or False, got "
                          f"{type(value).__name__}")
    uri = _checked_uri(value.strip(), source)
    if not installed():
        raise ConfigError("MLflow tracking needs the mlflow client: pip install "
                          "'maggy-magic[mlflow]' (or mlflow-skinny), or drop --mlflow")
    return uri


def _checked_uri(uri: str, source: str) -> str:
    shown = redact(uri)
    if not uri or any(c.isspace() for c in uri):
        raise ConfigError(f"{source} must be a tracking URI such as http://127.0.0.1:5000, "
                          f"got {shown!r}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES and not (scheme.startswith("databricks") or "+" in scheme):
        raise ConfigError(f"{source} {shown!r} is not a tracking URI: its scheme should be "
                          f"one of {', '.join(SCHEMES[:5])}... (e.g. http://127.0.0.1:5000)")
    if scheme in ("http", "https"):
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1:
            raise ConfigError(f"{source} {shown!r} needs a host and a numeric port if any "
                              "(e.g. http://127.0.0.1:5000)")
    return uri


def redact(uri: str) -> str:
    """``uri`` without the password of its user part (what messages and records show)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<a tracking URI that does not parse>"
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':')[0]}:***@{host}"))


def installed() -> bool:
    """Whether the mlflow client can be imported (found, not blocked), without importing
    it."""
    if "mlflow" in sys.modules:
        return sys.modules["mlflow"] is not None
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        return False


def start(config: Any) -> Any:
    """The MLflow listener of an experiment whose config has tracking on (a
    :class:`.sender.Sender`), or None."""
    uri = getattr(config, "mlflow", None)
    if not uri:
        return None
    from .sender import Sender

    return Sender(uri, experiment_name=config.name)
