"""Serve a kernel's widget messages while the cell that runs an experiment blocks.

A Jupyter kernel handles one shell message at a time: while a cell executes, the
messages a widget's front-end sends (a button click, a synced trait) wait behind it. A
blocking ``%%maggy`` cell would only see its Stop button after the run is over.

:class:`CommPump` reads the shell messages addressed to the kernel's main thread itself,
handles those for an existing widget (``comm_msg``, ``comm_close``) at once and keeps
every other message (a queued ``execute_request``, ``kernel_info_request``, ...) in
arrival order; when the pump stops it hands those back to the kernel, which runs them
after the current cell, exactly as it would have without the pump.

It works with ipykernel 7 (shell channel thread, messages forwarded to the main thread
over an inproc socket) and ipykernel 6 (main thread reads the shell socket). On anything
else :meth:`CommPump.for_current_kernel` returns None and callers simply block.

Contract: create and use a pump on the kernel's main thread, inside the executing cell,
and only one at a time. ``KeyboardInterrupt`` (the kernel's Interrupt) propagates out of
:meth:`CommPump.serve_until`; the kept messages are handed back all the same.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Callable, List, Optional

#: Messages for an existing comm; served while a cell runs.
_LIVE_COMM_TYPES = frozenset({"comm_msg", "comm_close"})


class CommPump:
    """Handles widget messages for the kernel's main thread until told to stop."""

    def __init__(self, kernel: Any, source: Any, reply_stream: Any,
                 redispatch: Callable[[List[Any]], None]):
        self._kernel = kernel
        self._source = source            # zmq socket the main thread's messages arrive on
        self._reply_stream = reply_stream
        self._redispatch = redispatch
        self._kept: List[List[Any]] = []
        self.handled = 0                 # widget messages handled (for tests and logs)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def for_current_kernel(cls) -> Optional["CommPump"]:
        """A pump for the running IPython kernel, or None (no kernel, unknown version)."""
        try:
            from IPython import get_ipython
        except ImportError:
            return None
        shell = get_ipython()
        kernel = getattr(shell, "kernel", None)
        if kernel is None or getattr(kernel, "session", None) is None:
            return None
        if threading.current_thread() is not threading.main_thread():
            return None
        channel_thread = getattr(kernel, "shell_channel_thread", None)
        if channel_thread is not None and hasattr(kernel, "shell_main"):
            # ipykernel 7: the shell channel thread forwards main-thread messages
            manager = channel_thread.manager
            pair = manager.get_shell_channel_to_subshell_pair(None)
            reply = manager.get_subshell_to_shell_channel_socket(None)
            return cls(kernel, pair.to_socket, reply, _redispatch_v7(kernel))
        stream = getattr(kernel, "shell_stream", None)
        if stream is None:
            return None
        if hasattr(kernel, "shell_main"):       # ipykernel 7 without subshells
            return cls(kernel, stream.socket, stream, _redispatch_v7(kernel))
        if hasattr(kernel, "schedule_dispatch") and hasattr(kernel, "dispatch_shell"):
            def redispatch(frames: List[Any]) -> None:    # ipykernel 6
                kernel.schedule_dispatch(kernel.dispatch_shell, frames)
            return cls(kernel, stream.socket, stream, redispatch)
        return None

    # -- serving ------------------------------------------------------------------------
    def serve_until(self, wake: "Wakeup", timeout: Optional[float] = None) -> bool:
        """Handle widget messages until ``wake`` is set (True) or ``timeout`` passes (False).

        Other messages are kept; they go back to the kernel when :meth:`close` is called.
        """
        import zmq

        poller = zmq.Poller()
        poller.register(self._source, zmq.POLLIN)
        poller.register(wake.fileno(), zmq.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not wake.is_set():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = dict(poller.poll(None if left is None else int(left * 1000)))
            if self._source in ready:
                self._drain()
            if deadline is not None and time.monotonic() >= deadline:
                break
        return wake.is_set()

    def close(self) -> None:
        """Read what is left, then give every kept message back to the kernel in order."""
        try:
            self._drain()
        finally:
            kept, self._kept = self._kept, []
            for frames in kept:
                self._redispatch(frames)

    def __enter__(self) -> "CommPump":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- one message --------------------------------------------------------------------
    def _drain(self) -> None:
        """Read until the socket is empty (afterwards the kernel's own reader is woken
        by the next message, so nothing is left behind when the pump stops)."""
        import zmq

        while True:
            try:
                frames = self._source.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frames)

    def _handle(self, frames: List[Any]) -> None:
        """Handle a message to a comm that exists now; keep anything else, in order."""
        kernel = self._kernel
        session = kernel.session
        try:
            idents, rest = session.feed_identities(frames, copy=False)
            header = session.deserialize(rest, content=False, copy=False)["header"]
            msg_type = header.get("msg_type")
            msg = None
            if msg_type in _LIVE_COMM_TYPES:
                msg = session.deserialize(rest, content=True, copy=False)
        except Exception:  # noqa: BLE001 - the kernel reports a bad message itself
            self._kept.append(frames)
            return
        handler = kernel.shell_handlers.get(msg_type)
        if msg is None or handler is None or not self._comm_exists(msg):
            # a comm_open, or a message for a comm a later cell creates, waits its turn
            self._kept.append(frames)
            return
        # The cell's output context stays in place: what a widget callback prints shows
        # in the running cell, and the cell's own output is not redirected elsewhere.
        try:
            handler(self._reply_stream, idents, msg)
        except Exception:  # noqa: BLE001 - as the kernel does: log it, keep serving
            kernel.log.error("maggy-magic: widget message handler failed", exc_info=True)
        self.handled += 1

    def _comm_exists(self, msg: dict) -> bool:
        manager = getattr(self._kernel, "comm_manager", None)
        comm_id = (msg.get("content") or {}).get("comm_id")
        return comm_id in (getattr(manager, "comms", None) or {})


class Wakeup:
    """A flag a poller can wait on: ``set()`` from any thread wakes ``serve_until``."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._flag = threading.Event()

    def fileno(self) -> int:
        return self._r.fileno()

    def set(self) -> None:
        self._flag.set()
        try:
            self._w.send(b"\0")
        except OSError:
            pass  # full (a wake-up is pending) or closed

    def is_set(self) -> bool:
        return self._flag.is_set()

    def close(self) -> None:
        self._r.close()
        self._w.close()


def _redispatch_v7(kernel: Any) -> Callable[[List[Any]], None]:
    def redispatch(frames: List[Any]) -> None:
        # a task queues behind the running cell on the kernel's shell lock, in order
        asyncio.ensure_future(kernel.shell_main(None, frames))
    return redispatch

