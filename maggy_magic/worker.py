"""The worker loop: the one piece of code that runs trials, on every backend.

``WorkerLoop.run()`` connects to the driver, registers, then repeatedly receives a trial,
calls the training function with its arguments injected by name, streams metric points
and log lines in heartbeats, obeys ``stop``, and sends the final metric (which also asks
for the next trial). It returns when the driver says ``shutdown`` or disappears. The same
loop runs inside a local worker process (:func:`main`), a Spark task,
or a Spark task on a Livy cluster. Stdlib-only, apart from cloudpickle for loading the
function that the launcher hands over.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional

from . import rpc
from .errors import (
    EarlyStopException,
    MaggyError,
    RendezvousError,
    TrainFunctionError,
)
from .reporter import Outbox, Reporter, activate, deactivate
from .trainfn import build_kwargs, call_plan, final_metric
from .trial_files import ABORT_SEND, TrialFiles
from .worker_output import FdCapture, LineRouter

#: Log lines are sent at most this long after they were written.
LOG_FLUSH = 0.2
#: Exit code of a worker process that the driver aborted (its gang failed); a backend
#: replaces such a worker without counting it as a crash.
ABORT_EXIT = 75
#: Exit code of a worker process whose connection to the driver broke while the run went
#: on (no ``shutdown`` came): the backend replaces it, counting it as a restart.
DRIVER_LOST_EXIT = 76
#: Seconds a rendezvous waits beyond the driver's own timeout before giving up alone.
RENDEZVOUS_GRACE = 30.0


# -- what a trial function may ask about its trial ---------------------------------------
class TrialContext:
    """Injected as ``trial_context`` into a trial function that names it.

    ``trial_id`` and ``info`` (the trial's ``info_dict`` as the driver sent it) describe the
    trial; ``host`` is this worker's address as seen on its connection to the driver;
    ``rendezvous`` and ``note`` talk to the driver (see :class:`WorkerLoop`).
    """

    def __init__(self, loop: "WorkerLoop", trial_id: str, info: Dict[str, Any]):
        self._loop = loop
        self.trial_id = trial_id
        self.info = dict(info or {})
        #: This worker's :class:`~maggy_magic.trial_files.TrialFiles` (checkpoint relay).
        self.files = loop.files

    @property
    def host(self) -> str:
        return self._loop.local_address()

    def rendezvous(self, key: str, value: Any, timeout: Optional[float] = None) -> list:
        """Every gang member's ``value`` for ``key``, in rank order (blocks until all sent
        theirs); raises :class:`RendezvousError` if the gang fails or time runs out."""
        return self._loop.rendezvous(self.trial_id, key, value, timeout)

    def note(self, info: Dict[str, Any]) -> None:
        """Merge ``info`` (JSON) into the trial's ``info_dict`` on the driver."""
        self._loop.send_note(self.trial_id, info)


# -- the loop -------------------------------------------------------------------------
class WorkerLoop:
    """Runs trials for one driver until told to stop.

    ``load`` returns the training function (it is called after registering, so a failure
    to load is reported to the driver). ``on_driver_lost`` is ``"exit"`` for processes the
    backend owns (the process ends at once) or ``"return"`` (the loop returns after the
    running trial notices, e.g. inside a Spark task).
    """

    def __init__(self, load: Callable[[], Callable], worker_id: str, host: str, port: int,
                 secret: bytes, *, on_driver_lost: str = "return", fingerprint: Any = None,
                 extras: Optional[Dict[str, Any]] = None, route_output: bool = True,
                 connect: Optional[Dict[str, float]] = None,
                 devices: Optional[list] = None):
        self.load = load
        #: The GPUs the backend gave this worker (told to the driver when registering).
        self.devices = devices
        self.worker_id = worker_id
        self.address = (host, port)
        self.secret, self.fingerprint = secret, fingerprint  # the driver's pinned TLS cert
        self.on_driver_lost = on_driver_lost
        self.extras = extras or {}
        self.route_output = route_output
        #: How to reach the driver: ``timeout`` per attempt, ``budget`` for all attempts
        #: (see :func:`maggy_magic.rpc.connect`); default one attempt of 30 s.
        self.connect = dict(connect or {})
        self.outbox = Outbox()
        self.current_trial: Optional[str] = None
        self.reporter: Optional[Reporter] = None
        self.hb_interval = 1.0
        self.optimization_key = "metric"
        #: The run directory as the driver tells it (None until welcomed).
        self.run_dir: Optional[str] = None
        self.trials_run = 0
        self._inbox: "queue.SimpleQueue[Optional[dict]]" = queue.SimpleQueue()
        #: Trials handed over and then revoked before they started (each revocation
        #: cancels one hand-over); guarded by ``_claim_lock`` with ``current_trial``.
        self._revoked: set = set()
        #: Trials told to stop after they were claimed but before their reporter existed.
        self._stop_early: set = set()
        self._claim_lock = threading.Lock()
        #: Set once the driver said ``shutdown`` or went away: no queued trial starts.
        self._ending = threading.Event()
        #: Taking pending points/logs and sending them is one step (see :meth:`_send`).
        self._send_lock = threading.Lock()
        self._plan = None
        self.rendezvous_timeout = 300.0
        self._waiters: Dict[tuple, list] = {}
        self._waiters_lock = threading.Lock()
        self._done = threading.Event()
        self._client: Optional[rpc.Client] = None
        #: The trial's folders: the run directory, or staged here and sent home.
        self.files = TrialFiles(self._send)
        #: Called before a trial's end is reported (collects output still in flight).
        self.before_report: Callable[[], Any] = lambda: None
        #: The heartbeat's pause between ticks, False once done (FdCapture reads in it).
        self.pause: Callable[[float], bool] = lambda seconds: not self._done.wait(seconds)

    def run(self) -> int:
        """Serve trials; returns the number of trials run."""
        self._client = rpc.Client(*self.address, self.secret, fingerprint=self.fingerprint,
                                  **self.connect)
        hello = {"type": "register", "worker": self.worker_id,
                 "host": socket.gethostname(), "pid": os.getpid()}
        if self.devices is not None:
            hello["devices"] = [str(d) for d in self.devices]
        self._client.hello(hello)
        reader = threading.Thread(target=self._read, name="maggy-reader", daemon=True)
        reader.start()
        old_streams = sys.stdout, sys.stderr
        if self.route_output:
            sys.stdout = sys.stderr = LineRouter(self)
        beater = threading.Thread(target=self._heartbeat, name="maggy-heartbeat", daemon=True)
        beater.start()
        try:
            try:
                fn = self.load()
            except Exception as exc:  # noqa: BLE001 - reported to the driver
                self._send({"type": "fatal", "error": f"{type(exc).__name__}: {exc}",
                            "error_type": type(exc).__name__})
                return 0
            self._plan = call_plan(fn)
            while True:
                msg = self._inbox.get()
                if msg is None or self._ending.is_set():
                    break
                with self._claim_lock:
                    if msg["trial"] in self._revoked:
                        self._revoked.discard(msg["trial"])
                        continue
                    self.current_trial = msg["trial"]
                self._send(self._run_trial(fn, msg))
        except rpc.ConnectionLost:
            pass
        finally:
            self._done.set()
            self.files.cleanup()
            if self.route_output:
                sys.stdout.flush()
                sys.stdout, sys.stderr = old_streams
            self._client.close()
        return self.trials_run

    def _send(self, message: dict, label: bool = False) -> None:
        """Send ``message`` with the points and log lines pending now, in one step, so
        points never travel after their trial's final report or under another trial's
        id; ``label`` puts the running trial's id on it as of that step."""
        assert self._client is not None
        with self._send_lock:
            if label:
                message["trial"] = self.current_trial
            while True:
                points, logs = self.outbox.take()
                if not self.outbox.has_logs or message["type"] == "heartbeat":
                    break
                # more output than one frame holds: it goes ahead in heartbeats, so a
                # trial's final report comes after all of its output
                self._client.send({"type": "heartbeat", "trial": message.get("trial"),
                                   "points": points, "logs": logs})
            if points:
                message["points"] = points
            if logs:
                message["logs"] = logs
            self._client.send(message)

    def _run_trial(self, fn: Callable, msg: dict) -> dict:
        trial_id = msg["trial"]
        reporter = Reporter(trial_id, self.outbox, msg.get("budget"), msg.get("params"),
                            run_dir=self.run_dir, files_root=self.files.root)
        if not self.files.shared and self.run_dir:
            reporter.fetch_checkpoint = lambda rel, path: self._fetch_checkpoint(trial_id,
                                                                                 rel)
        with self._claim_lock:
            self.reporter, self.current_trial = reporter, trial_id
            if trial_id in self._stop_early:
                self._stop_early.discard(trial_id)
                reporter.stop()
        activate(reporter)
        self.trials_run += 1
        reply: Dict[str, Any] = {"trial": trial_id}
        try:
            extras = self.extras
            if self._plan is not None and "trial_context" in self._plan[0]:
                extras = dict(extras, trial_context=TrialContext(self, trial_id,
                                                                 msg.get("info") or {}))
            kwargs = build_kwargs(fn, msg.get("params") or {}, reporter, msg.get("budget"),
                                  extras, self._plan)
            returned = fn(**kwargs)
            value, metrics = final_metric(returned, self.optimization_key)
            reply.update(type="final", value=value, metrics=metrics, early_stopped=False)
        except EarlyStopException:
            reply.update(type="final", value=reporter.last_metric, metrics={},
                         early_stopped=True)
        except Exception as exc:  # noqa: BLE001 - a trial's failure is data
            tb = exc.__traceback__
            if isinstance(exc, MaggyError) and not isinstance(exc, TrainFunctionError):
                tb = None
            reply.update(type="error", error=str(exc) or type(exc).__name__,
                         error_type=type(exc).__name__,
                         traceback="".join(traceback.format_exception(type(exc), exc, tb)))
        finally:
            if self.route_output:
                sys.stdout.flush()
            self.before_report()
            if reporter.checkpoint is not None and not self.files.shared:
                self._send_checkpoint(trial_id, reporter.checkpoint)
            self.files.send_home(trial_id)  # before the end is reported: the driver
            deactivate(reporter)              # records the trial's files first
            self.reporter, self.current_trial = None, None
        return reply

    def _fetch_checkpoint(self, trial_id: str, rel: str) -> None:
        """The driver's copy of the configuration folder ``rel``, if it has one."""
        try:
            self.files.fetch(trial_id, os.path.join(self.run_dir or "", *rel.split("/")))
        except MaggyError as exc:
            if "does not exist" not in str(exc) and "No such file" not in str(exc):
                raise  # a first rung has none; anything else is a real failure

    def _send_checkpoint(self, trial_id: str, path: str) -> None:
        """The configuration folder home (the next rung may run on another worker)."""
        try:
            if os.listdir(path):
                self.files.relay(trial_id, path)
        except (OSError, MaggyError) as exc:
            self.outbox.add_line(trial_id, f"maggy-magic: the checkpoint folder did not "
                                           f"travel to the driver: {exc}")

    def _read(self) -> None:
        assert self._client is not None
        try:
            while True:
                msg = self._client.recv()
                kind = msg.get("type")
                if kind == "trial":
                    self._inbox.put(msg)
                elif kind == "revoke":
                    with self._claim_lock:  # stop it if it started, else skip it once
                        if self.current_trial == msg.get("trial"):
                            self._stop_reporter(msg.get("trial"))
                        else:
                            self._revoked.add(msg.get("trial"))
                elif kind == "stop":
                    with self._claim_lock:
                        self._stop_reporter(msg.get("trial"))
                elif kind == "rendezvous":
                    self._answer(msg)
                elif kind == "abort":
                    # a peer of this worker's gang failed: peers may be blocked inside a
                    # collective operation, so the process leaves now and is replaced
                    try:  # with its trial's files, if that is quick
                        if self.current_trial is not None:
                            self.files.send_home(self.current_trial,
                                                 time.monotonic() + ABORT_SEND)
                    except Exception:  # noqa: BLE001, S110 - leaving is what matters
                        pass
                    os._exit(ABORT_EXIT)
                elif kind in ("files", "chunk"):
                    self.files.deliver(msg)
                elif kind == "welcome":
                    self.hb_interval = float(msg.get("hb_interval") or 1.0)
                    self.optimization_key = msg.get("optimization_key") or "metric"
                    self.rendezvous_timeout = float(msg.get("rendezvous_timeout") or 300.0)
                    self.run_dir = msg.get("run_dir")
                    self.files.welcome(msg)
                elif kind == "shutdown":
                    break
        except (rpc.ConnectionLost, rpc.FrameError):
            if self.on_driver_lost == "exit" and not self._done.is_set():
                os._exit(DRIVER_LOST_EXIT)
        self._ending.set()
        self._answer_all("the driver ended the run")
        self.files.close("the driver ended the run")
        reporter = self.reporter
        if reporter is not None:
            reporter.stop()
        self._inbox.put(None)

    def _stop_reporter(self, trial_id: Any) -> None:
        reporter = self.reporter
        if reporter is not None and reporter.trial_id == trial_id:
            reporter.stop()
        elif trial_id is not None and trial_id == self.current_trial:
            self._stop_early.add(trial_id)  # claimed, its reporter not made yet

    # -- talking to the driver for a trial (gangs) ----------------------------------------
    def local_address(self) -> str:
        """This end's address on the connection to the driver (reachable by peers)."""
        try:
            return str(self._client.sock.getsockname()[0])  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return "127.0.0.1"

    def rendezvous(self, trial_id: str, key: str, value: Any,
                   timeout: Optional[float] = None) -> list:
        """Send ``value`` for ``(trial's gang, key)``; wait for the driver's answer."""
        slot: list = [threading.Event(), None, None]
        with self._waiters_lock:
            self._waiters[(trial_id, key)] = slot
        try:
            self._send({"type": "rendezvous", "trial": trial_id, "key": key, "value": value})
            limit = (timeout if timeout is not None else self.rendezvous_timeout)
            if not slot[0].wait(limit + (RENDEZVOUS_GRACE if timeout is None else 0.0)):
                raise RendezvousError(f"rendezvous {key!r} got no answer within {limit:g} s "
                                      "(a peer rank never arrived)")
        finally:
            with self._waiters_lock:
                self._waiters.pop((trial_id, key), None)
        if slot[2] is not None:
            raise RendezvousError(f"rendezvous {key!r} failed: {slot[2]}")
        return slot[1]

    def send_note(self, trial_id: str, info: Dict[str, Any]) -> None:
        self._send({"type": "note", "trial": trial_id, "info": dict(info)})

    def _answer(self, msg: dict) -> None:
        with self._waiters_lock:
            slot = self._waiters.get((msg.get("trial"), msg.get("key")))
        if slot is not None:
            slot[1], slot[2] = msg.get("values"), msg.get("error")
            slot[0].set()

    def _answer_all(self, error: str) -> None:
        with self._waiters_lock:
            slots = list(self._waiters.values())
        for slot in slots:
            slot[2] = error
            slot[0].set()

    def _heartbeat(self) -> None:
        """Send pending logs within LOG_FLUSH, and metrics and liveness every hb_interval
        for as long as the worker is connected (loading the function included: a slow
        import is not a lost worker)."""
        last = time.monotonic()
        while self.pause(LOG_FLUSH):
            now = time.monotonic()
            if self.outbox.has_logs or now - last >= self.hb_interval:
                try:
                    self._send({"type": "heartbeat"}, label=True)
                except (rpc.ConnectionLost, OSError):
                    return
                except Exception as exc:  # noqa: BLE001 - the heartbeat must go on
                    print(f"maggy-magic: a heartbeat could not be sent ({type(exc).__name__}: "
                          f"{exc})", file=sys.__stderr__)
                last = now


# -- local worker process entry point -------------------------------------------------
def main() -> None:
    """Entry point of a local worker process; the launcher writes its setup to stdin.

    stdin holds one JSON line (driver address, hex secret, TLS fingerprint, worker id,
    sys.path), then the cloudpickled training function (from this kernel's local backend).
    """
    header = json.loads(sys.stdin.buffer.readline())
    payload = sys.stdin.buffer.read()
    sys.stdin.close()
    for entry in reversed(header.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)

    def load() -> Callable:
        import cloudpickle

        return cloudpickle.loads(payload)

    serve(header, load)


def serve(header: Dict[str, Any], load: Callable[[], Callable]) -> None:
    """Run the worker loop of ``header`` (driver address, secret, worker id...) with the
    function ``load()`` gives, then leave the process (exit code 0; the loop's own exits
    say otherwise). Shared by spawned workers and those forked from a template."""
    loop = WorkerLoop(load, header["worker"], header["host"], header["port"],
                      bytes.fromhex(header["secret"]), on_driver_lost="exit",
                      fingerprint=header.get("fingerprint"), devices=header.get("devices"))
    capture = FdCapture(loop)
    loop.before_report = lambda: capture.drain(final=True)
    loop.pause = lambda seconds: capture.forward_for(seconds, loop._done)
    loop.run()
    sys.stdout.flush()
    os._exit(0)
