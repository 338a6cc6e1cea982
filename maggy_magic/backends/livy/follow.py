"""Following a run on a Livy session from this kernel: the poll loop and its handle.

:class:`Poller` runs the poll statements in a thread of its own and hands their events
to the local listeners (dashboard, text progress, the local record), reading back from
the cluster's journal what fell out of the session's buffer. :class:`RemoteRunHandle` is
what displays and magics hold in place of a local driver.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

from ...errors import LivyError, LivySessionError
from ...events import EventStream
from ...store import RunStore
from . import bootstrap, statements
from .remote import POLL_EVENTS
from .session import LivyTarget
from .settings import LivySettings


class RemoteRunHandle:
    """The local stand-in of the cluster's driver: what displays and magics call.

    ``events.run_id`` names the run; ``request_stop`` and ``interrupt`` are thread-safe
    and return at once (the poller sends the statement); ``wait`` and ``done`` say when
    the last poll arrived (or the poller failed).
    """

    def __init__(self, events: EventStream):
        self.events = events
        self.requests: List[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()

    def request_stop(self, reason: str = "stop requested") -> None:
        self._request("stop", reason)

    def interrupt(self, reason: str = "interrupted") -> None:
        self._request("interrupt", reason)

    def _request(self, mode: str, reason: str) -> None:
        with self._lock:
            self.requests.append((mode, reason))
        self._wake.set()

    def take_requests(self) -> List[tuple]:
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    def pause(self, seconds: float) -> None:
        """Wait up to ``seconds`` (less when a stop is requested)."""
        self._wake.wait(seconds)
        self._wake.clear()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def finish(self) -> None:
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()


class After:
    """The local record as a listener that skips the events it holds (seq <= ``kept``)."""

    def __init__(self, store: RunStore, kept: int):
        self.store, self.kept = store, kept

    def __call__(self, event: Dict[str, Any]) -> None:
        if int(event.get("seq", self.kept + 1)) > self.kept:
            self.store(event)


class Poller:
    """Runs the poll statements and replays their events (one thread, its own)."""

    def __init__(self, target: LivyTarget, run_id: str, handle: RemoteRunHandle,
                 events: EventStream, settings: LivySettings, store: RunStore):
        self.target, self.run_id, self.handle = target, run_id, handle
        self.events, self.settings, self.store = events, settings, store
        self.cursor = 0
        self.last_seq = -1
        self.final: Optional[Dict[str, Any]] = None
        self.failure: Optional[LivyError] = None
        self.remote_dir: Optional[str] = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="maggy-livy-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop delivering events (the local record is about to close)."""
        with self._lock:
            self._closed = True

    def _loop(self) -> None:
        timeout = self.settings.statement_timeout
        try:
            while self.final is None:
                for mode, reason in self.handle.take_requests():
                    bootstrap.call(self.target, statements.stop(self.run_id, mode, reason),
                                   timeout, "stop")
                answer = bootstrap.call(self.target, statements.poll(self.run_id, self.cursor,
                                                                     POLL_EVENTS),
                                        timeout, "poll")
                self.absorb(answer)
                if self.final is None:
                    self.handle.pause(self.settings.poll_interval)
            bootstrap.call(self.target, statements.forget(self.run_id), timeout, "cleanup")
        except LivyError as exc:
            self.failure = self.failure or exc
        except Exception as exc:  # noqa: BLE001 - the run must end in a known state
            self.failure = LivyError(f"polling the Livy session failed: "
                                     f"{type(exc).__name__}: {exc}")
            print(traceback.format_exc(), file=sys.stderr)
        finally:
            self.handle.finish()

    def absorb(self, answer: Dict[str, Any]) -> None:
        """Deliver one poll's events; note the end of the run."""
        if "unknown_run" in answer:
            raise LivySessionError(f"{self.target.label} no longer knows run {self.run_id} "
                                   "(was the session restarted?); the local record keeps "
                                   "what arrived")
        lost = answer.get("lost")
        if lost:
            self._recover(lost[1] - lost[0], answer.get("events") or [])
        for event in answer.get("events") or []:
            if event.get("type") == "run_started":
                self.remote_dir = event.get("run_dir")
            self.last_seq = event.get("seq", self.last_seq)
            self._deliver(event)
        self.cursor = int(answer.get("cursor", self.cursor))
        self.store.flush()
        if answer.get("done"):
            self.final = answer
            self.handle.finish()

    def _recover(self, count: int, after: List[Dict[str, Any]]) -> None:
        """Deliver the ``count`` events that fell out of the cluster's buffer before the
        events ``after``, read from the run's journal there; what cannot be read is an
        ``events_lost`` event, never a silent hole."""
        end = int(after[0]["seq"]) if after else self.last_seq + 1 + count
        first, timeout = end - count, self.settings.statement_timeout
        try:
            while first < end:
                answer = bootstrap.call(self.target, statements.replay(
                    self.run_id, first, end, POLL_EVENTS), timeout, "replay")
                found = answer.get("events") or []
                if not found:
                    break
                for event in found:
                    self.last_seq = event.get("seq", self.last_seq)
                    if event.get("type") == "run_started":
                        self.remote_dir = event.get("run_dir")
                    self._deliver(event)
                first = int(found[-1]["seq"]) + 1
        except LivyError:
            pass
        if first < end:
            self._deliver({"type": "events_lost", "run": self.run_id, "seq": self.last_seq,
                           "t": time.time(), "first": first, "end": end,
                           "count": end - first,
                           "reason": "the cluster's event buffer overflowed between polls "
                                     "and its journal did not have them"})

    def _deliver(self, event: Dict[str, Any]) -> None:
        with self._lock:
            if not self._closed:
                self.events.deliver(event)
