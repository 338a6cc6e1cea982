"""The driver's sockets: one listening socket, the workers' connections and a wake-up pair.

:class:`ConnectionHub` turns readiness into calls: every JSON message a connection
delivers goes to ``on_message(conn, message)``; a connection that breaks, or sends a frame
that must not be trusted (see :mod:`maggy_magic.rpc`), is closed and reported to
``on_closed(conn, reason, rejected)``. It knows nothing of workers or trials.

Threading: everything but :meth:`ConnectionHub.wake` runs on the driver's loop thread;
``wake`` may be called from any thread to end a :meth:`~ConnectionHub.poll` early.
"""

from __future__ import annotations

import selectors
import socket
from typing import Any, Callable, Dict

from .. import rpc

#: ``on_message(conn, message)``
MessageHandler = Callable[[rpc.ServerConnection, Dict[str, Any]], None]
#: ``on_closed(conn, reason, rejected)``: ``rejected`` is true for an untrusted frame.
ClosedHandler = Callable[[rpc.ServerConnection, str, bool], None]


class ConnectionHub:
    """Accepts worker connections on ``host`` (a free port) and moves their frames."""

    def __init__(self, host: str, secret: bytes, on_message: MessageHandler,
                 on_closed: ClosedHandler, backlog: int = 128):
        self.secret = secret
        self.on_message, self.on_closed = on_message, on_closed
        self._nonces: set = set()
        self._sel = selectors.DefaultSelector()
        self._listener = socket.create_server((host, 0), backlog=backlog)
        self._listener.setblocking(False)
        #: ``(host, port)`` that workers connect to.
        self.address = (host, self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")

    def wake(self) -> None:
        """End the current :meth:`poll` soon. Safe from any thread."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending) or the hub is closed

    def poll(self, timeout: float, keep_going: Callable[[], bool]) -> None:
        """Wait up to ``timeout`` seconds for sockets to get ready and serve them, while
        ``keep_going()`` holds (messages after the run ended are not delivered)."""
        for key, mask in self._sel.select(timeout):
            if not keep_going():
                return
            tag = key.data
            if tag == "accept":
                self._accept()
            elif tag == "wake":
                self._drain_wakeups()
            else:
                if mask & selectors.EVENT_WRITE:
                    tag.flush()
                    self._sync_interest(tag)
                if mask & selectors.EVENT_READ:
                    self.read(tag, keep_going)

    def read(self, conn: rpc.ServerConnection, keep_going: Callable[[], bool]) -> None:
        """Deliver the messages ``conn`` has ready now (also used out of turn, to hear a
        peer's news before acting on another connection's)."""
        try:
            messages = conn.read()
        except rpc.FrameError as exc:
            self.close(conn)
            self.on_closed(conn, str(exc), True)
            return
        except rpc.ConnectionLost as exc:
            self.close(conn)
            self.on_closed(conn, str(exc), False)
            return
        for message in messages:
            if conn.closed or not keep_going():
                return
            self.on_message(conn, message)
        self._sync_interest(conn)

    def send(self, conn: rpc.ServerConnection, message: Dict[str, Any]) -> None:
        """Queue ``message`` on ``conn``; it goes out as the socket accepts it."""
        conn.send(message)
        self._sync_interest(conn)

    def send_now(self, conn: rpc.ServerConnection, message: Dict[str, Any]) -> None:
        """Send ``message`` and push it out at once, as far as the socket takes it (for
        the last words of a run, when no loop will flush later)."""
        conn.send(message)
        try:
            conn.flush()
        except OSError:
            pass

    def close(self, conn: rpc.ServerConnection) -> None:
        """Stop watching ``conn`` and close it (idempotent)."""
        try:
            self._sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def close_all(self) -> None:
        """Close every socket, the listener and the wake-up pair."""
        for key in list(self._sel.get_map().values()):
            obj = key.fileobj
            try:
                self._sel.unregister(obj)
            except (KeyError, ValueError):
                pass
            try:
                obj.close()
            except OSError:
                pass
        self._sel.close()
        self._wake_w.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn = rpc.ServerConnection(sock, self.secret, self._nonces)
            self._sel.register(conn, selectors.EVENT_READ, conn)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _sync_interest(self, conn: rpc.ServerConnection) -> None:
        """Watch for writability exactly while the connection has queued output."""
        if conn.closed or conn.pending_output == conn.watching_write:
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending_output else 0)
        try:
            self._sel.modify(conn, want, conn)
            conn.watching_write = conn.pending_output
        except (KeyError, ValueError):
            pass
