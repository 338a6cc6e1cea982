"""The kernel's side of a template worker process (:mod:`.template`): start it, ask it for
workers, learn their pids and exits, kill one, end them all.

:meth:`Template.start` returns None when the template cannot serve the run (it could not
load the function, or did not say so within ``READY_WAIT``); the local backend then spawns
its workers one by one, as it does for runs that cannot fork.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

#: Seconds the template may take to import the worker's modules and load the function.
READY_WAIT = 120.0


class Template:
    """A started template; ``on_exit(worker_id, code)`` hears of each worker's end."""

    def __init__(self, proc: subprocess.Popen, on_exit: Callable[[str, int], None],
                 out_dir: str):
        self.proc, self.on_exit, self.out_dir = proc, on_exit, out_dir
        self.ready = True
        self._pids: Dict[str, int] = {}
        self._lock = threading.Condition()
        self._stopping = False
        self._reader = threading.Thread(target=self._read, name="maggy-template", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, env: Dict[str, str], payload: bytes, sys_path: List[str], out_path: str,
              on_exit: Callable[[str, int], None], tls: bool = False
              ) -> Optional["Template"]:
        """Spawn the template with ``payload`` (the cloudpickled function); None if it
        cannot serve (see the module docstring). ``tls``: the workers will speak TLS to
        the driver (the template loads ``ssl`` once, for all of them)."""
        with open(out_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from maggy_magic.backends.template import main; main()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out, env=env,
                start_new_session=True, close_fds=True)
        assert proc.stdin is not None and proc.stdout is not None
        answer: List[Dict[str, Any]] = []
        try:
            proc.stdin.write(json.dumps({"sys_path": sys_path, "payload_bytes": len(payload),
                                         "tls": tls}).encode() + b"\n" + payload)
            proc.stdin.flush()
            reader = threading.Thread(target=lambda: answer.append(_first_message(proc)),
                                      daemon=True)
            reader.start()
            reader.join(READY_WAIT)
        except (OSError, ValueError):
            pass
        if not answer or "ready" not in answer[0]:
            _end(proc)
            return None
        return cls(proc, on_exit, os.path.dirname(out_path))

    def fork(self, worker_id: str, header: Dict[str, Any]) -> bool:
        """Ask for worker ``worker_id`` (its output goes to ``<id>.out`` next to the
        template's); False when the template is gone (spawn it)."""
        return self.fork_all([(worker_id, header)])

    def fork_all(self, workers: List[Tuple[str, Dict[str, Any]]]) -> bool:
        """Ask for several workers in one write: one command each, as :meth:`fork`.
        (Written one by one, each command would wait for the interpreter lock, which
        the driver's thread holds while it registers the workers forked before.) A
        header's ``sys_path`` stays here: the template set its own from the setup."""
        commands = b"".join(json.dumps({"fork": worker_id, "header": {
            key: value for key, value in header.items() if key != "sys_path"}}).encode()
            + b"\n" for worker_id, header in workers)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(commands)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = _message(line)
            if "output" in message:
                self._keep(message["output"], base64.b64decode(message["data"]))
            elif "forked" in message:
                with self._lock:
                    self._pids[message["forked"]] = int(message["pid"])
            elif "exited" in message:
                with self._lock:
                    self._pids.pop(message["exited"], None)
                    stopping = self._stopping
                    self._lock.notify_all()
                if not stopping:
                    self.on_exit(message["exited"], int(message["code"]))
        with self._lock:
            self._pids.clear()
            self._lock.notify_all()

    def _keep(self, worker_id: str, data: bytes) -> None:
        try:
            with open(os.path.join(self.out_dir, f"{worker_id}.out"), "ab") as handle:
                handle.write(data)
        except OSError:
            pass  # the run directory is full or gone: the worker's own stream has its lines

    def kill(self, worker_id: str) -> None:
        with self._lock:
            pid = self._pids.get(worker_id)
        if pid is not None:
            _signal(pid, signal.SIGKILL)

    def alive(self) -> int:
        with self._lock:
            return len(self._pids)

    def pids(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._pids)

    def stop(self, grace: float) -> None:
        """No more workers: wait up to ``grace`` seconds for those left, kill the rest,
        then let the template go."""
        deadline = time.monotonic() + grace
        with self._lock:
            self._stopping = True
            while self._pids and time.monotonic() < deadline:
                self._lock.wait(max(0.0, deadline - time.monotonic()))
            left = list(self._pids.values())
        for pid in left:
            _signal(pid, signal.SIGKILL)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            _end(self.proc)
        self._reader.join(5.0)


def _message(line: bytes) -> Dict[str, Any]:
    """A protocol line as a dict; anything else (a stray print) as an empty one."""
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _first_message(proc: subprocess.Popen) -> Dict[str, Any]:
    """The template's first protocol message (``ready`` or ``unavailable``), or ``{}``
    when it ended without one."""
    assert proc.stdout is not None
    for line in proc.stdout:
        message = _message(line)
        if "ready" in message or "unavailable" in message:
            return message
    return {}


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _end(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
