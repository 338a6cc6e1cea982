"""A single-threaded loop with calls posted from other threads, periodic calls, and an
end.

:class:`EventLoop` is the skeleton of the driver's loop and knows nothing of workers:
:meth:`~EventLoop.run_until_done` alternates between waiting (the ``wait_for(timeout)``
it is given, which returns early when :meth:`~EventLoop.wake` is called), running posted
calls, and running periodic calls that are due. Nothing sleeps: the next deadline is the
wait's timeout.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Deque, List, Optional


class EventLoop:
    """Posted and periodic calls around a wait; :meth:`wake` ends a wait early."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._posted: Deque[Callable[[], None]] = collections.deque()
        #: [interval, fn, next due (monotonic)]
        self._periodic: List[list] = []

    def wake(self) -> None:
        """End the current wait soon (safe from any thread)."""
        raise NotImplementedError

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread soon. Safe from any thread."""
        self._posted.append(fn)
        self.wake()

    def add_periodic(self, interval: float, fn: Callable[[], None], *,
                     first: bool = False) -> None:
        """Call ``fn`` on the loop thread every ``interval`` seconds, from ``interval``
        seconds from now (``first``: before the calls added earlier, when several are
        due at once)."""
        entry = [interval, fn, time.monotonic() + interval]
        if first:
            self._periodic.insert(0, entry)
        else:
            self._periodic.append(entry)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the loop is done (or ``timeout``); True if it is."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set_done(self) -> None:
        """The loop ends after the current step (no posted or periodic call runs after)."""
        self._done.set()

    def run_until_done(self, wait_for: Callable[[float], None]) -> None:
        """Loop until :meth:`set_done`. Call from exactly one thread."""
        while not self._done.is_set():
            due = min((entry[2] for entry in self._periodic), default=None)
            timeout = 3600.0 if due is None else max(0.0, due - time.monotonic())
            wait_for(timeout)
            if self._done.is_set():
                return
            while self._posted:
                self._posted.popleft()()
            now = time.monotonic()
            for entry in list(self._periodic):
                if now >= entry[2]:
                    entry[2] = now + entry[0]
                    entry[1]()
