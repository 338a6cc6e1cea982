"""Fuzzing the driver's frame decoder, and a running driver's port.

Decoder: :class:`rpc.ServerConnection` reads over a real loopback TCP connection. The
byte streams are signed frames, one of them broken in some way (bits flipped, cut short,
a length changed, frames replayed, reordered or skipped, signed with another key, for the
other direction or with another nonce, a signed payload that is not a JSON object, an
oversize length, bytes put in front). The stream arrives split at arbitrary points. Every
``read()`` returns verified messages or raises ``FrameError`` / ``ConnectionLost``; what
was accepted is the frames sent before the broken one, exactly as they were sent; the
broken one is a ``FrameError`` as soon as all its bytes (or an oversize length) are in,
else the connection ends with ``ConnectionLost``; and once the hub has seen a
``FrameError`` on a connection nothing more from it is delivered.

Driver: while real worker processes run an experiment, hundreds of connections send
garbage and broken frames to the driver's port: the run finishes every trial, each
rejected frame is counted and nothing else is.
"""

import json
import os
import random
import select
import socket
import struct
import threading
import time

import pytest
from conftest import journal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment, rpc
from maggy_magic.driver.hub import ConnectionHub

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
HEAD = rpc.HEADER.size + rpc.TAG_SIZE
#: Hang guard, not a speed bound: the longest wait for bytes that must arrive.
READ_WAIT = 5.0
#: No example database: a run leaves nothing behind in the checkout.
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- what goes into frames ----------------------------------------------------------------
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT, inner, max_size=4), max_leaves=10)
BODIES = st.dictionaries(TEXT.filter(lambda key: key not in ("n", "nonce")), VALUES,
                         max_size=4)
NONCES = st.text(st.characters(codec="utf-8"), min_size=16, max_size=24)
LENGTHS = st.one_of(
    st.integers(0, 600),
    st.sampled_from([rpc.FIRST_FRAME_MAX, rpc.FIRST_FRAME_MAX + 1, rpc.MAX_FRAME,
                     rpc.MAX_FRAME + 1, 2 ** 31, 2 ** 32 - 1]),
    st.integers(0, 2 ** 32 - 1))


def frame(payload, secret=SECRET, direction=b"C", nonce=b""):
    """A frame of raw ``payload`` bytes, signed as ``rpc`` signs them."""
    import hashlib
    import hmac

    tag = hmac.digest(secret, direction + nonce + payload, hashlib.sha256)
    return struct.pack(">I", len(payload)) + tag + payload


def signed_junk(draw, n, nonce, first):
    """A payload signed with the right key, direction and nonce that must still be
    refused; for the first frame, and what the server has seen before (reused nonces)."""
    seen = set()
    options = ["binary", "not_object", "wrong_n", "deep", "bad_utf8"]
    if first:
        options += ["no_nonce", "short_nonce", "nonce_not_text", "reused_nonce"]
    kind = draw(st.sampled_from(options))
    extra = {"nonce": nonce} if first else {}
    if kind == "binary":
        payload = draw(st.binary(max_size=80))
        try:
            value = json.loads(payload.decode())
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict) and type(value.get("n")) is int and value["n"] == n:
            payload = b"\xff" + payload  # (that would be a valid frame)
    elif kind == "not_object":
        value = draw(VALUES.filter(lambda v: not isinstance(v, dict)))
        payload = json.dumps(value).encode()
    elif kind == "wrong_n":
        body = dict(draw(BODIES), **extra)
        wrong = draw(st.sampled_from(["absent", n + 1, n - 1, str(n), [n], None, 2 ** 80]))
        if wrong != "absent":
            body["n"] = wrong
        payload = json.dumps(body).encode()
    elif kind == "deep":
        depth = draw(st.sampled_from([1200, 5000, 30000]))
        payload = b"[" * depth + b"]" * depth
    elif kind == "bad_utf8":
        payload = b'{"n":%d,"x":"\xff\xfe"}' % n
    else:
        body = dict(draw(BODIES), n=n)
        if kind == "short_nonce":
            body["nonce"] = draw(st.text(max_size=15))
        elif kind == "nonce_not_text":
            body["nonce"] = draw(st.sampled_from([12345678901234567890, ["a" * 16], None,
                                                  {"a": "b" * 16}]))
        elif kind == "reused_nonce":
            body["nonce"] = nonce
            seen.add(nonce)
        payload = json.dumps(body).encode()
    return kind, payload, seen


@st.composite
def broken_streams(draw):
    """``(messages, stream, bad, seen, kind)``: ``messages`` as signed (with their
    ``n``), the bytes sent, the index of the first frame that must not be accepted
    (``len(messages)`` for an intact stream) and nonces the server has seen before."""
    bodies = draw(st.lists(BODIES, min_size=2, max_size=5))
    nonce = draw(NONCES)
    messages = [dict(bodies[0], type="register", nonce=nonce, n=0)]
    messages += [dict(body, n=n) for n, body in enumerate(bodies[1:], 1)]
    key = nonce.encode()

    def sign(message, **how):
        return rpc.encode(how.get("secret", SECRET), how.get("direction", b"C"),
                          how.get("nonce", b"" if message["n"] == 0 else key), message)

    frames = [sign(m) for m in messages]
    kind = draw(st.sampled_from([
        "intact", "truncated", "bitflip", "length", "wrong_key", "wrong_direction",
        "wrong_nonce", "replay", "reorder", "skip", "signed_junk", "garbage_before",
        "oversize", "big_pending"]))
    bad = draw(st.integers(0, len(frames) - 2 if kind in ("reorder", "skip")
                           else len(frames) - 1))
    if kind in ("replay", "big_pending") and bad == 0:
        bad = 1
    seen, junk = set(), None
    if kind == "intact":
        bad = len(frames)
    elif kind == "truncated":
        cut = draw(st.integers(0, len(frames[bad]) - 1))
        frames = frames[:bad] + [frames[bad][:cut]]
    elif kind == "bitflip":
        data = bytearray(frames[bad])
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        frames[bad] = bytes(data)
    elif kind == "length":
        length = draw(LENGTHS.filter(lambda n: n != len(frames[bad]) - HEAD))
        frames[bad] = struct.pack(">I", length) + frames[bad][4:]
    elif kind == "wrong_key":
        frames[bad] = sign(messages[bad], secret=OTHER_SECRET)
    elif kind == "wrong_direction":
        frames[bad] = sign(messages[bad], direction=b"S")
    elif kind == "wrong_nonce":
        other = draw(st.sampled_from([b"", key + b"x", key[:-1], b"0" * 32]))
        frames[bad] = sign(messages[bad], nonce=other if bad else key)
    elif kind == "replay":
        frames[bad] = frames[draw(st.integers(0, bad - 1))]
    elif kind == "reorder":
        frames[bad], frames[bad + 1] = frames[bad + 1], frames[bad]
    elif kind == "skip":
        del frames[bad]
    elif kind == "signed_junk":
        junk, payload, seen = signed_junk(draw, bad, nonce, bad == 0)
        frames[bad] = frame(payload, nonce=b"" if bad == 0 else key)
    elif kind == "garbage_before":
        frames.insert(bad, draw(st.binary(min_size=1, max_size=80)))
    elif kind == "oversize":
        limit = rpc.FIRST_FRAME_MAX if bad == 0 else rpc.MAX_FRAME
        length = draw(st.integers(limit + 1, 2 ** 32 - 1))
        frames[bad] = struct.pack(">I", length) + draw(st.binary(max_size=40))
    elif kind == "big_pending":  # an authenticated peer may announce up to MAX_FRAME
        length = draw(st.integers(rpc.FIRST_FRAME_MAX + 1, rpc.MAX_FRAME))
        frames[bad] = struct.pack(">I", length) + draw(st.binary(max_size=40))
    return messages, b"".join(frames), bad, seen, junk or kind, frames


def expected_end(frames, messages, bad):
    """How the decoder must end: ``FrameError`` once the bytes at the first broken frame
    make a whole frame (or announce an oversize one), else ``ConnectionLost`` at the end
    of the stream. ``frames[:bad]`` are the accepted frames, unchanged."""
    if bad >= len(messages):
        return rpc.ConnectionLost
    rest = b"".join(frames[bad:])
    if len(rest) < rpc.HEADER.size:
        return rpc.ConnectionLost
    (length,) = struct.unpack_from(">I", rest)
    limit = rpc.FIRST_FRAME_MAX if bad == 0 else rpc.MAX_FRAME
    if length > limit or len(rest) >= HEAD + length:
        return rpc.FrameError
    return rpc.ConnectionLost


def chunks_of(draw_cuts, stream):
    cuts = sorted(set(draw_cuts))
    bounds = [0] + [c for c in cuts if 0 < c < len(stream)] + [len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


# -- the decoder over a real connection ---------------------------------------------------
@pytest.fixture(scope="module")
def listener():
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


class Link:
    """A client socket and the driver's side of the same loopback connection."""

    def __init__(self, listener, seen=()):
        self.client = socket.create_connection(listener.getsockname(), timeout=READ_WAIT)
        sock, _ = listener.accept()
        self.server = rpc.ServerConnection(sock, SECRET, set(seen))

    def read(self):
        ready, _, _ = select.select([self.server.sock], [], [], READ_WAIT)
        assert ready, "bytes that were sent never became readable"
        return self.server.read()

    def close(self):
        self.client.close()
        self.server.close()


def deliver(link, chunks):
    """Send ``chunks`` one by one, reading after each, then end the stream; returns the
    messages accepted by reads that did not raise, and what the last read raised. Any
    other exception propagates (and fails the test)."""
    accepted = []
    try:
        for chunk in filter(None, chunks):
            link.client.sendall(chunk)
            accepted += link.read()
        link.client.shutdown(socket.SHUT_WR)
        for _ in range(100):  # bounded: each read drains what arrived; EOF comes last
            accepted += link.read()
    except (rpc.FrameError, rpc.ConnectionLost) as exc:
        return accepted, exc
    raise AssertionError("the decoder neither raised nor saw the end of the stream")


def same(accepted, sent):
    """Equal as JSON (so 1, 1.0 and True differ)."""
    return json.dumps(accepted) == json.dumps(sent)


@settings(FUZZ, max_examples=1500)
@given(case=broken_streams(), cuts=st.lists(st.integers(0, 1 << 17), max_size=8))
def test_decoder_accepts_exactly_the_frames_before_the_broken_one(listener, case, cuts):
    messages, stream, bad, seen, kind, frames = case
    event(kind)
    link = Link(listener, seen)
    try:
        accepted, end = deliver(link, chunks_of(cuts, stream))
    finally:
        link.close()
    expected = expected_end(frames, messages, bad)
    assert isinstance(end, expected), (kind, bad, end)
    if isinstance(end, rpc.FrameError):
        # a read that raises drops what it verified before the broken frame: a prefix
        assert len(accepted) <= bad and same(accepted, messages[:len(accepted)]), kind
    else:
        assert same(accepted, messages[:bad]), (kind, bad)


@settings(FUZZ, max_examples=400)
@given(stream=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6))
def test_decoder_refuses_random_bytes(listener, stream, cuts):
    link = Link(listener)
    try:
        accepted, end = deliver(link, chunks_of(cuts, stream))
    finally:
        link.close()
    assert accepted == []
    assert isinstance(end, expected_end([stream], [{}], 0))


def read_messages(link, count):
    messages = []
    for _ in range(100):  # bounded
        if len(messages) >= count:
            break
        messages += link.read()
    return messages


def test_signed_frames_that_once_ended_the_drivers_loop(listener):
    deep = b"[" * 30000 + b"]" * 30000
    # JSON nested beyond the recursion limit is not JSON (it was a RecursionError), in the
    # first frame and in a later one
    link = Link(listener)
    try:
        link.client.sendall(frame(deep))
        with pytest.raises(rpc.FrameError, match="not JSON"):
            read_messages(link, 1)
    finally:
        link.close()
    link = Link(listener)
    hello = {"type": "register", "nonce": "b" * 16, "n": 0}
    try:
        link.client.sendall(rpc.encode(SECRET, b"C", b"", hello))
        assert read_messages(link, 1) == [hello]
        link.client.sendall(frame(deep, nonce=b"b" * 16))
        with pytest.raises(rpc.FrameError, match="not JSON"):
            read_messages(link, 1)
    finally:
        link.close()
    # a nonce with lone surrogates (JSON can carry them) binds the connection to its
    # bytes (it was a UnicodeEncodeError)
    nonce = "\udc80" * 16
    link = Link(listener)
    try:
        link.client.sendall(
            frame(json.dumps({"type": "register", "nonce": nonce, "n": 0}).encode())
            + frame(b'{"n":1}', nonce=nonce.encode("utf-8", "surrogatepass")))
        assert read_messages(link, 2) == [{"type": "register", "nonce": nonce, "n": 0},
                                          {"n": 1}]
    finally:
        link.close()


# -- the hub: after a FrameError nothing more is delivered ---------------------------------
@pytest.fixture(scope="module")
def hub():
    heard = {"messages": [], "closed": []}
    hub = ConnectionHub("127.0.0.1", SECRET,
                        lambda conn, message: heard["messages"].append(message),
                        lambda conn, reason, rejected: heard["closed"].append(rejected))
    hub.heard = heard
    yield hub
    hub.close_all()


def poll_until(hub, condition, timeout=READ_WAIT):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        hub.poll(0.01, lambda: True)
    return condition()


@settings(FUZZ, max_examples=300)
@given(case=broken_streams(), cuts=st.lists(st.integers(0, 1 << 17), max_size=5))
def test_hub_delivers_nothing_from_a_connection_after_its_frame_error(hub, case, cuts):
    messages, stream, bad, seen, kind, frames = case
    hub.heard["messages"].clear()
    hub.heard["closed"].clear()
    hub._nonces.clear()
    hub._nonces.update(seen)
    client = socket.create_connection(hub.address, timeout=READ_WAIT)
    try:
        for chunk in chunks_of(cuts, stream):
            try:
                client.sendall(chunk)
            except OSError:  # the hub closed it already (an oversize length): see below
                break
            hub.poll(0.01, lambda: True)
        expected = expected_end(frames, messages, bad)
        if expected is rpc.FrameError:
            assert poll_until(hub, lambda: hub.heard["closed"]), kind
            # the peer goes on with valid frames that follow the accepted ones
            key = messages[0]["nonce"].encode()
            more = [rpc.encode(SECRET, b"C", b"" if n == 0 else key, m)
                    for n, m in enumerate(messages)]
            try:
                client.sendall(b"".join(more[bad:] or more))
            except OSError:
                pass  # the driver closed it: what we want
            for _ in range(5):
                hub.poll(0.01, lambda: True)
            assert hub.heard["closed"] == [True], kind
            got = hub.heard["messages"]
            assert len(got) <= bad and same(got, messages[:len(got)]), kind
            assert closed_by_driver(client), kind
        else:
            client.shutdown(socket.SHUT_WR)
            assert poll_until(hub, lambda: hub.heard["closed"]), kind
            assert hub.heard["closed"] == [False], kind
            assert same(hub.heard["messages"], messages[:bad]), kind
    finally:
        client.close()
        hub.poll(0.0, lambda: True)


def test_the_decoder_itself_refuses_everything_after_a_frame_error(listener):
    link = Link(listener)
    good = rpc.encode(SECRET, b"C", b"", {"type": "register", "nonce": "a" * 32, "n": 0})
    try:
        link.client.sendall(frame(b"{}", secret=OTHER_SECRET) + good)
        with pytest.raises(rpc.FrameError):
            while True:
                link.read()
        link.client.sendall(b"\0")
        with pytest.raises(rpc.FrameError):
            link.read()
    finally:
        link.close()


# -- a real driver, real workers, hostile connections --------------------------------------
def gated(x, reporter):
    """Trials 0000-0009 wait for gate-a, the others for gate-b (files the test makes)."""
    gates = os.environ["FUZZ_GATE_DIR"]
    gate = os.path.join(gates, "gate-a" if int(reporter.get_trial_id()) < 10 else "gate-b")
    deadline = time.monotonic() + 120  # a bound for a broken engine, not a timing claim
    step = 0
    while not os.path.exists(gate) and time.monotonic() < deadline:
        reporter.broadcast(x, step)
        step += 1
        time.sleep(0.02)
    return x


REJECTED, CLOSED, DROPPED = "rejected", "closed", "dropped"


def hostile(rng, secret):
    """One connection's worth of bytes and what the driver must do with it: count it as
    a rejected frame and close, close it uncounted (a valid first frame that is not a
    register), or nothing (we hang up first). Never a valid register frame."""
    kind = rng.choice(["random", "oversize", "wrong_key", "wrong_direction", "bitflip",
                       "signed_junk", "truncated", "not_register", "hang_up"])
    nonce = os.urandom(16).hex()
    register = {"type": "register", "worker": "evil", "host": "x", "pid": 1, "nonce": nonce,
                "protocol": rpc.PROTOCOL, "n": 0}
    if kind == "random":
        length = rng.randrange(0, 300)
        return kind, struct.pack(">I", length) + rng.randbytes(HEAD - 4 + length), REJECTED
    if kind == "oversize":
        return kind, struct.pack(">I", rng.randrange(rpc.FIRST_FRAME_MAX + 1, 2 ** 32)) \
            + rng.randbytes(rng.randrange(0, 40)), REJECTED
    if kind == "wrong_key":
        return kind, rpc.encode(rng.randbytes(32), b"C", b"", register), REJECTED
    if kind == "wrong_direction":
        return kind, rpc.encode(secret, b"S", b"", register), REJECTED
    if kind == "bitflip":
        data = bytearray(rpc.encode(secret, b"C", b"", register))
        data[rng.randrange(4, len(data))] ^= 1 << rng.randrange(8)
        return kind, bytes(data), REJECTED
    if kind == "signed_junk":
        payload = rng.choice([b"\x80\x81not json", b"[1, 2, 3]", b'"register"', b"null",
                              json.dumps(dict(register, n=1)).encode(),
                              json.dumps(dict(register, nonce="short")).encode(),
                              json.dumps(dict(register, nonce=None)).encode(),
                              b"[" * 30000 + b"]" * 30000])
        return kind, frame(payload, secret=secret), REJECTED
    if kind == "truncated":
        data = rpc.encode(secret, b"C", b"", register)
        return kind, data[:rng.randrange(0, len(data))], DROPPED
    if kind == "not_register":  # valid first frames that do not register a worker
        payload = rng.choice([
            json.dumps({"type": "heartbeat", "nonce": nonce, "n": 0}),
            json.dumps({"type": "register", "worker": 7, "nonce": nonce, "n": 0}),
            '{"type":"register","n":0,"nonce":"%s"}' % ("\\udc80" * 16 + nonce)])
        return kind, frame(payload.encode(), secret=secret), CLOSED
    return kind, b"", DROPPED


def attack(address, secret, seed, count, outcomes):
    """``count`` connections in batches of five held at once; a valid non-register frame
    is replayed on a second connection (a reused nonce: rejected)."""
    rng = random.Random(seed)
    sent = 0
    while sent < count:
        batch = []
        for _ in range(min(5, count - sent)):
            kind, data, expect = hostile(rng, secret)
            batch.append((kind, data, expect))
            if kind == "not_register":
                batch.append(("replayed", data, REJECTED))
        sent += len(batch)
        socks = []
        for kind, data, expect in batch:
            sock = socket.create_connection(address, timeout=READ_WAIT)
            pieces = [data] if rng.random() < 0.5 else \
                [data[i:i + 7] for i in range(0, len(data), 7)]
            try:
                for piece in pieces:
                    sock.sendall(piece)
                    if len(pieces) > 1:
                        time.sleep(0.0005)
            except OSError:
                pass  # the driver already refused it (an oversize length)
            socks.append((sock, kind, expect))
            if kind == "not_register":  # its replay must come after the driver saw it
                outcomes.append((kind, expect, closed_by_driver(sock)))
                sock.close()
                socks.pop()
        for sock, kind, expect in socks:
            if expect == DROPPED:
                outcomes.append((kind, expect, None))
            else:
                outcomes.append((kind, expect, closed_by_driver(sock)))
            sock.close()


def closed_by_driver(sock):
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_run_with_real_workers_survives_hundreds_of_hostile_connections(
        tmp_path, monkeypatch):
    monkeypatch.setenv("FUZZ_GATE_DIR", str(tmp_path))
    progress = {"started": threading.Event(), "first_ten": threading.Event(), "ended": 0}
    outcomes, failures = [], []

    def listen(event):
        if event["type"] == "trial_started" and event["trial"] >= "0001":
            progress["started"].set()
        elif event["type"] in ("trial_finished", "trial_failed"):
            progress["ended"] += 1
            if progress["ended"] >= 10:
                progress["first_ten"].set()

    def fuzz(driver):
        try:
            assert progress["started"].wait(120), "the workers never started trials"
            phase(driver, 0)  # trials 0000, 0001 run (held), the workers are registered
            open(tmp_path / "gate-a", "w").close()
            assert progress["first_ten"].wait(120), "the first ten trials never ended"
            phase(driver, 1)  # trials 0010 and up run (held)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
        finally:
            open(tmp_path / "gate-a", "w").close()
            open(tmp_path / "gate-b", "w").close()

    def phase(driver, number):
        threads = [threading.Thread(target=attack, args=(driver.address, driver.secret,
                                                         10 * number + i, 40, outcomes))
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive(), "an attacking thread hung"

    controller = []

    def on_driver(driver, backend):
        thread = threading.Thread(target=fuzz, args=(driver,), daemon=True)
        thread.start()
        controller.append(thread)

    config = HyperparameterOptConfig(num_trials=20, searchspace=Searchspace(x=("DOUBLE", [0, 1])),
                                     es_policy="none", workers=2, seed=3, name="fuzzed",
                                     hb_interval=0.1)
    result = experiment.run(gated, config, listeners=[listen], on_driver=on_driver)
    controller[0].join(30)
    assert not failures, failures
    assert result.state == "finished" and result.error is None
    assert result.num_finished == 20
    assert len(outcomes) >= 320, len(outcomes)
    wrong = [(kind, expect) for kind, expect, closed in outcomes
             if expect != DROPPED and not closed]
    assert not wrong, f"the driver kept connections it had to close: {wrong[:5]}"
    expected = sum(expect == REJECTED for _, expect, _ in outcomes)
    assert result.rejected_frames == expected, (result.rejected_frames, expected)
    events = journal(result.run_dir)
    assert sum(e["type"] == "frame_rejected" for e in events) == expected
    joined = [e["worker"] for e in events if e["type"] == "worker_joined"]
    assert sorted(joined) == ["0", "1"]  # no stranger ever became a worker
    assert not [e for e in events if e["type"] == "worker_lost"]
    assert events[-1]["type"] == "run_finished" and events[-1]["state"] == "finished"
    assert {kind for kind, _, _ in outcomes} == {
        "random", "oversize", "wrong_key", "wrong_direction", "bitflip", "signed_junk",
        "truncated", "not_register", "hang_up", "replayed"}
    # the rejections came while trials ran: before the first trial ended, and between the
    # tenth and the last
    kinds = [e["type"] for e in events]
    ends = [i for i, kind in enumerate(kinds) if kind == "trial_finished"]
    rejected_at = [i for i, kind in enumerate(kinds) if kind == "frame_rejected"]
    assert any(i < ends[0] for i in rejected_at)
    assert any(ends[9] < i < ends[-1] for i in rejected_at)
