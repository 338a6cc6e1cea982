"""A real Spark Connect server for tests, started from pyspark's own script.

``ConnectServer(master, conf=..., address=...)`` runs ``sbin/start-connect-server.sh
--wait`` on a free port of ``address`` (loopback by default), in a mount namespace of its
own where this checkout is hidden (its executors run the venv's Python, which then cannot
import maggy_magic or the tests: both must travel as Connect artifacts), and stops it (the
whole process group) on exit. ``url`` is its ``sc://`` address; ``session()`` is a client
session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Optional

from netcluster import executor_python, hidden_paths, spark_home

#: Hang guard for the server's start (a driver JVM and its executors): not a speed bound.
START_GUARD = 180.0


class ConnectServer:
    def __init__(self, master: str = "local-cluster[2,1,1024]", log_dir: str = "/tmp",
                 conf: Optional[dict] = None, address: str = "127.0.0.1"):
        self.master = master
        self.address = address
        self.conf = dict(conf or {})
        self.port = _free_port(address)
        self.log = os.path.join(log_dir, f"maggy-connect-{self.port}.log")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"sc://{self.address}:{self.port}"

    def __enter__(self) -> "ConnectServer":
        env = dict(os.environ, SPARK_HOME=spark_home(), SPARK_LOCAL_IP="127.0.0.1",
                   PYSPARK_PYTHON=executor_python(), SPARK_LOG_DIR=os.path.dirname(self.log),
                   SPARK_PID_DIR=os.path.dirname(self.log), SPARK_IDENT_STRING=str(self.port))
        env.pop("PYTHONPATH", None)
        script = ("set -e; "
                  + "".join(f"mount -t tmpfs tmpfs {path}; "
                            for path in hidden_paths(private_tmp=False))
                  + 'exec bash "$SPARK_HOME/sbin/start-connect-server.sh" --wait '
                  f"--master '{self.master}' "
                  f"--conf spark.connect.grpc.binding.address={self.address} "
                  f"--conf spark.connect.grpc.binding.port={self.port} "
                  "--conf spark.ui.enabled=false --conf spark.task.maxFailures=8 "
                  "--conf spark.scheduler.barrier.maxConcurrentTasksCheck.interval=1s"
                  + "".join(f" --conf '{k}={v}'" for k, v in self.conf.items()))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + START_GUARD
        while not _listening(self.address, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the Spark Connect server did not start: {self._tail()}")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def session(self):
        from pyspark.sql import SparkSession

        return SparkSession.builder.remote(self.url).getOrCreate()

    def _tail(self) -> str:
        try:
            with open(self.log, errors="replace") as handle:
                return " | ".join(handle.read().strip().splitlines()[-5:])
        except OSError:
            return "(no log)"


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False
