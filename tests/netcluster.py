"""A Spark standalone cluster of separate "hosts" on this machine, for tests.

Each worker host is a network namespace of its own (one end of a veth pair, the other end
on a bridge this module creates) and a mount namespace of its own: a private ``/tmp``,
and an empty folder over this checkout, so nothing the driver writes is visible there and
the project cannot be imported (the executors run the venv's Python, which has pyspark,
and the editable install points into the hidden checkout). The master and the driver run
in this process's namespace, on the bridge's address. Every address used lies on an
interface this module creates (the bridge and the veth pairs, in a /24 no route of this
machine uses), and everything is torn down at the end: processes killed, namespaces and
links deleted.

``NamespacedCluster(hosts=2)`` is a context manager; ``start_host()`` brings a killed host
back (same name and address, a fresh namespace) or adds one,
``kill_host(name)`` kills every process of one host with SIGKILL, ``alive_workers()`` asks
the master. ``session(**conf)`` makes the SparkSession (stopping any other first).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Hang guard for the cluster's own start (a JVM each): not a speed bound.
START_GUARD = 120.0
#: Seconds without a heartbeat before the master drops a worker (Spark's default is 60;
#: a killed host must be gone soon, so that a host coming back gets its executors).
WORKER_TIMEOUT = 6


class ClusterUnavailable(RuntimeError):
    """Namespaces, links or the Spark processes could not be made (the message says which
    command failed and how)."""


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise ClusterUnavailable(f"{' '.join(args)} failed ({done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()} (the namespaced test "
                                 "cluster needs root and the ip/unshare tools)")
    return done


def _free_subnet() -> str:
    """``10.213.N`` for a /24 that no route of this machine already covers."""
    routes = _sh("ip", "-4", "route", "show", "table", "all").stdout
    for n in range(os.getpid() % 200 + 20, 254):
        if f"10.213.{n}." not in routes:
            return f"10.213.{n}"
    raise ClusterUnavailable("no free 10.213.N.0/24 for the test cluster")


def spark_home() -> str:
    import pyspark

    return os.path.dirname(os.path.realpath(pyspark.__file__))


def executor_python() -> str:
    """This venv's interpreter by a path that does not go through the checkout (which
    the hosts do not see)."""
    return os.path.join(os.path.realpath(sys.prefix), "bin", "python")


def hidden_paths(private_tmp: bool = True) -> List[str]:
    """What a host must not see of this machine: the checkout, or, if the venv lives
    inside it, the checkout's code folders; with ``private_tmp`` (the host mounts its own
    ``/tmp`` first) those under ``/tmp`` are hidden already and left out."""
    if os.path.realpath(sys.prefix).startswith(os.path.realpath(ROOT) + os.sep):
        paths = [os.path.join(ROOT, d) for d in ("maggy_magic", "tests", "notebooks")]
    else:
        paths = [ROOT]
    if not private_tmp:
        return paths
    return [p for p in paths if not os.path.realpath(p).startswith("/tmp/")]


class Host:
    """One worker host: its namespace, address and Spark worker process."""

    def __init__(self, name: str, netns: str, address: str, veth: str):
        self.name, self.netns, self.address, self.veth = name, netns, address, veth
        self.process: Optional[subprocess.Popen] = None
        self.log = ""
        self.killed = False

    def pids(self) -> List[int]:
        done = _sh("ip", "netns", "pids", self.netns, check=False)
        return [int(p) for p in done.stdout.split()]


class NamespacedCluster:
    """A standalone master in this namespace and ``hosts`` worker hosts (see the module
    docstring). ``cores`` and ``memory`` are each worker's."""

    def __init__(self, hosts: int = 2, cores: int = 1, memory: str = "1500m",
                 log_dir: Optional[str] = None):
        self.wanted, self.cores, self.memory = hosts, cores, memory
        self.tag = f"m{os.getpid() % 100000}"
        self.bridge = f"mmbr{self.tag}"
        self.log_dir = log_dir or os.path.join("/tmp", f"maggy-netcluster-{self.tag}")
        self.hosts: Dict[str, Host] = {}
        self.master: Optional[subprocess.Popen] = None
        self.prefix = ""
        self.port, self.ui_port = 7077, 8080
        self._count = 0

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> "NamespacedCluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def driver_address(self) -> str:
        """This process's address on the cluster's network (the bridge)."""
        return f"{self.prefix}.1"

    @property
    def url(self) -> str:
        return f"spark://{self.driver_address}:{self.port}"

    def start(self) -> None:
        if os.geteuid() != 0:
            raise ClusterUnavailable("the namespaced test cluster needs root (network and "
                                     "mount namespaces); run the suite as root, as CI does")
        os.makedirs(self.log_dir, exist_ok=True)
        self.prefix = _free_subnet()
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.driver_address}/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        self._start_master()
        for _ in range(self.wanted):
            self.start_host()
        self.wait_workers(self.wanted)

    def close(self) -> None:
        for host in list(self.hosts.values()):
            self._kill(host)
            self._remove(host)
        if self.master is not None and self.master.poll() is None:
            os.killpg(self.master.pid, signal.SIGKILL)
            self.master.wait(10)
        _sh("ip", "link", "del", self.bridge, check=False)

    # -- hosts ------------------------------------------------------------------------
    def start_host(self) -> Host:
        """Start a worker host (returns at once): a host killed earlier comes back under
        its name and address (a fresh namespace, nothing kept), else a new one."""
        dead = next((h for h in self.hosts.values() if h.killed), None)
        if dead is not None:
            index = int(dead.name[len("host"):])
            self._remove(dead)
        else:
            self._count += 1
            index = self._count
        name = f"host{index}"
        host = Host(name, f"mm-{self.tag}-{name}", f"{self.prefix}.{10 + index}",
                    f"mmv{self.tag}h{index}")
        _sh("ip", "netns", "add", host.netns)
        self.hosts[name] = host
        _sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
            "netns", host.netns)
        _sh("ip", "link", "set", host.veth, "master", self.bridge)
        _sh("ip", "link", "set", host.veth, "up")
        inside = ("ip", "netns", "exec", host.netns)
        _sh(*inside, "ip", "link", "set", "lo", "up")
        _sh(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        _sh(*inside, "ip", "link", "set", "eth0", "up")
        host.log = os.path.join(self.log_dir, f"{name}.log")
        script = (
            "set -e; mount -t tmpfs -o mode=1777 tmpfs /tmp; "
            + "".join(f"mount -t tmpfs tmpfs {path}; " for path in hidden_paths()) +
            f"hostname {name} 2>/dev/null || true; "
            "mkdir -p /tmp/spark-work /tmp/spark-local; "
            'exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker '
            f"--host {host.address} --cores {self.cores} --memory {self.memory} "
            f"--work-dir /tmp/spark-work {self.url}")
        env = self._env(SPARK_LOCAL_IP=host.address, SPARK_LOCAL_DIRS="/tmp/spark-local",
                        SPARK_WORKER_DIR="/tmp/spark-work",
                        # heartbeats every timeout / 4: the master's 6 s needs them often
                        SPARK_WORKER_OPTS=f"-Dspark.worker.timeout={WORKER_TIMEOUT}")
        with open(host.log, "ab") as log:
            host.process = subprocess.Popen(
                [*inside, "unshare", "-m", "-u", "--propagation", "private", "sh", "-c",
                 script], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        return host

    def ensure_hosts(self, count: int) -> None:
        """Start hosts until ``count`` are up (after a test killed some) and wait until
        the master sees each of them."""
        missing = count - len([h for h in self.hosts.values() if not h.killed])
        for _ in range(max(0, missing)):
            self.start_host()
        self.wait_workers(count)

    def _remove(self, host: Host) -> None:
        _sh("ip", "netns", "del", host.netns, check=False)
        _sh("ip", "link", "del", host.veth, check=False)
        self.hosts.pop(host.name, None)

    def wait_executors(self, session, count: int, guard: float = START_GUARD) -> None:
        """Wait until ``session`` has ``count`` executors (after hosts came back)."""
        tracker = session.sparkContext.statusTracker()
        deadline = time.monotonic() + guard
        while len(tracker.getExecutorInfos()) - 1 < count:  # the driver is listed too
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"{count} executor(s) did not register within "
                                         f"{guard:g} s")
            time.sleep(0.5)

    def kill_host(self, name: str) -> List[int]:
        """SIGKILL every process of host ``name`` (worker, executors, Python workers)."""
        return self._kill(self.hosts[name])

    def _kill(self, host: Host) -> List[int]:
        host.killed = True
        pids = host.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if host.process is not None:
            try:
                host.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return pids

    # -- the master -------------------------------------------------------------------
    def _start_master(self) -> None:
        self.port, self.ui_port = _free_port(self.driver_address), _free_port(
            self.driver_address)
        log = open(os.path.join(self.log_dir, "master.log"), "ab")
        self.master = subprocess.Popen(
            [os.path.join(spark_home(), "bin", "spark-class"),
             "org.apache.spark.deploy.master.Master", "--host", self.driver_address,
             "--port", str(self.port), "--webui-port", str(self.ui_port)],
            env=self._env(SPARK_LOCAL_IP=self.driver_address,
                          SPARK_MASTER_OPTS=f"-Dspark.worker.timeout={WORKER_TIMEOUT}"),
            stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def state(self) -> dict:
        """The master's JSON view (workers, applications)."""
        url = f"http://{self.driver_address}:{self.ui_port}/json/"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read().decode())

    def alive_workers(self) -> List[str]:
        """Addresses of the workers the master sees ALIVE."""
        try:
            workers = self.state().get("workers", [])
        except OSError:
            return []
        return [w.get("host") for w in workers if w.get("state") == "ALIVE"]

    def wait_no_applications(self, guard: float = START_GUARD) -> None:
        """Until the master runs no application (one that ended has let its executors
        go), so that the next session gets the workers' cores."""
        deadline = time.monotonic() + guard
        while True:
            try:
                if not self.state().get("activeapps"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"an application still held the workers after "
                                         f"{guard:g} s: {self._tail('master')}")
            time.sleep(0.5)

    def wait_workers(self, count: int, guard: float = START_GUARD) -> None:
        deadline = time.monotonic() + guard
        up = {h.address for h in self.hosts.values() if not h.killed}
        while len(set(self.alive_workers()) & up) < min(count, len(up)):
            if self.master is not None and self.master.poll() is not None:
                raise ClusterUnavailable(f"the Spark master exited: {self._tail('master')}")
            for host in self.hosts.values():
                if not host.killed and host.process is not None \
                        and host.process.poll() is not None:
                    raise ClusterUnavailable(f"the worker of {host.name} exited: "
                                             f"{self._tail(host.name)}")
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"{count} Spark worker(s) did not register within "
                                         f"{guard:g} s: {self._tail('master')}")
            time.sleep(0.5)

    def _tail(self, name: str) -> str:
        try:
            with open(os.path.join(self.log_dir, f"{name}.log"), errors="replace") as handle:
                return " | ".join(handle.read().strip().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def _env(self, **extra: str) -> dict:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(SPARK_HOME=spark_home(), SPARK_NO_DAEMONIZE="1", **extra)
        env.setdefault("JAVA_HOME", _java_home())
        return env

    # -- the driver's session ---------------------------------------------------------
    def session(self, **conf: str):
        """A SparkSession of this cluster's master, its driver on the bridge address and
        its executors running this interpreter (stops any session running first)."""
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        active = SparkContext._active_spark_context
        if active is not None:
            active.stop()
        os.environ["PYSPARK_PYTHON"] = executor_python()
        settings = {
            "spark.driver.host": self.driver_address,
            "spark.driver.bindAddress": self.driver_address,
            "spark.executor.memory": "768m",
            "spark.executor.cores": str(self.cores),
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.task.maxFailures": "8",
            "spark.pyspark.python": executor_python(),
        }
        settings.update(conf)
        builder = SparkSession.builder.master(self.url).appName("maggy-netcluster")
        for key, value in settings.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()


def _free_port(address: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _java_home() -> str:
    java = shutil.which("java") or "/usr/bin/java"
    return os.path.dirname(os.path.dirname(os.path.realpath(java)))
