"""Workers stay in the run through what a cluster throws at them: a function that loads
slowly, output too big for one frame, a connection that breaks; and a run whose last
worker cannot come back ends with a clear error instead of waiting. Real worker
processes on the local backend, real sockets."""

import os
import socket
import threading
import time

import pytest
from conftest import hpo_config, journal

from maggy_magic import ExperimentFailed, experiment, rpc
from maggy_magic.reporter import MAX_LINE_CHARS, thin
from maggy_magic.worker import WorkerLoop

config = hpo_config


# -- a function that takes a while to load (unpickling it sleeps) ---------------------
def _slow_restore(seconds):
    time.sleep(seconds)
    return seconds


class SlowToLoad:
    """Captured by the training function; rebuilding it in the worker takes ``seconds``."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __reduce__(self):
        return _slow_restore, (self.seconds,)


def test_a_function_that_loads_longer_than_hb_timeout_keeps_its_worker():
    heavy = SlowToLoad(3.0)

    def train(x):
        return x + 0 * (heavy if isinstance(heavy, float) else 0)

    result = experiment.lagom(train, config(num_trials=2, hb_interval=0.2, hb_timeout=1.0,
                                            name="slowload"))
    assert result.num_finished == 2
    events = journal(result.run_dir)
    assert not [e for e in events if e["type"] in ("worker_lost", "trial_retried")]


# -- output bigger than a frame -----------------------------------------------------
def loud(x):
    print("x" * 12_000_000)                     # one 12 MB line
    print("\n".join(["y" * 99] * 120_000))      # 12 MB of lines in one write
    return x


def test_a_trial_that_prints_24_mb_at_once_finishes_with_its_log():
    result = experiment.lagom(loud, config(num_trials=1, name="loud"))
    assert result.num_finished == 1
    with open(os.path.join(result.run_dir, "trials", "0000", "log.txt")) as handle:
        lines = handle.read().splitlines()
    assert lines[0].startswith("x" * MAX_LINE_CHARS)
    assert lines[0].endswith(f"went on for {12_000_000 - MAX_LINE_CHARS} more characters, "
                             "cut here]")
    assert lines[1:] == ["y" * 99] * 120_000   # split over messages, none lost


# -- connections that break -----------------------------------------------------------
def _break_driver_connection():
    """Shut down this process's TCP connections (the worker's one link to the driver),
    as a network that drops it would."""
    for fd in range(3, 256):
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.family == socket.AF_INET:
                sock.getpeername()
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            os.close(sock.detach())  # the duplicate; the worker's own descriptor stays


def drops_once(x):
    marker = f"dropped-{x:.6f}"
    if not os.path.exists(marker):
        open(marker, "w").close()
        _break_driver_connection()
        time.sleep(30)  # the worker process leaves as soon as its reader sees the break
    return x


def drops_always(x):
    _break_driver_connection()
    time.sleep(30)
    return x


def test_a_worker_whose_connection_breaks_is_replaced_and_its_trial_retried():
    result = experiment.lagom(drops_once, config(num_trials=2, name="drops"))
    assert result.num_finished == 2
    events = journal(result.run_dir)
    assert sum(e["type"] == "worker_lost" for e in events) == 2
    assert sum(e["type"] == "trial_retried" for e in events) == 2


@pytest.mark.timeout(60)
def test_the_last_worker_gone_for_good_fails_the_run_within_seconds():
    started = time.monotonic()
    # each incarnation leaves (exit code 76) or is killed once the driver lost it (-9)
    with pytest.raises(ExperimentFailed, match=r"every local worker exited .*after 1 restarts"):
        experiment.lagom(drops_always, config(num_trials=3, name="gone", hb_timeout=60.0,
                                              backend_options={"max_restarts": 1}))
    assert time.monotonic() - started < 50  # a bound that only a hang crosses (hb 60 s)


# -- a driver's revoke, then the same trial again -------------------------------------
def test_a_revoked_trial_handed_over_again_runs_once():
    secret = rpc.new_secret()
    listener = socket.create_server(("127.0.0.1", 0))
    ran = []
    release = threading.Event()

    def fn(x):
        release.wait(10)
        ran.append(x)
        return x

    loop = WorkerLoop(lambda: fn, "w0", "127.0.0.1", listener.getsockname()[1], secret,
                      route_output=False)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    sock, _ = listener.accept()
    conn = rpc.ServerConnection(sock, secret, set())
    sock.settimeout(10)  # a missing message ends the test as ConnectionLost, not a hang

    def receive(kind):
        for _ in range(100):  # bounded: each read waits for data
            for message in received:
                if message["type"] == kind:
                    received.remove(message)
                    return message
            received.extend(conn.read())
        raise AssertionError(f"no {kind}")

    received = []
    try:
        assert receive("register")["worker"] == "w0"
        # T is queued twice behind a first trial; the revoke cancels one hand-over only
        for message in ({"type": "welcome", "hb_interval": 60},
                        {"type": "trial", "trial": "A", "params": {"x": 1}},
                        {"type": "trial", "trial": "T", "params": {"x": 2}},
                        {"type": "revoke", "trial": "T"},
                        {"type": "trial", "trial": "T", "params": {"x": 3}}):
            conn.send(message)
        for _ in range(200):  # the revoke reached the worker while A still runs
            if "T" in loop._revoked:
                break
            time.sleep(0.05)
        release.set()
        finals = [receive("final"), receive("final")]
        assert [(f["trial"], f["value"]) for f in finals] == [("A", 1.0), ("T", 3.0)]
        conn.send({"type": "shutdown"})
        thread.join(10)
        assert ran == [1, 3]
    finally:
        conn.close()
        listener.close()


def test_thinning_keeps_the_best_the_worst_and_the_last_point():
    points = [[step, float((step * 37) % 101)] for step in range(1000)]
    points[517][1], points[700][1] = 1e6, -1e6
    kept = thin(points, 200)
    assert len(kept) <= 200
    assert [517, 1e6] in kept and [700, -1e6] in kept
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert [p[0] for p in kept] == sorted(p[0] for p in kept)
