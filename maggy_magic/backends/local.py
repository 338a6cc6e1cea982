"""The local backend: long-lived worker processes on this machine.

Workers are never forked from the kernel, so the kernel's threads and state do not leak
into them. By default (``start="auto"``) one template process is spawned per run: it
imports the worker's modules and loads the cloudpickled training function once, and
every worker is forked from it (:mod:`.template`), so starting W workers costs one
interpreter's imports, not W. A dist run (its ranks want fresh processes), a run that
asks for GPUs or CPUs per trial (their environment must be set before the frameworks
load), ``start="spawn"``, or a template that cannot load the function spawns each worker
as a fresh Python process running :func:`maggy_magic.worker.main`, with its setup
(driver address, secret, TLS fingerprint, ``sys.path``) and the function on its stdin.
A worker's raw output goes to ``workers/<id>.out`` in the run directory, while the
worker loop streams lines to the driver. Workers live in
their own session, so a terminal's Ctrl-C reaches only the kernel, which then stops
them. A worker that dies while the run is still going is replaced, up to a restart
budget.

GPUs (``gpus_per_trial``): the devices are this process's ``CUDA_VISIBLE_DEVICES``, else
those ``nvidia-smi -L`` lists, else none; worker ``i`` gets its own of them (with a
fraction ``1/n``, workers ``n*k .. n*k+n-1`` share device ``k``) through the environment
it is spawned with (:func:`maggy_magic.resources.worker_env`), so no framework in it sees
another device, and a replacement gets the same ones. More workers than the devices hold
is a one-line ConfigError before anything starts; the default worker count is what they
hold. ``cpus_per_trial`` caps the default worker count at ``cpu_count // cpus_per_trial``
and sizes each worker's thread pools (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, unless set); no CPU affinity is set. Without a request the
workers' environment is the kernel's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from ..errors import ConfigError
from ..resources import Resources, assign, too_many, visible_devices, worker_env
from ..worker import ABORT_EXIT
from .base import Backend, Launch
from .forks import Template

#: How workers start: auto (forked from a template when the run allows it), fork, spawn.
START_METHODS = ("auto", "fork", "spawn")

_TAIL_BYTES = 2000


class LocalBackend(Backend):
    """N worker processes on this machine."""

    name = "local"
    release_idle = True  # a worker that exits 0 is not replaced

    def __init__(self, max_restarts: Optional[int] = None, start: str = "auto"):
        if start not in START_METHODS:
            raise ConfigError(f"local backend option start must be one of "
                              f"{', '.join(START_METHODS)}, got {start!r}")
        self.max_restarts = max_restarts
        self.start_method = start
        self._procs: Dict[str, subprocess.Popen] = {}
        self._template: Optional[Template] = None
        self._lock = threading.Lock()
        self._stopping = False
        self._restarts = 0
        self._launch: Optional[Launch] = None
        self._payload = b""
        self._watchers: List[threading.Thread] = []
        #: The run's request per trial, the devices this machine shows (None: no GPU
        #: request) and each worker's share of them, by worker index.
        self.resources = Resources()
        self.visible: Optional[List[str]] = None
        self.devices: List[List[str]] = []

    def default_workers(self) -> int:
        """CPUs (at most 8; with cpus_per_trial, cpu_count // cpus_per_trial); with
        gpus_per_trial, as many workers as the devices hold."""
        cpus = os.cpu_count() or 1
        count = min(cpus, 8)
        if self.resources.cpus:
            count = cpus // self.resources.cpus
        if self.visible is not None:
            held = self.resources.capacity(len(self.visible))
            count = held if not self.resources.cpus else min(count, held)
        return max(1, count)

    def request_resources(self, request: Resources, workers: Optional[int]) -> None:
        """Find the devices (a GPU request); refuse more workers than they hold."""
        self.resources = request
        if request.gpus is None:
            return
        self.visible = visible_devices()
        capacity = request.capacity(len(self.visible))
        if capacity == 0 or (workers is not None and workers > capacity):
            raise ConfigError(too_many(workers or 1, capacity, len(self.visible), request))

    def start(self, launch: Launch) -> None:
        self._launch = launch
        if launch.payload:
            self._payload = launch.payload
        else:
            import cloudpickle

            self._payload = cloudpickle.dumps(launch.function)
        if self.max_restarts is None:
            self.max_restarts = 2 * launch.num_workers + 2
        if self.visible is not None:
            self.devices = assign(self.visible, launch.num_workers, self.resources)
        os.makedirs(os.path.join(launch.run_dir, "workers"), exist_ok=True)
        if self.start_method != "spawn" and not launch.fresh_processes and \
                not self.resources and hasattr(os, "fork"):
            self._template = Template.start(
                self._env(None), self._payload, [p for p in sys.path if p],
                os.path.join(launch.run_dir, "workers", "template.out"), self._exited,
                tls=bool(launch.fingerprint))
        ids = [str(index) for index in range(launch.num_workers)]
        if self._template is not None and \
                self._template.fork_all([(wid, self._header(wid)) for wid in ids]):
            return
        for worker_id in ids:
            self._spawn(worker_id)

    def _env(self, devices: Optional[List[str]]) -> Dict[str, str]:
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        python_path = os.environ.get("PYTHONPATH", "")
        return dict(os.environ, PYTHONUNBUFFERED="1",
                    PYTHONPATH=package_parent + (os.pathsep + python_path if python_path
                                                 else ""),
                    **worker_env(devices, self.resources.cpus))

    def _header(self, worker_id: str) -> Dict[str, Any]:
        """The setup worker ``worker_id`` reads: the driver's address, secret and TLS
        fingerprint, its id, ``sys.path``, its devices."""
        launch = self._launch
        assert launch is not None
        header = {"host": launch.host, "port": launch.port, "secret": launch.secret.hex(),
                  "worker": worker_id, "sys_path": [p for p in sys.path if p],
                  "fingerprint": launch.fingerprint}
        if self.devices:
            header["devices"] = self.devices[int(worker_id)]
        return header

    def _spawn(self, worker_id: str) -> None:
        """Start worker ``worker_id``: forked from the template when there is one, else
        a fresh process."""
        launch = self._launch
        assert launch is not None
        header = self._header(worker_id)
        devices = header.get("devices")
        out_path = os.path.join(launch.run_dir, "workers", f"{worker_id}.out")
        if self._template is not None and self._template.fork(worker_id, header):
            return
        env = self._env(devices)
        with open(out_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from maggy_magic.worker import main; main()"],
                stdin=subprocess.PIPE,
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                close_fds=True)
        with self._lock:
            self._procs[worker_id] = proc
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(header).encode() + b"\n" + self._payload)
            proc.stdin.close()
        except OSError:
            pass  # the process died at once; its watcher reports it
        watcher = threading.Thread(target=self._watch, args=(worker_id, proc, out_path),
                                   name=f"maggy-local-{worker_id}", daemon=True)
        watcher.start()
        self._watchers.append(watcher)

    def _watch(self, worker_id: str, proc: subprocess.Popen, out_path: str) -> None:
        code = proc.wait()
        with self._lock:
            if self._stopping or self._procs.get(worker_id) is not proc:
                return
            del self._procs[worker_id]
        self._exited(worker_id, code)

    def _exited(self, worker_id: str, code: int) -> None:
        """A worker process ended with ``code`` while the run goes on."""
        launch = self._launch
        assert launch is not None
        out_path = os.path.join(launch.run_dir, "workers", f"{worker_id}.out")
        with self._lock:
            if self._stopping:
                return
            # exit code 0: the worker left because the driver ended the run;
            # ABORT_EXIT: the driver aborted it (its gang failed) and expects a new one;
            # anything else (DRIVER_LOST_EXIT: its connection broke) is replaced while the
            # restart budget lasts, then the run fails
            aborted = code == ABORT_EXIT
            restart = aborted or (code != 0 and self._restarts < (self.max_restarts or 0))
            if restart and not aborted:
                self._restarts += 1
            alive = len(self._procs) + (self._template.alive() if self._template else 0)
        if restart:
            self._spawn(worker_id)
        elif code != 0 and alive == 0 and self._launch is not None:
            self._launch.fail(f"every local worker exited (last: worker {worker_id}, exit code "
                              f"{code}) after {self._restarts} restarts; its output ends with: "
                              f"{_tail(out_path)}")

    def worker_lost(self, worker_id: str) -> None:
        """Kill the process of a worker the driver gave up on; its watcher replaces it."""
        with self._lock:
            proc = self._procs.get(worker_id)
        if proc is not None and proc.poll() is None:
            proc.kill()
        elif self._template is not None:
            self._template.kill(worker_id)

    def stop(self, grace: float = 5.0) -> None:
        """Workers leave by themselves on ``shutdown``; whoever is left after ``grace``
        seconds is killed (a hung or stopped process ignores anything gentler)."""
        with self._lock:
            self._stopping = True
            procs = list(self._procs.values())
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._template is not None:
            self._template.stop(max(0.0, deadline - time.monotonic()))

    def pids(self) -> Dict[str, int]:
        """Worker id → process id of the live workers (for tests and tools)."""
        with self._lock:
            found = {wid: p.pid for wid, p in self._procs.items() if p.poll() is None}
        if self._template is not None:
            found.update(self._template.pids())
        return found

    def describe(self) -> dict:
        return {"backend": self.name}


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            text = handle.read().decode(errors="replace").strip()
    except OSError:
        return "(no output)"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
