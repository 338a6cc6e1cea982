"""Authenticated JSON frames over TCP between the driver and its workers.

Wire format of one frame::

    4-byte big-endian payload length | 32-byte HMAC-SHA256 tag | payload (UTF-8 JSON object)

The tag is computed with the per-experiment 32-byte secret over a direction byte (``C``
for worker → driver, ``S`` for driver → worker), the connection's nonce (empty for the
first worker frame, which carries the nonce) and the payload. Each payload also carries
``n``, the frame's number in its direction. A frame with a wrong tag, a repeated or
skipped number, a reused nonce, bytes that are not a JSON object, or a length over
``MAX_FRAME`` is a :class:`FrameError`: the driver closes that connection and counts it.
Nothing but JSON ever crosses the socket. This module is stdlib-only: it ships to Spark
executors as part of a pure-Python zip.

With TLS (see :mod:`maggy_magic.driver.tls`) the same frames travel inside a TLS 1.2+
connection: the driver's :class:`ServerConnection` does its handshake without blocking,
and :class:`Client` accepts only the certificate whose SHA-256 fingerprint it was given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .errors import UnsendableValueError

MAX_FRAME = 8 * 1024 * 1024
#: Limit for the first frame of a connection, before its sender is authenticated.
FIRST_FRAME_MAX = 64 * 1024
HEADER = struct.Struct(">I")
TAG_SIZE = 32
PROTOCOL = 1

#: What a non-blocking plain socket raises when it cannot go on now.
_PLAIN_WOULD_BLOCK = (BlockingIOError, InterruptedError)


def _is_tls(sock: Any) -> bool:
    """Whether ``sock`` speaks TLS. ``ssl`` is imported only where TLS is used (the
    driver's :mod:`~maggy_magic.driver.tls`, a worker's pinned connection), so a plain
    worker, and the template local workers fork from, does without it."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(sock, ssl.SSLSocket)


def _would_block() -> tuple:
    """What a non-blocking socket raises when it cannot go on now (TLS: either way); an
    ``except`` clause evaluates it only once something was raised."""
    ssl = sys.modules.get("ssl")
    return _PLAIN_WOULD_BLOCK + ((ssl.SSLWantReadError, ssl.SSLWantWriteError) if ssl else ())


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_loads = json.loads


def _unencodable(message: Dict[str, Any]) -> str:
    """Where the first value that JSON cannot carry sits in ``message``, and what it is."""
    stack: List[Tuple[str, Any]] = [(str(message.get("type", "message")), message)]
    while stack:
        path, value = stack.pop(0)
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return (f"{path} has a key of type {type(key).__name__} ({key!r:.40}); "
                            "JSON keys are strings: convert it with str()")
                stack.append((f"{path}[{key!r}]", item))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            return (f"{path} is {value!r}, which JSON cannot carry; send a finite number or "
                    "None")
        elif not isinstance(value, (str, int, float, bool, type(None))):
            kind = f"{type(value).__module__}.{type(value).__qualname__}" \
                if type(value).__module__ != "builtins" else type(value).__qualname__
            return (f"{path} is a {kind} ({value!r:.40}), not a JSON value; convert it "
                    "(int(), float(), str(), .tolist())")
    return "the message is not JSON"


class FrameError(Exception):
    """A frame that must not be trusted; the connection that sent it is closed."""


class ConnectionLost(Exception):
    """The peer closed the connection or it broke."""


def new_secret() -> bytes:
    """A fresh per-experiment key."""
    return os.urandom(32)


def _tag(secret: bytes, direction: bytes, nonce: bytes, payload: bytes) -> bytes:
    return hmac.digest(secret, direction + nonce + payload, hashlib.sha256)


def encode(secret: bytes, direction: bytes, nonce: bytes, message: Dict[str, Any]) -> bytes:
    """One frame for ``message`` (which must already hold its number ``n``). A value that
    is not JSON raises :class:`~maggy_magic.errors.UnsendableValueError` naming where it
    is and its type; a message over ``MAX_FRAME`` raises :class:`FrameError`."""
    try:
        payload = _dumps(message).encode()
    except (TypeError, ValueError):
        raise UnsendableValueError(_unencodable(message)) from None
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(len(payload)) + _tag(secret, direction, nonce, payload) + payload


class _Endpoint:
    """Numbering and tagging shared by both ends of one connection."""

    def __init__(self, secret: bytes, send_dir: bytes, recv_dir: bytes):
        self.secret = secret
        self.send_dir, self.recv_dir = send_dir, recv_dir
        self.nonce = b""
        self.sent = 0
        self.received = 0

    def seal(self, message: Dict[str, Any]) -> bytes:
        """The frame of ``message``; a message that cannot be encoded raises and uses no
        number, so the connection stays in sequence."""
        message["n"] = self.sent
        frame = encode(self.secret, self.send_dir, self.nonce, message)
        self.sent += 1
        return frame

    def open(self, tag: bytes, payload: bytes, nonce: Optional[bytes] = None) -> Dict[str, Any]:
        """Verify and decode one payload; raises FrameError on anything wrong."""
        expected = _tag(self.secret, self.recv_dir,
                        self.nonce if nonce is None else nonce, payload)
        if not hmac.compare_digest(tag, expected):
            raise FrameError("bad MAC")
        try:
            message = _loads(payload.decode())
        except (ValueError, RecursionError):  # (RecursionError: nesting too deep)
            raise FrameError("payload is not JSON") from None
        if not isinstance(message, dict) or message.get("n") != self.received:
            raise FrameError("frame out of sequence or not an object")
        self.received += 1
        return message


class ServerConnection:
    """The driver's side of one worker connection: non-blocking, fed by a selector loop.

    ``read()`` returns the verified messages that arrived (possibly none); ``send()`` queues
    a message and writes what the socket accepts; ``pending_output`` tells the loop to
    wait for writability. Not thread-safe: only the driver's loop thread uses it.
    """

    def __init__(self, sock: socket.socket, secret: bytes, seen_nonces: set):
        self.sock = sock
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = _peername(sock)
        self._ep = _Endpoint(secret, b"S", b"C")
        self._seen = seen_nonces
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self.authenticated = False
        self.closed = False
        self._broken: Optional[str] = None  # why a frame was refused, once one was
        self.watching_write = False  # maintained by the driver's selector loop
        #: A TLS socket whose handshake is not done yet (see :meth:`handshake`).
        self.handshaking = _is_tls(sock)
        self._handshake_wants_write = False
        self.worker: Optional[str] = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def handshake(self) -> bool:
        """Take the TLS handshake as far as the socket allows now; True once it is done.
        A peer that does not speak TLS (or not 1.2+) is a :class:`FrameError`."""
        import ssl  # only a TLS connection gets here
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._handshake_wants_write = False
            return False
        except ssl.SSLWantWriteError:
            self._handshake_wants_write = True
            return False
        except ssl.SSLError as exc:
            raise FrameError(f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise ConnectionLost(str(exc)) from None
        self.handshaking = self._handshake_wants_write = False
        return True

    def _recv(self) -> bytes:
        """What the socket has now (a TLS socket may hold decrypted bytes beyond one
        ``recv``: they are taken too, since the selector would not report them)."""
        try:
            data = self.sock.recv(262144)
        except _would_block():
            return b""
        except OSError as exc:
            raise ConnectionLost(str(exc)) from None
        if not data:
            raise ConnectionLost("connection closed by worker")
        while _is_tls(self.sock) and self.sock.pending():
            try:
                data += self.sock.recv(self.sock.pending())
            except _would_block():
                break
            except OSError as exc:
                raise ConnectionLost(str(exc)) from None
        return data

    def read(self) -> List[Dict[str, Any]]:
        """The verified messages that arrived. After one :class:`FrameError` the
        connection is untrusted for good: every later call raises it again."""
        if self._broken is not None:
            raise FrameError(f"connection already refused: {self._broken}")
        try:
            return self._read()
        except FrameError as exc:
            self._broken = str(exc)
            raise

    def _read(self) -> List[Dict[str, Any]]:
        data = self._recv()
        if not data:
            return []
        buf = self._inbuf
        buf += data
        messages = []
        while len(buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(buf)
            if length > (MAX_FRAME if self.authenticated else FIRST_FRAME_MAX):
                raise FrameError(f"oversize frame ({length} bytes)")
            end = HEADER.size + TAG_SIZE + length
            if len(buf) < end:
                break
            tag = bytes(buf[HEADER.size:HEADER.size + TAG_SIZE])
            payload = bytes(buf[HEADER.size + TAG_SIZE:end])
            del buf[:end]
            if not self.authenticated:
                message = self._ep.open(tag, payload, nonce=b"")
                nonce = message.get("nonce")
                if not isinstance(nonce, str) or len(nonce) < 16 or nonce in self._seen:
                    raise FrameError("missing or reused nonce")
                self._seen.add(nonce)
                self._ep.nonce = nonce.encode("utf-8", "surrogatepass")
                self.authenticated = True
            else:
                message = self._ep.open(tag, payload)
            messages.append(message)
        return messages

    def send(self, message: Dict[str, Any]) -> None:
        if self.closed:
            return
        frame = self._ep.seal(message)
        if self._outbuf:
            self._outbuf += frame
            return
        try:
            sent = 0 if self.handshaking else self.sock.send(frame)
        except _would_block():
            sent = 0
        except OSError:
            self.closed = True
            return
        if sent < len(frame):
            self._outbuf += frame[sent:]

    @property
    def pending_output(self) -> bool:
        return bool(self._outbuf) or self._handshake_wants_write

    def flush(self) -> None:
        """Write queued bytes the socket accepts now (call when writable)."""
        if self.handshaking or not self._outbuf:
            return
        try:
            sent = self.sock.send(self._outbuf)
        except _would_block():
            return
        except OSError:
            self.closed = True
            return
        del self._outbuf[:sent]

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """The worker's side: blocking, used by a reader thread and any number of senders.

    ``send`` may be called from several threads; ``recv`` from one reader thread only.
    With ``fingerprint`` (hex SHA-256 of the driver's certificate) the connection is TLS
    1.2+ and only that certificate is accepted.
    """

    def __init__(self, host: str, port: int, secret: bytes, timeout: float = 30.0,
                 fingerprint: Optional[str] = None, budget: Optional[float] = None):
        self.sock = connect((host, port), timeout, budget)
        self.sock.settimeout(max(timeout, 30.0))  # the TLS handshake may wait on a busy driver
        if fingerprint:
            self.sock = _pinned_tls(self.sock, fingerprint)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ep = _Endpoint(secret, b"C", b"S")
        self._lock = threading.Lock()
        self._rfile = self.sock.makefile("rb")

    def hello(self, message: Dict[str, Any]) -> None:
        """Send the first frame: it carries a fresh nonce that binds the connection."""
        nonce = os.urandom(16).hex()
        message = dict(message, nonce=nonce, protocol=PROTOCOL)
        with self._lock:
            self.sock.sendall(self._ep.seal(message))
            self._ep.nonce = nonce.encode()

    def send(self, message: Dict[str, Any]) -> None:
        with self._lock:
            try:
                self.sock.sendall(self._ep.seal(message))
            except OSError as exc:
                raise ConnectionLost(str(exc)) from None

    def recv(self) -> Dict[str, Any]:
        """The next verified message; raises ConnectionLost at end of stream."""
        try:
            header = self._rfile.read(HEADER.size + TAG_SIZE)
            if len(header) < HEADER.size + TAG_SIZE:
                raise ConnectionLost("driver closed the connection")
            (length,) = HEADER.unpack_from(header)
            if length > MAX_FRAME:
                raise FrameError(f"oversize frame ({length} bytes)")
            payload = self._rfile.read(length)
        except OSError as exc:
            raise ConnectionLost(str(exc)) from None
        if len(payload) < length:
            raise ConnectionLost("driver closed the connection mid-frame")
        return self._ep.open(header[HEADER.size:], payload)

    def close(self) -> None:
        for closer in (self._rfile.close, lambda: self.sock.shutdown(socket.SHUT_RDWR),
                       self.sock.close):
            try:
                closer()
            except OSError:
                pass


def connect(address: Tuple[str, int], timeout: float,
            budget: Optional[float] = None) -> socket.socket:
    """A TCP connection to ``address``, each attempt given ``timeout`` seconds. With
    ``budget``, an attempt that fails in a way that may pass (timeout, no route, unknown
    host) is repeated until ``budget`` seconds have gone by; a refusal is final at once."""
    if budget is None:
        return socket.create_connection(address, timeout=timeout)
    deadline = time.monotonic() + budget
    while True:
        left = deadline - time.monotonic()
        try:
            return socket.create_connection(address, timeout=max(0.5, min(timeout, left)))
        except ConnectionRefusedError:
            raise
        except OSError:
            if deadline - time.monotonic() <= CONNECT_PAUSE:
                raise
            time.sleep(CONNECT_PAUSE)


#: Pause between connection attempts within a budget.
CONNECT_PAUSE = 1.0


def _pinned_tls(sock: socket.socket, fingerprint: str) -> Any:
    """``sock`` wrapped in TLS, once the driver showed the certificate ``fingerprint``
    names (no CA, no host name: the pin is the whole check); else the socket is closed
    and a :class:`ConnectionLost` (handshake) or :class:`FrameError` (other certificate)
    says why."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        tls = context.wrap_socket(sock)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise ConnectionLost(f"TLS handshake with the driver failed: {exc}") from None
    der = tls.getpeercert(binary_form=True) or b""
    seen = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(seen, fingerprint.lower()):
        tls.close()
        raise FrameError(f"the driver's TLS certificate (sha256 {seen[:16]}...) is not the "
                         f"one this run pinned ({fingerprint[:16]}...): refusing to talk to "
                         "it")
    return tls


def _peername(sock: socket.socket) -> Tuple[str, int]:
    try:
        return sock.getpeername()[:2]
    except OSError:
        return ("?", 0)
