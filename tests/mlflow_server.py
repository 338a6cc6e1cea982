"""A real MLflow tracking server for tests: ``mlflow server`` on 127.0.0.1 and a free port,
a SQLite backend store and a local artifact folder (proxied: artifacts travel over HTTP
like the rest), in a folder of its own that goes away with it.

``MlflowServer(folder)``: ``start()`` (waits for ``/health``), ``stop()`` (the server and
its worker processes), ``url``, ``client()`` (an ``MlflowClient`` on it); also ``with``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

#: Seconds a server may take to answer /health (it starts in a few seconds on an idle
#: machine; a loaded one with two cores takes longer).
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    def __init__(self, folder: str):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> "MlflowServer":
        os.makedirs(self.folder, exist_ok=True)
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        self.log = open(os.path.join(self.folder, "server.log"), "wb")
        self.process = subprocess.Popen(
            [mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1",
             "--backend-store-uri", f"sqlite:///{os.path.join(self.folder, 'mlflow.db')}",
             "--artifacts-destination", os.path.join(self.folder, "artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.folder,
            start_new_session=True)  # its own process group: stop() ends its workers too
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}): "
                                   f"{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not answer in {START_TIMEOUT:g} s: "
                                   f"{self._log_tail()}")
            time.sleep(0.2)  # polling a process we do not control

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(2)
        except subprocess.TimeoutExpired:  # its job runner lingers: the store is a test's
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # and every worker it started
        except ProcessLookupError:
            pass
        self.process.wait(15)
        self.log.close()

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.url)

    def _log_tail(self) -> str:
        with open(os.path.join(self.folder, "server.log"), "rb") as handle:
            return handle.read()[-2000:].decode(errors="replace")

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
