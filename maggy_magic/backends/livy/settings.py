"""Settings of the livy backend: its options, and what sparkmagic's config.json says.

The config file is sparkmagic's own (``$SPARKMAGIC_CONF_DIR/$SPARKMAGIC_CONF_FILE``, by
default ``~/.sparkmagic/config.json``), read as plain JSON so sparkmagic need not be
installed: ``kernel_python_credentials`` (url, username, password or base64_password,
auth: None / Basic_Access / Kerberos), ``custom_headers``, ``session_configs`` and
``session_configs_defaults``, ``kerberos_auth_configuration``, ``ignore_ssl_errors`` and
``livy_session_startup_timeout_seconds``. Options win over the file. A password is never
an option: it comes from the environment variable named by ``password_env`` (default
``MAGGY_LIVY_PASSWORD``) or from the config file, and only the ``requests`` auth object
built here holds it (no repr, no log, no run directory).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Dict, Optional

from ...errors import ConfigError, did_you_mean

#: Keys of ``backend_options`` the livy backend understands.
OPTIONS = ("session", "url", "auth", "user", "password_env", "conf_file", "poll_interval",
           "statement_timeout", "start_timeout", "session_conf", "ship", "remote_root",
           "spark_options", "buffer_events", "chunk_bytes")
AUTH_KINDS = ("none", "basic", "kerberos")
SHIP_MODES = ("auto", "always", "never")
#: sparkmagic's auth names → ours.
_SPARKMAGIC_AUTH = {"none": "none", "basic_access": "basic", "kerberos": "kerberos"}
#: Poll interval that keeps a printed line's p95 delay to the kernel near 1 s (bench/).
DEFAULT_POLL_INTERVAL = 0.3


def config_path() -> str:
    """Where sparkmagic reads its configuration (its environment variables honoured)."""
    folder = os.environ.get("SPARKMAGIC_CONF_DIR", "~/.sparkmagic")
    name = os.environ.get("SPARKMAGIC_CONF_FILE", "config.json")
    return os.path.join(os.path.expanduser(folder), name)


def read_sparkmagic_config(path: Optional[str] = None) -> Dict[str, Any]:
    """sparkmagic's config as a dict ({} when there is no file or it is empty)."""
    path = path or config_path()
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        data = json.loads(text) if text.strip() else {}  # sparkmagic creates it empty
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read sparkmagic's config {path} ({type(exc).__name__}); "
                          "fix the JSON or point SPARKMAGIC_CONF_DIR elsewhere") from None
    return data if isinstance(data, dict) else {}


class _Secret:
    """A password that does not show itself."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


class LivySettings:
    """Resolved options of one livy run (see the module docstring for the sources)."""

    def __init__(self, session: Optional[str] = None, url: Optional[str] = None,
                 auth: Optional[str] = None, user: Optional[str] = None,
                 password_env: str = "MAGGY_LIVY_PASSWORD", conf_file: Optional[str] = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 statement_timeout: float = 120.0, start_timeout: Optional[float] = None,
                 session_conf: Optional[Dict[str, Any]] = None, ship: str = "auto",
                 remote_root: str = "maggy_experiments",
                 spark_options: Optional[Dict[str, Any]] = None,
                 buffer_events: int = 20000, chunk_bytes: Optional[int] = None):
        for name, value in (("poll_interval", poll_interval),
                            ("statement_timeout", statement_timeout),
                            ("buffer_events", buffer_events)):
            _positive(name, value)
        if chunk_bytes is not None:
            _positive("chunk_bytes", chunk_bytes)
        #: events the cluster keeps for polls (older ones are read from its journal)
        self.buffer_events = int(buffer_events)
        #: bytes of payload per upload statement (None: sized by the upload itself)
        self.chunk_bytes = None if chunk_bytes is None else int(chunk_bytes)
        if start_timeout is not None:
            _positive("start_timeout", start_timeout)
        if ship not in SHIP_MODES:
            raise ConfigError(f"livy backend option ship must be one of "
                              f"{', '.join(SHIP_MODES)}, got {ship!r}; "
                              f"{did_you_mean(str(ship), SHIP_MODES)}")
        for name, value in (("session_conf", session_conf), ("spark_options", spark_options)):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"livy backend option {name} must be a dict, got "
                                  f"{type(value).__name__}")
        self.session, self.poll_interval = session, float(poll_interval)
        self.statement_timeout = float(statement_timeout)
        self.ship, self.remote_root = ship, str(remote_root)
        self.spark_options = dict(spark_options or {})
        conf = read_sparkmagic_config(conf_file)
        creds = conf.get("kernel_python_credentials") or {}
        self.url = (url or creds.get("url") or "").strip() or None
        #: the URL was an option (not sparkmagic's config): it wins over this kernel's
        #: sparkmagic session
        self.url_given = bool(url)
        same_server = url is None or (creds.get("url") or "").rstrip("/") == url.rstrip("/")
        self.user = user or (creds.get("username") if same_server else None) or None
        configured = str(creds.get("auth") or "").strip().lower()
        kind = (auth or _SPARKMAGIC_AUTH.get(configured, "") or
                ("basic" if self.user else "none")).lower()
        if kind not in AUTH_KINDS:
            raise ConfigError(f"unknown livy auth {auth!r}; {did_you_mean(kind, AUTH_KINDS)}")
        self.auth = kind
        password = os.environ.get(password_env) or (
            _config_password(creds) if same_server else None)
        self._password = _Secret(password) if password else None
        self.password_env = password_env
        self.headers = {str(k): str(v) for k, v in (conf.get("custom_headers") or {}).items()}
        self.session_properties = {**(conf.get("session_configs_defaults") or {}),
                                   **(conf.get("session_configs") or {}),
                                   **(session_conf or {})}
        self.kerberos = dict(conf.get("kerberos_auth_configuration") or {})
        self.verify = not bool(conf.get("ignore_ssl_errors", False))
        self.start_timeout = float(start_timeout or
                                   conf.get("livy_session_startup_timeout_seconds") or 600)

    def __repr__(self) -> str:
        return (f"LivySettings(url={self.url!r}, session={self.session!r}, "
                f"auth={self.auth!r}, user={self.user!r})")

    def requests_auth(self) -> Any:
        """The ``requests`` auth object for ``auth`` (None for no authentication)."""
        if self.auth == "none":
            return None
        if self.auth == "basic":
            if not self.user or self._password is None:
                raise ConfigError(
                    "livy basic auth needs a user (--user, or username in sparkmagic's "
                    "kernel_python_credentials) and a password (set the environment variable "
                    f"{self.password_env}, or password in sparkmagic's config.json)")
            from requests.auth import HTTPBasicAuth

            return HTTPBasicAuth(self.user, self._password.value)
        return kerberos_auth(self.kerberos)


def kerberos_auth(options: Dict[str, Any]) -> Any:
    """SPNEGO auth from requests-kerberos, else requests-gssapi (imported only here)."""
    try:
        import requests_kerberos
    except ImportError:
        requests_kerberos = None
    if requests_kerberos is not None:
        options = dict(options)
        mutual = options.get("mutual_authentication")
        if isinstance(mutual, str):
            options["mutual_authentication"] = getattr(requests_kerberos, mutual.upper(),
                                                       requests_kerberos.REQUIRED)
        return requests_kerberos.HTTPKerberosAuth(**options)
    try:
        import requests_gssapi
    except ImportError:
        raise ConfigError("livy kerberos auth needs requests-kerberos or requests-gssapi; "
                          "pip install 'maggy-magic[kerberos]'") from None
    return requests_gssapi.HTTPSPNEGOAuth()


def _config_password(creds: Dict[str, Any]) -> Optional[str]:
    encoded = creds.get("base64_password")
    if encoded:
        try:
            return base64.b64decode(encoded).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise ConfigError("base64_password in sparkmagic's config.json is not base64 "
                              "text; fix it or use password") from None
    return creds.get("password") or None


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        unit = {"buffer_events": "events", "chunk_bytes": "bytes"}.get(name, "seconds")
        raise ConfigError(f"livy backend option {name} must be a positive number of {unit}, "
                          f"got {value!r}")
