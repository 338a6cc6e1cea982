"""A worker's output as log lines of the trial that printed them.

:class:`LineRouter` replaces ``sys.stdout``/``sys.stderr`` inside a worker, so Python-level
prints become lines of the running trial; :class:`FdCapture` does the same for what native
code writes to file descriptors 1 and 2 (local worker processes only). Both hand lines to
the worker loop's outbox (see :mod:`maggy_magic.worker`). Neither starts a thread: the
capture's pipe is read by the worker's heartbeat thread as it waits between ticks.
Stdlib only.
"""

from __future__ import annotations

import io
import os
import select
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import WorkerLoop


class LineRouter(io.TextIOBase):
    """A text stream that turns what is written into log lines of the current trial."""

    def __init__(self, loop: "WorkerLoop"):
        self._loop = loop
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            data = self._partial + text
            lines = data.split("\n")
            self._partial = lines.pop()
        for line in lines:
            self._loop.outbox.add_line(self._loop.current_trial, line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            partial, self._partial = self._partial, ""
        if partial:
            self._loop.outbox.add_line(self._loop.current_trial, partial)


class FdCapture:
    """Sends what native code writes to fds 1 and 2 to the driver (and to the log file).

    :meth:`forward_for` forwards output as it comes, on the thread that waits in it (the
    heartbeat's); ``drain()`` lets the loop collect what is already written before it
    reports a trial's end, so lines land in the right trial.
    """

    def __init__(self, loop: "WorkerLoop"):
        self._loop = loop
        self._read_fd, write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._original = os.dup(2)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._pending = b""
        self._lock = threading.Lock()
        self._open = True  # until every writer closed fds 1 and 2

    def forward_for(self, seconds: float, done: threading.Event) -> bool:
        """Forward what is written during ``seconds``; False (at once) when ``done`` is
        set, else True. (A writer blocks only once the pipe holds 64 KiB unread, while
        the waiting thread is busy sending.)"""
        until = time.monotonic() + seconds
        while not done.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return True
            if not self._open:
                return not done.wait(left)
            if select.select([self._read_fd], [], [], left)[0]:
                self._open = self.drain()
        return False

    def drain(self, final: bool = False) -> bool:
        """Forward what can be read now; False once the pipe is closed."""
        with self._lock:
            while True:
                try:
                    chunk = os.read(self._read_fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    return False
                os.write(self._original, chunk)
                self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            if final and self._pending:
                lines.append(self._pending)
                self._pending = b""
            for line in lines:
                self._loop.outbox.add_line(self._loop.current_trial,
                                           line.decode(errors="replace"))
        return True
