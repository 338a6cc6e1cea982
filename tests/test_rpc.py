"""The wire protocol: signed frames, and what a forged or broken frame gets."""

import json
import os
import socket
import struct
import threading

import pytest

from maggy_magic import rpc
from maggy_magic.errors import UnsendableValueError


def _pair(secret):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = {}

    def accept():
        accepted["sock"], _ = listener.accept()

    thread = threading.Thread(target=accept)
    thread.start()
    client = rpc.Client("127.0.0.1", port, secret)
    thread.join()
    listener.close()
    server = rpc.ServerConnection(accepted["sock"], secret, set())
    server.sock.setblocking(True)
    return client, server


def _read_all(server, count):
    messages = []
    while len(messages) < count:
        messages += server.read()
    return messages


def test_round_trip_both_directions():
    secret = rpc.new_secret()
    client, server = _pair(secret)
    client.hello({"type": "register", "worker": "0"})
    client.send({"type": "heartbeat", "points": [[0, 1.5]]})
    first, second = _read_all(server, 2)
    assert first["type"] == "register" and first["protocol"] == rpc.PROTOCOL
    assert second["points"] == [[0, 1.5]]
    server.send({"type": "trial", "params": {"x": 1}})
    assert client.recv()["params"] == {"x": 1}
    client.close()
    server.close()


def test_frame_signed_with_another_key_is_rejected():
    client, server = _pair(rpc.new_secret())
    client._ep.secret = rpc.new_secret()  # a peer that does not know the key
    client.hello({"type": "register", "worker": "0"})
    with pytest.raises(rpc.FrameError, match="bad MAC"):
        _read_all(server, 1)


def test_replayed_frame_is_rejected():
    secret = rpc.new_secret()
    client, server = _pair(secret)
    client.hello({"type": "register", "worker": "0"})
    _read_all(server, 1)
    frame = client._ep.seal({"type": "heartbeat"})
    client.sock.sendall(frame + frame)  # the same signed bytes twice
    with pytest.raises(rpc.FrameError, match="sequence"):
        _read_all(server, 2)


def test_nonce_cannot_be_reused_on_a_second_connection():
    secret = rpc.new_secret()
    seen = set()
    client, server = _pair(secret)
    server._seen = seen
    hello = {"type": "register", "worker": "0", "nonce": "a" * 32, "protocol": 1, "n": 0}
    frame = rpc.encode(secret, b"C", b"", hello)
    client.sock.sendall(frame)
    assert _read_all(server, 1)[0]["nonce"] == "a" * 32
    client2, server2 = _pair(secret)
    server2._seen = seen
    client2.sock.sendall(frame)
    with pytest.raises(rpc.FrameError, match="nonce"):
        _read_all(server2, 1)


def test_oversize_and_garbage_frames_are_rejected():
    client, server = _pair(rpc.new_secret())
    client.sock.sendall(struct.pack(">I", rpc.MAX_FRAME + 1) + b"x" * 64)
    with pytest.raises(rpc.FrameError, match="oversize"):
        _read_all(server, 1)
    # garbage: a length well within the limits, then random bytes where the tag and the
    # payload go; it must fail the MAC check (not the size check)
    client, server = _pair(rpc.new_secret())
    client.sock.sendall(struct.pack(">I", 40) + os.urandom(rpc.TAG_SIZE + 40))
    with pytest.raises(rpc.FrameError, match="bad MAC"):
        _read_all(server, 1)


def test_payload_must_be_a_json_object_not_pickle():
    secret = rpc.new_secret()
    client, server = _pair(secret)
    import pickle

    payload = pickle.dumps({"type": "register"})
    tag = rpc._tag(secret, b"C", b"", payload)
    client.sock.sendall(struct.pack(">I", len(payload)) + tag + payload)
    with pytest.raises(rpc.FrameError, match="not JSON"):
        _read_all(server, 1)


def test_encode_refuses_values_json_cannot_carry():
    with pytest.raises(UnsendableValueError, match=r"\['value'\] is nan"):
        rpc.encode(b"k" * 32, b"C", b"", {"value": float("nan"), "n": 0})
    with pytest.raises(UnsendableValueError, match=r"\['value'\] is a object"):
        rpc.encode(b"k" * 32, b"C", b"", {"value": object(), "n": 0})
    assert json.loads(rpc.encode(b"k" * 32, b"C", b"", {"n": 0})[36:]) == {"n": 0}
