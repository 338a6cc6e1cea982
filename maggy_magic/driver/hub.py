"""The driver's sockets: one listening socket, the workers' connections and a wake-up pair.

:class:`ConnectionHub` turns readiness into calls: every JSON message a connection
delivers goes to ``on_message(conn, message)``; a connection that breaks, or sends a frame
that must not be trusted (see :mod:`maggy_magic.rpc`), is closed and reported to
``on_closed(conn, reason, rejected)``. It knows nothing of workers or trials.

The port is open to every machine that can reach it, so a connection is a stranger
until its first frame passes the MAC check: at most :data:`MAX_STRANGERS` strangers are
held at once (the oldest is closed to make room) and each has :data:`STRANGER_DEADLINE`
seconds to authenticate. When ``accept`` itself fails (out of file descriptors, say) the
hub closes the oldest stranger, stops accepting for a moment and tries again, doubling
the pause up to :data:`ACCEPT_PAUSE_MAX`; a failing ``accept`` never ends a run.

With an ``ssl_context`` every accepted socket is wrapped for TLS and its handshake runs
inside :meth:`~ConnectionHub.poll`, without blocking; until it is done and the first
frame passed, the connection is a stranger like any other (a peer that does not speak
TLS fails the handshake and is closed as a rejected one).

Threading: everything but :meth:`ConnectionHub.wake` runs on the driver's loop thread;
``wake`` may be called from any thread to end a :meth:`~ConnectionHub.poll` early.
"""

from __future__ import annotations

import collections
import selectors
import socket
import ssl
import time
from typing import Any, Callable, Dict, Optional

from .. import rpc
from ..logs import logger
from .address import listen

#: Connections held at once that have not authenticated yet.
MAX_STRANGERS = 64
#: Seconds a new connection has to send a valid first frame.
STRANGER_DEADLINE = 10.0
#: First and longest pause of accepting after ``accept`` failed (seconds).
ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX = 0.05, 1.0

#: ``on_message(conn, message)``
MessageHandler = Callable[[rpc.ServerConnection, Dict[str, Any]], None]
#: ``on_closed(conn, reason, rejected)``: ``rejected`` is true for an untrusted frame.
ClosedHandler = Callable[[rpc.ServerConnection, str, bool], None]


class ConnectionHub:
    """Accepts worker connections on ``host`` (a free port) and moves their frames."""

    def __init__(self, host: Any, secret: bytes, on_message: MessageHandler,
                 on_closed: ClosedHandler, backlog: int = 128,
                 ssl_context: Optional[ssl.SSLContext] = None):
        self.secret = secret
        self.ssl_context = ssl_context
        self.on_message, self.on_closed = on_message, on_closed
        self._nonces: set = set()
        self._sel = selectors.DefaultSelector()
        # ``host``: an address, or a DriverAddress (bind one, advertise another, a port range)
        self._listener, advertised = listen(host, backlog)
        self._listener.setblocking(False)
        #: ``(host, port)`` that workers connect to.
        self.address = (advertised, self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        #: connection → the moment it must have authenticated, oldest first
        self._strangers: "collections.OrderedDict[rpc.ServerConnection, float]" = \
            collections.OrderedDict()
        self._accept_pause = 0.0
        self._accepting_again: Optional[float] = None  # monotonic; None while accepting
        #: Connections closed for not authenticating in time or to make room.
        self.strangers_closed = 0

    def wake(self) -> None:
        """End the current :meth:`poll` soon. Safe from any thread."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending) or the hub is closed

    def poll(self, timeout: float, keep_going: Callable[[], bool]) -> None:
        """Wait up to ``timeout`` seconds for sockets to get ready and serve them, while
        ``keep_going()`` holds (messages after the run ended are not delivered)."""
        now = time.monotonic()
        if self._accepting_again is not None:
            if now >= self._accepting_again:
                self._resume_accepting()
            else:
                timeout = min(timeout, self._accepting_again - now)
        if self._strangers:
            timeout = min(timeout, max(0.0, next(iter(self._strangers.values())) - now))
        self._expire_strangers(now)
        for key, mask in self._sel.select(max(0.0, timeout)):
            if not keep_going():
                return
            tag = key.data
            if tag == "accept":
                self._accept()
            elif tag == "wake":
                self._drain_wakeups()
            elif tag.handshaking:
                self._handshake(tag, keep_going)
            else:
                if mask & selectors.EVENT_WRITE:
                    tag.flush()
                    self._sync_interest(tag)
                if mask & selectors.EVENT_READ:
                    self.read(tag, keep_going)

    def read(self, conn: rpc.ServerConnection, keep_going: Callable[[], bool]) -> None:
        """Deliver the messages ``conn`` has ready now (also used out of turn, to hear a
        peer's news before acting on another connection's)."""
        if conn.handshaking or conn.closed:
            return
        messages = self._guarded(conn, conn.read)
        if messages is None:
            return
        if messages:
            self._strangers.pop(conn, None)  # authenticated: no longer a stranger
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
        self._strangers.pop(conn, None)
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
                self._accept_pause = 0.0
                return
            except OSError as exc:  # out of descriptors or buffers: make room, back off
                self._pause_accepting(exc)
                return
            if len(self._strangers) >= MAX_STRANGERS:
                self._close_stranger(next(iter(self._strangers)))
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True,
                                                        do_handshake_on_connect=False)
                except (ssl.SSLError, OSError):
                    sock.close()  # the peer went before it could be wrapped
                    continue
            conn = rpc.ServerConnection(sock, self.secret, self._nonces)
            self._sel.register(conn, selectors.EVENT_READ, conn)
            self._strangers[conn] = time.monotonic() + STRANGER_DEADLINE

    def _guarded(self, conn: rpc.ServerConnection, step: Callable[[], Any]) -> Any:
        """``step()`` on ``conn``; a connection it finds broken or untrusted is closed and
        reported (``on_closed``), and the answer is None."""
        try:
            return step()
        except rpc.FrameError as exc:
            self.close(conn)
            self.on_closed(conn, str(exc), True)
        except rpc.ConnectionLost as exc:
            self.close(conn)
            self.on_closed(conn, str(exc), False)
        return None

    def _handshake(self, conn: rpc.ServerConnection, keep_going: Callable[[], bool]) -> None:
        done = self._guarded(conn, conn.handshake)
        if done is None:
            return
        self._sync_interest(conn)
        if done:
            self.read(conn, keep_going)  # the first frame may have come with the handshake

    def _pause_accepting(self, exc: OSError) -> None:
        if self._strangers:
            self._close_stranger(next(iter(self._strangers)))
        self._accept_pause = min(ACCEPT_PAUSE_MAX, max(ACCEPT_PAUSE_MIN, 2 * self._accept_pause))
        self._accepting_again = time.monotonic() + self._accept_pause
        try:
            self._sel.unregister(self._listener)
        except (KeyError, ValueError):
            pass
        logger(__name__).warning("the driver could not accept a connection (%s); trying "
                                 "again in %.2f s", exc, self._accept_pause)

    def _resume_accepting(self) -> None:
        self._accepting_again = None
        try:
            self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        except (KeyError, ValueError):
            pass

    def _expire_strangers(self, now: float) -> None:
        while self._strangers:
            conn, deadline = next(iter(self._strangers.items()))
            if deadline > now:
                return
            self._close_stranger(conn)

    def _close_stranger(self, conn: rpc.ServerConnection) -> None:
        """A connection that never authenticated goes, without telling the driver (it
        never was a worker)."""
        self.strangers_closed += 1
        self.close(conn)

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
