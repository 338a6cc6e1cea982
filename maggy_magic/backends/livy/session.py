"""Which Livy session a run uses: one sparkmagic already owns in this kernel, or our own.

sparkmagic keeps its sessions in the controller of its magics instance (``%load_ext
sparkmagic.magics`` registers ``RemoteSparkMagics``; the PySpark wrapper kernel registers
``KernelMagics``). We reach that instance through the IPython shell's registered magics
and use the session's endpoint (URL, auth object, headers) as it is: no second
controller, no credential read. Without a sparkmagic session, or with ``url`` given (not
the one of sparkmagic's config, which is where its own kernels make their session), we
create a session from the settings and keep it for the next run of this process (deleted
when the process exits).
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
from typing import Any, Dict, List, Optional, Tuple

from ...errors import ConfigError, LivySessionError
from .client import ENDED_STATES, LivyClient, display_url
from .settings import LivySettings

#: Sessions this process created: (url, user, auth, session properties) -> (client, id).
_owned: Dict[Tuple[str, ...], Tuple[LivyClient, int]] = {}
_owned_lock = threading.Lock()


class LivyTarget:
    """A client and the id of the session it talks to; ``label`` names it for people."""

    def __init__(self, client: LivyClient, session_id: int, label: str, owned: bool):
        self.client, self.session_id, self.label, self.owned = (client, int(session_id),
                                                                label, owned)

    def __repr__(self) -> str:
        return f"LivyTarget({self.label})"


def find_session(settings: LivySettings, shell: Any = None) -> LivyTarget:
    """The session a run uses (see the module docstring); raises a one-line error."""
    if not settings.url_given or settings.session is not None:
        found = sparkmagic_session(settings.session, shell)
        if found is not None:
            return found
        if settings.session is not None:
            names = ", ".join(sparkmagic_session_names(shell)) or "none"
            raise ConfigError(f"this kernel has no sparkmagic session called "
                              f"{settings.session!r} (sessions: {names}); create it with "
                              f"%spark add -s {settings.session} -l python -u URL, or give "
                              "--url instead")
    if settings.url is None:
        raise ConfigError("the livy backend needs a session: give --session NAME (a sparkmagic "
                          "session of this kernel), --url URL of a Livy server, or the url "
                          "in sparkmagic's config.json")
    return own_session(settings)


def _sparkmagic_instances(shell: Any) -> List[Any]:
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return []
        shell = get_ipython()
    if shell is None:
        return []
    registry = getattr(getattr(shell, "magics_manager", None), "registry", {}) or {}
    return [m for m in registry.values() if hasattr(m, "spark_controller")]


def in_sparkmagic_kernel(shell: Any = None) -> bool:
    """Whether ``shell`` is the one inside sparkmagic's wrapper kernels (PySpark...),
    where ordinary cells run in the kernel's Livy session."""
    return any(type(m).__module__.startswith("sparkmagic.kernels")
               for m in _sparkmagic_instances(shell))


def _sessions(instance: Any) -> Dict[str, Any]:
    manager = getattr(instance.spark_controller, "session_manager", None)
    return dict(getattr(manager, "sessions", {}) or {})


def sparkmagic_session_names(shell: Any = None) -> List[str]:
    return [name for m in _sparkmagic_instances(shell) for name in _sessions(m)]


def sparkmagic_session(name: Optional[str], shell: Any = None) -> Optional[LivyTarget]:
    """The sparkmagic session ``name`` (None: the wrapper kernel's, or the only one)."""
    instances = _sparkmagic_instances(shell)
    chosen = None
    if name is not None:
        chosen = next((_sessions(m)[name] for m in instances if name in _sessions(m)), None)
    else:
        for instance in instances:  # the PySpark wrapper kernel's own session
            own = getattr(instance, "session_name", None)
            if getattr(instance, "session_started", False) and own in _sessions(instance):
                chosen, name = _sessions(instance)[own], own
        every = [(n, s) for m in instances for n, s in _sessions(m).items()]
        if chosen is None and len(every) == 1:
            name, chosen = every[0]
    if chosen is None:
        return None
    session_id = int(getattr(chosen, "id", -1))
    if session_id < 0:
        raise LivySessionError(f"sparkmagic session {name!r} has no live Livy session (status "
                               f"{getattr(chosen, 'status', '?')}); recreate it with %spark "
                               "add")
    http = chosen.http_client
    endpoint = http.endpoint
    auth = endpoint.auth
    if type(auth).__name__ == "Authenticator":  # sparkmagic's "None" auth
        auth = None
    inner = getattr(http, "_http_client", None)
    client = LivyClient(endpoint.url, auth=auth, headers=dict(http.get_headers() or {}),
                        verify=bool(getattr(inner, "verify_ssl", True)))
    return LivyTarget(client, session_id, f"sparkmagic session {name!r} (Livy session "
                                          f"{session_id} at {client.shown})", owned=False)


def target_for(url: str, session_id: int, settings: LivySettings,
               shell: Any = None) -> LivyTarget:
    """The Livy session ``session_id`` at ``url`` (a recorded run's): through this kernel's
    sparkmagic endpoint for that server when it has one (its credentials), else with the
    settings' credentials."""
    for instance in _sparkmagic_instances(shell):
        for name, chosen in _sessions(instance).items():
            http = chosen.http_client
            if display_url(http.endpoint.url).rstrip("/") == display_url(url).rstrip("/"):
                found = sparkmagic_session(name, shell)
                if found is not None:
                    return LivyTarget(found.client, session_id,
                                      f"Livy session {session_id} at {found.client.shown}",
                                      owned=False)
    client = LivyClient(url, auth=settings.requests_auth(), headers=settings.headers,
                        verify=settings.verify)
    return LivyTarget(client, session_id, f"Livy session {session_id} at {client.shown}",
                      owned=False)


#: Runs that this process follows, by (client URL, session id): their sessions stay up.
_going: Dict[Tuple[str, int], set] = {}


def following(target: LivyTarget, run_id: str, going: bool) -> None:
    """Note that ``run_id`` on ``target`` is (``going``) or is no longer followed here."""
    key = (target.client.shown, target.session_id)
    with _owned_lock:
        runs = _going.setdefault(key, set())
        (runs.add if going else runs.discard)(run_id)


def own_session(settings: LivySettings) -> LivyTarget:
    """A session created from the settings; reused while it lives by runs that ask for the
    same session properties, made again when not."""
    properties = {"kind": "pyspark", **settings.session_properties}
    key = (display_url(settings.url or ""), settings.user or "", settings.auth,
           json.dumps(properties, sort_keys=True, default=str))
    with _owned_lock:
        known = _owned.get(key)
    if known is not None:
        client, session_id = known
        try:
            state = str(client.session(session_id).get("state"))
        except LivySessionError:
            state = "gone"
        if state not in ENDED_STATES and state != "gone":
            client.wait_idle(session_id, settings.start_timeout)
            return LivyTarget(client, session_id, f"Livy session {session_id} at "
                                                  f"{client.shown}", owned=True)
    client = LivyClient(settings.url or "", auth=settings.requests_auth(),
                        headers=settings.headers, verify=settings.verify)
    session_id = client.create_session(properties)
    with _owned_lock:
        _owned[key] = (client, session_id)
    try:
        client.wait_idle(session_id, settings.start_timeout)
    except Exception:
        close_owned(key)
        raise
    return LivyTarget(client, session_id, f"Livy session {session_id} at {client.shown}",
                      owned=True)


def close_owned(key: Optional[Tuple[str, ...]] = None) -> None:
    """Delete the sessions this process created (one of them, with ``key``); at exit
    (no ``key``), a session with a run still going stays up for ``%maggy attach``."""
    with _owned_lock:
        items = [(key, _owned.pop(key))] if key in _owned else \
            ([] if key is not None else list(_owned.items()))
        if key is None:
            _owned.clear()
    for _, (client, session_id) in items:
        going = sorted(_going.get((client.shown, session_id)) or ())
        if key is None and going:
            print(f"maggy-magic: Livy session {session_id} at {client.shown} stays up: run(s) "
                  f"{', '.join(going)} go on there (%maggy attach RUN follows one again)",
                  file=sys.stderr)
            continue
        try:
            client.delete_session(session_id)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(close_owned)
