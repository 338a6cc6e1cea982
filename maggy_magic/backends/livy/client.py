"""A small client of Livy's REST API: sessions and statements, with one-line errors.

Every request carries ``X-Requested-By`` (Livy's CSRF protection rejects mutating requests
without it) and the configured custom headers; authentication is a ``requests`` auth
object (basic, Kerberos, or sparkmagic's own) that this module never reads or prints.
Failures become :class:`~maggy_magic.errors.LivyError` subclasses: nothing answers
(:class:`LivyUnreachable`), credentials refused (:class:`LivyAuthError`), the session
is gone or dead (:class:`LivySessionError`), a statement raised
(:class:`LivyStatementError`), a statement or request ran out of time
(:class:`LivyTimeout`). ``requests`` is imported when a client is made.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Any, Dict, Iterable, Optional

from ...errors import (
    LivyAuthError,
    LivyError,
    LivySessionError,
    LivyStatementError,
    LivyTimeout,
    LivyUnreachable,
)

#: Session states from which a session never returns to work.
ENDED_STATES = ("shutting_down", "error", "dead", "killed", "success")
#: Seconds a single HTTP request may take.
REQUEST_TIMEOUT = 30.0
#: While a statement runs: first and longest pause between status requests, and how often
#: the session's own state is checked (a killed session leaves its statement "running").
STATUS_PAUSE, MAX_STATUS_PAUSE, SESSION_CHECK = 0.01, 0.1, 1.0


def display_url(url: str) -> str:
    """``url`` without any user:password part (safe to show)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")


class LivyClient:
    """Talks to one Livy server. Thread-safe for concurrent requests."""

    def __init__(self, url: str, auth: Any = None, headers: Optional[Dict[str, str]] = None,
                 verify: bool = True, request_timeout: float = REQUEST_TIMEOUT):
        import requests

        self.url = url.rstrip("/")
        self.shown = display_url(self.url)
        self._http = requests.Session()
        self._auth = auth
        self._verify = verify
        self._timeout = request_timeout
        self._headers = {"Content-Type": "application/json",
                         "X-Requested-By": "maggy-magic", **(headers or {})}
        self._abort = threading.Event()

    def __repr__(self) -> str:
        return f"LivyClient({self.shown})"

    # -- HTTP -----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None,
                ok: Iterable[int] = (200, 201)) -> Dict[str, Any]:
        """One request; the JSON answer, or a one-line LivyError."""
        import requests

        try:
            answer = self._http.request(method, self.url + path, json=body,
                                        headers=self._headers, auth=self._auth,
                                        verify=self._verify, timeout=self._timeout)
        except requests.exceptions.Timeout:
            raise LivyTimeout(f"Livy at {self.shown} did not answer {method} {path} within "
                              f"{self._timeout:g} s; check the server's load and "
                              "network") from None
        except requests.exceptions.RequestException as exc:
            reason = type(exc).__name__
            raise LivyUnreachable(f"cannot reach Livy at {self.shown} ({reason}); check the "
                                  "URL and that the Livy server is running") from None
        if answer.status_code in (401, 403):
            raise LivyAuthError(f"Livy at {self.shown} refused the credentials (HTTP "
                                f"{answer.status_code}); check the user and password (the "
                                "MAGGY_LIVY_PASSWORD variable or sparkmagic's config.json) "
                                "or the Kerberos ticket (kinit)")
        if answer.status_code not in tuple(ok):
            if answer.status_code == 404 and path.startswith("/sessions/"):
                session = path.split("/")[2]
                raise LivySessionError(f"Livy at {self.shown} has no session {session} (it "
                                       "ended, was deleted or never existed)")
            text = " ".join((answer.text or "").split())[:200]
            raise LivyError(f"Livy at {self.shown} answered HTTP {answer.status_code} to "
                            f"{method} {path}: {text}")
        if not answer.content:
            return {}
        try:
            return answer.json()
        except ValueError:
            raise LivyError(f"Livy at {self.shown} answered {method} {path} with something "
                            "that is not JSON; is this URL a Livy server?") from None

    # -- sessions -------------------------------------------------------------------------
    def session(self, session_id: int) -> Dict[str, Any]:
        return self.request("GET", f"/sessions/{session_id}")

    def sessions(self) -> list:
        return list(self.request("GET", "/sessions").get("sessions") or [])

    def create_session(self, properties: Dict[str, Any]) -> int:
        return int(self.request("POST", "/sessions", properties)["id"])

    def delete_session(self, session_id: int) -> None:
        self.request("DELETE", f"/sessions/{session_id}", ok=(200, 404))

    def log_tail(self, session_id: int, lines: int = 5) -> str:
        """The last lines of the session's log, joined (best effort, '' on failure)."""
        try:
            log = self.request("GET", f"/sessions/{session_id}/log?from=-{lines}&size={lines}")
        except LivyError:
            return ""
        return " | ".join(line.strip() for line in log.get("log") or [] if line.strip())

    def wait_idle(self, session_id: int, timeout: float) -> None:
        """Block until the session is idle; a LivySessionError if it ends, a LivyTimeout if
        it is still starting after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        pause = 0.1
        while True:
            state = str(self.session(session_id).get("state"))
            if state == "idle":
                return
            if state in ENDED_STATES:
                tail = self.log_tail(session_id)
                raise LivySessionError(f"Livy session {session_id} at {self.shown} is {state} "
                                       f"instead of starting" + (f": {tail}" if tail else ""))
            if time.monotonic() > deadline:
                raise LivyTimeout(f"Livy session {session_id} at {self.shown} is still {state} "
                                  f"after {timeout:g} s; raise start_timeout or check the "
                                  "cluster's capacity")
            time.sleep(pause)
            pause = min(pause * 1.5, 1.0)

    def check_alive(self, session_id: int) -> None:
        """A LivySessionError if the session has ended (dead, killed, gone)."""
        state = str(self.session(session_id).get("state"))
        if state in ENDED_STATES:
            raise LivySessionError(f"Livy session {session_id} at {self.shown} is {state} (it "
                                   "died or was killed); the local record keeps what arrived")

    # -- statements -----------------------------------------------------------------------
    def run(self, session_id: int, code: str, timeout: float, what: str) -> str:
        """Run ``code`` as one statement; its text output once it ends.

        ``what`` names the statement in errors. A statement still running after
        ``timeout`` seconds is cancelled and raises :class:`LivyTimeout`.
        """
        try:
            posted = self.request("POST", f"/sessions/{session_id}/statements",
                                  {"code": code, "kind": "pyspark"})
        except (LivyAuthError, LivyUnreachable, LivySessionError, LivyTimeout):
            raise
        except LivyError:
            self.check_alive(session_id)
            raise
        statement = int(posted["id"])
        path = f"/sessions/{session_id}/statements/{statement}"
        start = time.monotonic()
        next_check = start + SESSION_CHECK
        pause = STATUS_PAUSE
        while True:
            answer = posted if posted.get("output") else self.request("GET", path)
            posted = {}
            state = answer.get("state")
            if state in ("available", "error", "cancelled") or answer.get("output"):
                try:
                    return _output_text(answer, what, self.shown)
                except LivyStatementError:
                    # a statement cut short by its session's death is the session's story
                    self.check_alive(session_id)
                    raise
            now = time.monotonic()
            if now - start > timeout:
                self._cancel(path)
                raise LivyTimeout(f"the {what} statement did not finish within {timeout:g} s "
                                  f"on Livy session {session_id} (cancelled); raise "
                                  "statement_timeout or check the session's load")
            if now >= next_check:
                self.check_alive(session_id)
                next_check = now + SESSION_CHECK
            time.sleep(pause)
            pause = min(pause * 1.5, MAX_STATUS_PAUSE)

    def _cancel(self, path: str) -> None:
        try:
            self.request("POST", path + "/cancel", {})
        except LivyError:
            pass  # best effort; the timeout is what the caller reports


def _output_text(answer: Dict[str, Any], what: str, shown: str) -> str:
    output = answer.get("output") or {}
    if answer.get("state") == "cancelled":
        raise LivyStatementError(f"the {what} statement was cancelled on Livy ({shown})")
    if output.get("status") == "error" or answer.get("state") == "error":
        name = output.get("ename") or "Error"
        value = " ".join(str(output.get("evalue") or "").split())[:300]
        raise LivyStatementError(f"the {what} statement failed on the cluster: {name}: {value}")
    data = output.get("data") or {}
    return str(data.get("text/plain", ""))
