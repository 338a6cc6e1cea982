"""A Livy REST server for tests: Apache Livy's interactive-session API on real Spark.

Apache Livy cannot run here, so this server speaks its REST API (the JSON shapes, states,
status codes and messages of Livy 0.8) and runs each session as a real Python process
(``_livy_repl.py``) with a real SparkSession. sparkmagic's and the ``livy`` package's clients
work against it unchanged (``tests/test_livy_server.py`` checks that).

What a test can rely on:

* ``LivyServer(auth=None | (user, password), csrf=True, spark_master="local-cluster[2,1,1024]",
  python=None, env=None, conf=None)``; ``start()``/``stop()`` or ``with``; ``url``;
  ``sessions`` (id -> :class:`Session`, deleted ones included); ``kill_session_process(id)``.
* ``python=None`` runs sessions on :func:`bare_python`: pyspark is importable there but
  ``maggy_magic`` is not (also on the executors, through ``PYSPARK_PYTHON``).
  :func:`other_python` gives a Python of another minor version that can run a session.
* statements run one at a time; the others wait. Output (stdout, then stderr, stripped) is
  returned only when a statement ends. An exception gives an ``available`` statement whose
  output has ``status: error``. As in Livy, text printed by a failing statement or by a
  background thread between statements comes with the next successful statement's output;
  Python warnings go to stderr, so they land in the output too (pyspark 4's warning on
  ``DataFrame.toJSON`` breaks clients that parse rows from the text, as on a real Livy).
  Cancel interrupts a running statement (SIGINT -> ``KeyboardInterrupt``, Spark jobs
  cancelled) and leaves it ``cancelled``; a waiting one is cancelled without running.
* ``kill_session_process`` kills a session's process abruptly: the session becomes ``dead``
  and its unfinished statements ``error``. ``DELETE /sessions/{id}`` stops it gracefully:
  it is ``killed`` and gone from the API (404).
* with ``auth``, requests without the right basic credentials get 401 and a
  ``WWW-Authenticate`` header; with ``csrf``, POST/DELETE without ``X-Requested-By`` get
  400 "Missing Required Header for CSRF protection.".
* idle sessions end as in Livy: with ``session_timeout`` (``livy.server.session.timeout``,
  1h in Livy, off here unless a test gives it), a session whose last activity (its
  creation, a statement submitted or cancelled, a statement ending) is older than that is
  deleted, busy or not (Livy's ``timeout-check.skip-busy`` is false by default); a session
  created with ``heartbeatTimeoutInSecond`` is deleted once that long passes without a
  request to ``/sessions/{id}...`` (``GET /sessions`` does not count), after the first one.
* fault injection, off unless a test asks: ``misbehave(method, path, ...)`` makes the next
  matching requests get what a proxy or a sick server in front of Livy would answer (a 5xx
  page, a 200 that is not JSON, or no answer until released); ``kill_session_process``
  above. Everything else is Livy's behaviour.

The pytest fixture :func:`livy_server` gives a started server per test module.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import pytest

LIVY_VERSION = "0.8.0-incubating"
REPL_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_livy_repl.py")
SESSION_KINDS = ("spark", "pyspark", "sparkr", "sql", "shared")
RUNNABLE_KINDS = ("pyspark", "sql")
BLACKLISTED_CONF = ("spark.master", "spark.submit.deployMode")
CSRF_MESSAGE = "Missing Required Header for CSRF protection."
STOP_GRACE = 15.0
CANCEL_RESEND = 0.5
SESSION_LOG_IN_VIEW = 10

# request fields of POST /sessions that map onto Spark settings
_SPARK_SETTINGS = {
    "driverMemory": "spark.driver.memory",
    "driverCores": "spark.driver.cores",
    "executorMemory": "spark.executor.memory",
    "executorCores": "spark.executor.cores",
    "numExecutors": "spark.executor.instances",
    "queue": "spark.yarn.queue",
}
_SPARK_LISTS = {"jars": "spark.jars", "files": "spark.files", "archives": "spark.archives"}
_REQUEST_FIELDS = {"kind", "proxyUser", "jars", "pyFiles", "files", "driverMemory",
                   "driverCores", "executorMemory", "executorCores", "numExecutors",
                   "archives", "queue", "name", "conf", "heartbeatTimeoutInSecond", "ttl"}


def bare_python(tmpdir) -> str:
    """A Python that sees this venv's packages but not its editable installs.

    A tiny venv (no pip) whose site-packages holds one ``.pth`` line naming this venv's
    site-packages: plain path lines do not run that directory's own ``.pth`` files, so the
    editable ``maggy_magic`` hook is not loaded while pyspark and the rest import fine.
    Returns the path of its ``python``; made once per ``tmpdir``.
    """
    home = os.path.join(str(tmpdir), "bare-venv")
    python = os.path.join(home, "bin", "python")
    if os.path.exists(python):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", home], check=True,
                   env=_scrubbed_env(os.environ))
    site = subprocess.run([python, "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True,
                          env=_scrubbed_env(os.environ)).stdout.strip()
    with open(os.path.join(site, "shared_site_packages.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    return python


def other_python(tmpdir) -> Optional[str]:
    """A Python of ANOTHER minor version than this one that can run a session, or None.

    Looks for installed interpreters (pyenv's, the OS's, ``python3.N`` on PATH) and makes a
    tiny venv of the first that imports pyspark from a folder holding only this venv's
    pyspark and py4j (pure Python: the compiled packages of this venv would not load in
    another version). Made once per ``tmpdir``; returns the path of its ``python``.
    """
    home = os.path.join(str(tmpdir), "other-venv")
    python = os.path.join(home, "bin", "python")
    if os.path.exists(python):
        return python
    purelib = sysconfig.get_paths()["purelib"]
    only = os.path.join(str(tmpdir), "pyspark-only")
    os.makedirs(only, exist_ok=True)
    for name in ("pyspark", "py4j"):
        link = os.path.join(only, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(purelib, name), link)
    env = _scrubbed_env(os.environ)
    for candidate in _other_interpreters():
        shutil.rmtree(home, ignore_errors=True)
        made = subprocess.run([candidate, "-m", "venv", "--without-pip", home],
                              capture_output=True, env=env)
        if made.returncode != 0:
            continue
        site = subprocess.run([python, "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, env=env).stdout.strip()
        if not site:
            continue
        with open(os.path.join(site, "pyspark_only.pth"), "w") as handle:
            handle.write(only + "\n")
        if subprocess.run([python, "-c", "import pyspark.sql"], capture_output=True,
                          env=env).returncode == 0:
            return python
    shutil.rmtree(home, ignore_errors=True)
    return None


def _other_interpreters() -> list:
    """Executables of installed Pythons 3.N (N >= 9) whose minor version is not ours."""
    import glob

    here = f"python3.{sys.version_info[1]}"
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = glob.glob(os.path.join(pyenv, "versions", "*", "bin", "python3.*"))
    found += glob.glob("/usr/bin/python3.*") + glob.glob("/usr/local/bin/python3.*")
    found += [shutil.which(f"python3.{n}") or "" for n in range(9, 16)]
    good = []
    for path in found:
        name = os.path.basename(path)
        if re.fullmatch(r"python3\.\d+", name) and int(name[8:]) >= 9 and name != here \
                and os.access(path, os.X_OK) and os.path.realpath(path) not in \
                [os.path.realpath(p) for p in good]:
            good.append(path)
    # the nearest versions first: the likeliest to run this pyspark
    return sorted(good, key=lambda p: abs(int(os.path.basename(p)[8:]) - sys.version_info[1]))


def _scrubbed_env(base) -> dict:
    env = {key: value for key, value in base.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV",
                          "PYSPARK_DRIVER_PYTHON", "PYSPARK_PYTHON", "SPARK_HOME")}
    return env


def _now_ms() -> int:
    return int(time.time() * 1000)


class LivyError(Exception):
    """An HTTP error answered with Livy's ``{"msg": ...}`` body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Statement:
    """One statement of a session, as Livy reports it."""

    def __init__(self, statement_id: int, code: str, kind: str):
        self.id = statement_id
        self.code = code
        self.kind = kind
        self.state = "waiting"
        self.output: Optional[dict] = None
        self.progress = 0.0
        self.started = 0
        self.completed = 0

    def view(self) -> dict:
        return {"id": self.id, "code": self.code, "state": self.state, "output": self.output,
                "progress": self.progress, "started": self.started,
                "completed": self.completed}

    @property
    def finished(self) -> bool:
        return self.state in ("available", "error", "cancelled")


class Session:
    """One interactive session: its Livy state, statements, log and REPL process."""

    def __init__(self, session_id: int, request: dict, owner: Optional[str],
                 proxy_user: Optional[str]):
        self.id = session_id
        self.request = request
        self.name = request.get("name")
        self.kind = request.get("kind") or "shared"
        self.owner = owner
        self.proxy_user = proxy_user
        self.state = "not_started"
        self.app_id: Optional[str] = None
        self.spark_ui_url: Optional[str] = None
        self.statements: list[Statement] = []
        self.log: list[str] = []
        self.process: Optional[subprocess.Popen] = None
        self.killed_on_purpose = False
        self._command_fd: Optional[int] = None
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.last_activity = time.monotonic()
        self.heartbeat_deadline: Optional[float] = None

    def heartbeat(self) -> None:
        """A request about this session arrived (Livy's ``SessionHeartbeat``)."""
        timeout = self.request.get("heartbeatTimeoutInSecond") or 0
        if timeout > 0:
            self.heartbeat_deadline = time.monotonic() + timeout

    def expired(self, idle_timeout: Optional[float]) -> bool:
        now = time.monotonic()
        if self.state in ("dead", "error", "killed", "success", "shutting_down"):
            return False
        if idle_timeout is not None and now - self.last_activity > idle_timeout:
            return True
        return self.heartbeat_deadline is not None and now > self.heartbeat_deadline

    def view(self) -> dict:
        request = self.request
        return {
            "id": self.id, "name": self.name, "appId": self.app_id, "owner": self.owner,
            "proxyUser": self.proxy_user, "state": self.state, "kind": self.kind,
            "appInfo": {"driverLogUrl": None, "sparkUiUrl": self.spark_ui_url},
            "log": self.log[-SESSION_LOG_IN_VIEW:],
            "ttl": request.get("ttl"),
            "driverMemory": request.get("driverMemory"),
            "driverCores": request.get("driverCores", 0),
            "executorMemory": request.get("executorMemory"),
            "executorCores": request.get("executorCores", 0),
            "conf": request.get("conf") or {},
            "archives": request.get("archives") or [],
            "files": request.get("files") or [],
            "heartbeatTimeoutInSecond": request.get("heartbeatTimeoutInSecond", 0),
            "jars": request.get("jars") or [],
            "numExecutors": request.get("numExecutors", 0),
            "pyFiles": request.get("pyFiles") or [],
            "queue": request.get("queue"),
        }

    def send(self, message: dict) -> bool:
        """Write a command to the REPL; False when it is gone."""
        data = json.dumps(message).encode() + b"\n"
        with self._write_lock:
            if self._command_fd is None:
                return False
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._command_fd, view)
                    view = view[written:]
            except OSError:
                return False
        return True

    def close_commands(self) -> None:
        with self._write_lock:
            if self._command_fd is not None:
                os.close(self._command_fd)
                self._command_fd = None

    def kill_process_group(self, wait: float = 0.0) -> None:
        """SIGKILL the REPL and everything it started (the Spark JVMs).

        With ``wait``, waits up to that many seconds for the whole group to be gone.
        """
        if self.process is None:
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def running_statement(self) -> Optional[Statement]:
        for statement in self.statements:
            if statement.state in ("running", "cancelling"):
                return statement
        return None


class Misbehaviour:
    """A rule of :meth:`LivyServer.misbehave`: which requests, what they get, how often."""

    def __init__(self, method: str, path: str, status: Optional[int], body: bytes,
                 content_type: str, times: Optional[int], hold: bool):
        self.method, self.path = method, re.compile(path)
        self.status, self.body, self.content_type = status, body, content_type
        self.times = times
        self.hits = 0
        self.hold = threading.Event() if hold else None
        #: Set when a held request has arrived (the server is "not answering" it now).
        self.holding = threading.Event()

    def release(self) -> None:
        """Let held requests go on (they then get ``status``/``body``, or Livy's answer)."""
        if self.hold is not None:
            self.hold.set()

    def take(self, method: str, path: str) -> bool:
        """Whether this request is one of the rule's (counting it)."""
        if method != self.method or not self.path.fullmatch(path):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class LivyServer:
    """An HTTP server speaking Livy's interactive-session REST API; see the module doc."""

    def __init__(self, auth: Optional[tuple] = None, csrf: bool = True,
                 spark_master: str = "local-cluster[2,1,1024]", python: Optional[str] = None,
                 env: Optional[dict] = None, conf: Optional[dict] = None,
                 session_timeout: Optional[float] = None):
        self.auth = tuple(auth) if auth is not None else None
        self.session_timeout = session_timeout
        self.expired_sessions: list[int] = []
        self.csrf = csrf
        self.spark_master = spark_master
        self.env = dict(env or {})
        self.conf = dict(conf or {})
        self.sessions: dict[int, Session] = {}
        self._python = python
        self._active: dict[int, Session] = {}
        self._next_id = 0
        self._lock = threading.RLock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._serve_thread: Optional[threading.Thread] = None
        self._workdir: Optional[str] = None
        self._misbehaviours: list[Misbehaviour] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "LivyServer":
        self._workdir = tempfile.mkdtemp(prefix="livy-server-")
        if self._python is None:
            self._python = bare_python(self._workdir)
        server = self

        class Handler(_Handler):
            livy = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever,
                                              name="livy-server", daemon=True)
        self._serve_thread.start()
        threading.Thread(target=self._collect_expired, name="livy-gc", daemon=True).start()
        return self

    def _collect_expired(self) -> None:
        """Livy's session garbage collection, every quarter second until the server stops."""
        while self._httpd is not None:
            with self._lock:
                expired = [s for s in self._active.values() if s.expired(self.session_timeout)]
            for session in expired:
                self.expired_sessions.append(session.id)
                try:
                    self.delete_session(session.id)
                except LivyError:
                    pass  # deleted meanwhile
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop serving and kill every session's processes."""
        self.behave()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            sessions = list(self.sessions.values())
            self._active.clear()
        for session in sessions:
            if session.state not in ("dead", "killed", "error", "success"):
                session.killed_on_purpose = True
                session.state = "killed"
            session.kill_process_group()
            session.close_commands()
            if session.process is not None:
                session.process.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "LivyServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the Livy test server is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def python(self) -> Optional[str]:
        """The Python that session processes (and their executors) run on."""
        return self._python

    # -- fault injection -------------------------------------------------------------------

    def kill_session_process(self, session_id: int, timeout: float = 30.0) -> None:
        """Kill a session's REPL abruptly (SIGKILL), as a crashing driver would die.

        Returns once the server has noticed: the session is ``dead``.
        """
        session = self.sessions[session_id]
        if session.process is None:
            raise RuntimeError(f"session {session_id} has no process")
        session.process.kill()
        session.process.wait()
        deadline = time.monotonic() + timeout
        while session.state != "dead" and time.monotonic() < deadline:
            time.sleep(0.05)
        if session.state != "dead":
            raise RuntimeError(f"session {session_id} is {session.state}, not dead")

    def misbehave(self, method: str, path: str, status: Optional[int] = 503,
                  body: bytes = b"", content_type: str = "text/html; charset=UTF-8",
                  times: Optional[int] = 1, hold: bool = False) -> Misbehaviour:
        """Answer the next ``times`` (None: all) requests ``method path`` (a regular
        expression matching the whole path, query left out) as something in front of Livy
        would: ``status`` with ``body`` (a gateway's 5xx page, a login page with 200...)
        instead of Livy's answer. With ``hold``, such a request gets no answer until
        ``rule.release()`` (or :meth:`behave`, or :meth:`stop`); then ``status``/``body``,
        or, with ``status=None``, Livy's own answer. Returns the rule (``hits`` counts
        the requests it took)."""
        rule = Misbehaviour(method, path, status, body, content_type, times, hold)
        with self._lock:
            self._misbehaviours.append(rule)
        return rule

    def behave(self) -> None:
        """Drop every :meth:`misbehave` rule and release the requests they hold."""
        with self._lock:
            rules, self._misbehaviours = self._misbehaviours, []
        for rule in rules:
            rule.release()

    def _misbehaviour(self, method: str, path: str) -> Optional[Misbehaviour]:
        with self._lock:
            return next((r for r in self._misbehaviours if r.take(method, path)), None)

    # -- sessions --------------------------------------------------------------------------

    def create_session(self, request: dict, remote_user: Optional[str],
                       do_as: Optional[str]) -> Session:
        unknown = sorted(set(request) - _REQUEST_FIELDS)
        if unknown:
            raise LivyError(400, f"Unrecognized field \"{unknown[0]}\"")
        kind = request.get("kind")
        if kind is not None and kind not in SESSION_KINDS:
            raise LivyError(400, f"Invalid kind: {kind}")
        conf = request.get("conf") or {}
        if not isinstance(conf, dict):
            raise LivyError(400, "conf must be a map of Spark settings")
        blacklisted = [key for key in conf if key in BLACKLISTED_CONF]
        if blacklisted:
            raise LivyError(400, "Blacklisted configuration values in session config: "
                            + ", ".join(blacklisted))
        with self._lock:
            name = request.get("name")
            if name is not None:
                for other in self._active.values():
                    if other.name == name:
                        raise LivyError(400, f"Duplicate session name: {name}")
            session = Session(self._next_id, request, remote_user,
                              do_as or request.get("proxyUser") or remote_user)
            self._next_id += 1
            self.sessions[session.id] = session
            self._active[session.id] = session
            session.state = "starting"
        self._launch(session)
        return session

    def _spark_conf(self, session: Session) -> dict:
        request = session.request
        conf = {"spark.ui.showConsoleProgress": "false"}
        conf.update({key: str(value) for key, value in self.conf.items()})
        for field, key in _SPARK_SETTINGS.items():
            if request.get(field) is not None:
                conf[key] = str(request[field])
        for field, key in _SPARK_LISTS.items():
            if request.get(field):
                conf[key] = ",".join(request[field])
        conf.update({key: str(value) for key, value in (request.get("conf") or {}).items()})
        return conf

    def _launch(self, session: Session) -> None:
        env = _scrubbed_env(os.environ)
        env.update(self.env)
        env["PYSPARK_PYTHON"] = self._python
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        cwd = os.path.join(self._workdir, f"session-{session.id}")
        os.makedirs(cwd, exist_ok=True)
        command_read, command_write = os.pipe()
        message_read, message_write = os.pipe()
        try:
            session.process = subprocess.Popen(
                [self._python, "-I", REPL_SCRIPT, str(command_read), str(message_write)],
                pass_fds=(command_read, message_write), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                start_new_session=True)
        finally:
            os.close(command_read)
            os.close(message_write)
        session._command_fd = command_write
        session.send({"type": "start", "master": self.spark_master,
                      "conf": self._spark_conf(session),
                      "app_name": session.name or f"livy-session-{session.id}",
                      "py_files": session.request.get("pyFiles") or []})
        for target, args, name in ((self._read_log, (session,), "log"),
                                   (self._read_messages, (session, message_read), "messages")):
            thread = threading.Thread(target=target, args=args, daemon=True,
                                      name=f"livy-session-{session.id}-{name}")
            session._threads.append(thread)
            thread.start()

    def _read_log(self, session: Session) -> None:
        for raw in session.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                session.log.append(line)

    def _read_messages(self, session: Session, fd: int) -> None:
        with os.fdopen(fd, "rb") as messages:
            for line in messages:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                self._on_message(session, message)
        session.process.wait()
        self._on_exit(session)

    def _on_message(self, session: Session, message: dict) -> None:
        kind = message.get("type")
        with self._lock:
            if kind == "ready":
                session.app_id = message.get("app_id")
                session.spark_ui_url = message.get("spark_ui_url")
                if session.state == "starting":
                    session.state = "idle"
            elif kind == "failed":
                session.log.append(message.get("error", ""))
            elif kind == "progress":
                statement = self._statement_by_id(session, message.get("id"))
                if statement is not None and not statement.finished:
                    statement.progress = float(message["progress"])
            elif kind == "result":
                statement = self._statement_by_id(session, message.get("id"))
                if statement is not None:
                    statement.output = message["output"]
                    statement.progress = 1.0
                    statement.completed = _now_ms()
                    statement.state = ("cancelled" if statement.state == "cancelling"
                                       else "available")
                if session.state == "busy":
                    session.state = "idle"
                    session.last_activity = time.monotonic()  # Livy: busy -> idle
        self._dispatch(session)

    def _on_exit(self, session: Session) -> None:
        """The REPL is gone: a deleted session is killed, any other one is dead."""
        session.kill_process_group(wait=STOP_GRACE)
        session.close_commands()
        code = session.process.returncode
        with self._lock:
            if session.killed_on_purpose:
                session.state = "killed"
                final_state = "cancelled"
                output = None
            else:
                session.state = "dead"
                final_state = "error"
                output = {"status": "error", "execution_count": None, "ename": "Error",
                          "evalue": f"Interpreter died:\nthe session process exited with "
                                    f"code {code}", "traceback": []}
            for statement in session.statements:
                if not statement.finished:
                    statement.state = final_state
                    statement.output = output
                    statement.completed = _now_ms()

    def delete_session(self, session_id: int) -> None:
        """Stop a session gracefully (SparkSession stopped, process exits) and forget it."""
        with self._lock:
            session = self._get(session_id)
            del self._active[session_id]
            session.killed_on_purpose = True
            was = session.state
            if was not in ("dead", "error", "killed", "success"):
                session.state = "shutting_down"
        if session.process is not None and session.process.poll() is None:
            if was in ("starting", "busy"):
                # a busy or starting interpreter would not read the request: stop it hard
                session.kill_process_group()
            elif not session.send({"type": "shutdown"}):
                session.kill_process_group()
            try:
                session.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                session.kill_process_group()
                session.process.wait()
        for thread in session._threads:
            thread.join(STOP_GRACE)
        with self._lock:
            session.state = "killed"

    def _get(self, session_id: int) -> Session:
        session = self._active.get(session_id)
        if session is None:
            raise LivyError(404, f"Session '{session_id}' not found.")
        session.heartbeat()
        return session

    # -- statements ------------------------------------------------------------------------

    def create_statement(self, session_id: int, request: dict) -> dict:
        """Queue a statement; returns its view as created (``waiting``)."""
        code = request.get("code")
        if not isinstance(code, str):
            raise LivyError(400, "code must be a string")
        with self._lock:
            session = self._get(session_id)
            kind = request.get("kind") or session.kind
            if kind == "shared":
                raise LivyError(400, "Code type should be specified if session kind is shared")
            if kind not in SESSION_KINDS:
                raise LivyError(400, f"Invalid kind: {kind}")
            if kind not in RUNNABLE_KINDS:
                raise LivyError(400, f"this Livy test server runs pyspark and sql statements, "
                                     f"not {kind}")
            if session.state in ("shutting_down", "error", "dead", "killed", "success"):
                raise LivyError(400, f"Session is in state {session.state}")
            statement = Statement(len(session.statements), code, kind)
            session.statements.append(statement)
            session.last_activity = time.monotonic()
            view = statement.view()
        self._dispatch(session)
        return view

    def _dispatch(self, session: Session) -> None:
        """Start the next waiting statement if the interpreter is idle."""
        with self._lock:
            if session.state != "idle":
                return
            statement = next((s for s in session.statements if s.state == "waiting"), None)
            if statement is None:
                return
            statement.state = "running"
            statement.started = _now_ms()
            session.state = "busy"
        session.send({"type": "execute", "id": statement.id, "kind": statement.kind,
                      "code": statement.code})

    def statement(self, session_id: int, statement_id: int) -> Statement:
        with self._lock:
            session = self._get(session_id)
            statement = self._statement_by_id(session, statement_id)
        if statement is None:
            raise LivyError(404, "Statement not found")
        return statement

    def cancel_statement(self, session_id: int, statement_id: int) -> None:
        with self._lock:
            session = self._get(session_id)
            statement = self._statement_by_id(session, statement_id)
            if statement is None:
                raise LivyError(404, "Statement not found")
            session.last_activity = time.monotonic()
            if statement.state == "waiting":
                statement.state = "cancelled"
                statement.completed = _now_ms()
                return
            if statement.state != "running":
                return
            statement.state = "cancelling"
        threading.Thread(target=self._interrupt, args=(session, statement), daemon=True,
                         name=f"livy-cancel-{session.id}-{statement.id}").start()

    def _interrupt(self, session: Session, statement: Statement) -> None:
        """SIGINT the REPL until the statement has ended (it may be between bytecodes)."""
        while statement.state == "cancelling" and session.process.poll() is None:
            try:
                os.kill(session.process.pid, signal.SIGINT)
            except ProcessLookupError:
                return
            time.sleep(CANCEL_RESEND)

    @staticmethod
    def _statement_by_id(session: Session, statement_id) -> Optional[Statement]:
        if isinstance(statement_id, int) and 0 <= statement_id < len(session.statements):
            return session.statements[statement_id]
        return None

    # -- views -----------------------------------------------------------------------------

    def sessions_view(self, start: int, size: int) -> dict:
        with self._lock:
            active = [self._active[key] for key in sorted(self._active)]
            return {"from": start, "total": len(active),
                    "sessions": [s.view() for s in active[start:start + size]]}

    def session_view(self, session_id: int) -> dict:
        with self._lock:
            return self._get(session_id).view()

    def state_view(self, session_id: int) -> dict:
        with self._lock:
            session = self._get(session_id)
            return {"id": session.id, "state": session.state}

    def log_view(self, session_id: int, start: Optional[int], size: Optional[int]) -> dict:
        with self._lock:
            session = self._get(session_id)
            lines = list(session.log)
        size = 100 if size is None else size
        if size < 0:
            size = len(lines)
        if start is None or start < 0:
            start = max(0, len(lines) - size)
        return {"id": session_id, "from": start, "total": len(lines),
                "log": lines[start:start + size]}

    def statements_view(self, session_id: int, start: int, size: Optional[int]) -> dict:
        with self._lock:
            statements = list(self._get(session_id).statements)
            views = [s.view() for s in statements]
        size = len(views) if size is None else size
        return {"total_statements": len(views), "statements": views[start:start + size]}


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LivyError(400, f"For input string: \"{text}\"") from None


class _Handler(BaseHTTPRequestHandler):
    """Routes Livy's REST calls to a :class:`LivyServer` (``livy``, set by a subclass)."""

    livy: LivyServer
    protocol_version = "HTTP/1.1"
    server_version = "LivyTestServer"

    _SESSION = re.compile(r"^/sessions/([^/]+)$")
    _STATE = re.compile(r"^/sessions/([^/]+)/state$")
    _LOG = re.compile(r"^/sessions/([^/]+)/log$")
    _STATEMENTS = re.compile(r"^/sessions/([^/]+)/statements$")
    _STATEMENT = re.compile(r"^/sessions/([^/]+)/statements/([^/]+)$")
    _CANCEL = re.compile(r"^/sessions/([^/]+)/statements/([^/]+)/cancel$")

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    # -- plumbing --------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        body = self._read_body()
        rule = self.livy._misbehaviour(method, urlsplit(self.path).path)
        if rule is not None:
            if rule.hold is not None:
                rule.holding.set()
                rule.hold.wait()
            if rule.status is not None:
                self._send_raw(rule.status, rule.body, rule.content_type)
                return
        user = self._authenticate()
        if user is False:
            return
        if self.livy.csrf and method not in ("GET", "HEAD", "OPTIONS") \
                and self.headers.get("X-Requested-By") is None:
            self._send_text(400, CSRF_MESSAGE)
            return
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            status, payload = self._route(method, path, query, body, user)
        except LivyError as error:
            status, payload = error.status, {"msg": error.message}
        self._send_json(status, payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authenticate(self):
        """The basic-auth user (None without auth); False after answering 401."""
        if self.livy.auth is None:
            return None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = password = None
            if (user, password) == self.livy.auth:
                return user
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="livy"')
        body = b"Authentication required"
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return False

    def _json_body(self, body: bytes) -> dict:
        if not body.strip():
            return {}
        try:
            data = json.loads(body)
        except ValueError as error:
            raise LivyError(400, f"Request body is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise LivyError(400, "Request body must be a JSON object")
        return data

    def _send_json(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status, text)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- routes ----------------------------------------------------------------------------

    def _route(self, method, path, query, body, user):
        livy = self.livy
        if method == "GET" and path == "/version":
            return 200, {"version": LIVY_VERSION, "user": "livy", "revision": "test",
                         "branch": "test", "date": "", "url": ""}
        if path == "/sessions":
            if method == "GET":
                return 200, livy.sessions_view(_int(query.get("from", "0")),
                                               _int(query.get("size", "100")))
            if method == "POST":
                session = livy.create_session(self._json_body(body), user, query.get("doAs"))
                return 201, livy.session_view(session.id)
        match = self._SESSION.match(path)
        if match:
            session_id = _int(match.group(1))
            if method == "GET":
                return 200, livy.session_view(session_id)
            if method == "DELETE":
                livy.delete_session(session_id)
                return 200, {"msg": "deleted"}
        match = self._STATE.match(path)
        if match and method == "GET":
            return 200, livy.state_view(_int(match.group(1)))
        match = self._LOG.match(path)
        if match and method == "GET":
            start = _int(query["from"]) if "from" in query else None
            size = _int(query["size"]) if "size" in query else None
            return 200, livy.log_view(_int(match.group(1)), start, size)
        match = self._STATEMENTS.match(path)
        if match:
            session_id = _int(match.group(1))
            if method == "GET":
                size = _int(query["size"]) if "size" in query else None
                return 200, livy.statements_view(session_id, _int(query.get("from", "0")), size)
            if method == "POST":
                return 201, livy.create_statement(session_id, self._json_body(body))
        match = self._STATEMENT.match(path)
        if match and method == "GET":
            statement = livy.statement(_int(match.group(1)), _int(match.group(2)))
            with livy._lock:
                return 200, statement.view()
        match = self._CANCEL.match(path)
        if match and method == "POST":
            livy.cancel_statement(_int(match.group(1)), _int(match.group(2)))
            return 200, {"msg": "canceled"}
        raise LivyError(404, f"Requested resource {method} {path} not found")


@pytest.fixture(scope="module")
def livy_server():
    """A started :class:`LivyServer` (no auth, CSRF on) shared by a test module."""
    with LivyServer() as server:
        yield server
