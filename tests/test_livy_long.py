"""Long runs and big payloads over Livy, on the Livy test server with Livy's session
garbage collection switched on and short once a test's session is up (Livy collects a
session still starting too, and Spark starts in more than ``IDLE`` seconds): a session
idle longer than ``IDLE`` seconds is deleted (``livy.server.session.timeout``), and one
created with a heartbeat timeout is deleted when its client stops calling (checked with
sparkmagic's own client).

A run several times longer than the idle timeout and than the statement timeout finishes,
because the run goes on in a thread of the session and every statement is short; a big
captured global is named before its upload, which takes a handful of statements.
"""

import os
import time

import pytest
import requests
from livy_server import LivyServer

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.backends.livy import bootstrap
from maggy_magic.backends.livy.session import close_owned, own_session
from maggy_magic.backends.livy.settings import LivySettings
from maggy_magic.errors import LivySessionError

pytestmark = pytest.mark.slow

IDLE = 4.0
HEADERS = {"X-Requested-By": "test"}


@pytest.fixture(scope="module")
def server():
    with LivyServer(spark_master="local[2]") as livy:
        yield livy
        close_owned()


@pytest.fixture
def idle_timeout(server):
    """Switch the server's idle timeout on (``on()``) once the test's session is up."""
    class Switch:
        def on(self):
            server.session_timeout = IDLE

    yield Switch()
    server.session_timeout = None


@pytest.fixture(autouse=True)
def _no_sparkmagic_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))


def slow_train(x, reporter):
    import time as clock

    for step in range(8):
        reporter.broadcast(x + step, step)
        clock.sleep(0.5)
    return {"metric": x}


def test_a_big_captured_global_is_named_and_uploads_in_few_statements(server, tmp_path,
                                                                     capsys):
    blob = os.urandom(24 * 2**20)  # a "training set" an earlier cell loaded

    def train(x, reporter):
        return {"metric": x + len(blob) % 7}

    options = {"url": server.url, "start_timeout": 300.0,
               "remote_root": str(tmp_path / "cluster")}
    target = own_session(LivySettings(**options))
    before = len(server.sessions[target.session_id].statements)
    result = experiment.lagom(train, HyperparameterOptConfig(
        num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
        workers=2, root=str(tmp_path / "runs"), backend="livy", backend_options=options))
    assert result.state == "finished" and result.num_finished == 2
    printed = capsys.readouterr().out
    note = next(line for line in printed.splitlines() if "travels to the cluster" in line)
    assert "mostly blob (24.0 MB)" in note and "load such data on the cluster" in note
    uploads = [len(s.code) for s in server.sessions[target.session_id].statements[before:]
               if '["uploads"]' in s.code and repr(result.run_id) in s.code]
    # 32 MiB of base64 in statements that start at 1 MiB and double while the session takes
    # them within a second, up to 8 MiB (5 statements on an idle machine; 128 of 256 KiB)
    assert len(uploads) <= 16 and uploads[0] < 1.1 * 2**20, uploads
    assert max(uploads) >= 2 * 2**20 and max(uploads) < 8.1 * 2**20, uploads
    assert uploads[:-1] == sorted(uploads[:-1]), uploads


def test_a_run_longer_than_the_idle_and_statement_timeouts_finishes(server, tmp_path,
                                                                   idle_timeout):
    options = {"url": server.url, "statement_timeout": 3.0, "start_timeout": 300.0,
               "remote_root": str(tmp_path / "cluster")}
    warm = own_session(LivySettings(**options))  # up; the run below uses it
    warm.client.run(warm.session_id, "1", 60, "warm-up")  # its last activity: now
    idle_timeout.on()
    started = time.monotonic()
    result = experiment.lagom(slow_train, HyperparameterOptConfig(
        num_trials=6, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
        workers=2, root=str(tmp_path / "runs"), backend="livy", backend_options=options))
    took = time.monotonic() - started
    assert result.state == "finished" and result.num_finished == 6
    # 3 rounds of 4 s trials: the run outlasted both timeouts many times over
    assert took > 3 * IDLE
    assert not server.expired_sessions

    # the server does end an idle session: left alone, the same session is collected
    target = own_session(LivySettings(**options))
    deadline = time.monotonic() + 10 * IDLE
    while target.session_id not in server.expired_sessions and time.monotonic() < deadline:
        time.sleep(0.25)
    assert server.expired_sessions == [target.session_id]
    with pytest.raises(LivySessionError):
        bootstrap.call(target, "print(1)", 30, "probe")


def test_sparkmagic_heartbeats_keep_a_session_and_their_end_lets_it_go(server, tmp_path,
                                                                      idle_timeout):
    import sparkmagic.utils.configuration as conf
    from hdijupyterutils.ipythondisplay import IpythonDisplay
    from sparkmagic.livyclientlib.endpoint import Endpoint
    from sparkmagic.livyclientlib.livyreliablehttpclient import LivyReliableHttpClient
    from sparkmagic.livyclientlib.livysession import LivySession

    conf.override_all({"custom_headers": HEADERS, "heartbeat_refresh_seconds": 0.5,
                       "heartbeat_retry_seconds": 0.5})
    try:
        http = LivyReliableHttpClient.from_endpoint(Endpoint(server.url, None))
        session = LivySession(http, {"kind": "pyspark"}, IpythonDisplay(),
                              heartbeat_timeout=2)
        session.start()
        assert session.status == "idle"
        sid = session.id
        idle_timeout.on()
        # statements keep it from idling; the heartbeats (GETs) keep its deadline
        for _ in range(int(3 * IDLE)):
            requests.post(f"{server.url}/sessions/{sid}/statements", headers=HEADERS,
                          json={"code": "1"}, timeout=30)
            time.sleep(0.5)
        assert sid not in server.expired_sessions
        session._stop_heartbeat_thread()  # the kernel is gone: nothing calls any more
        stopped = time.monotonic()
        while sid not in server.expired_sessions and time.monotonic() < stopped + 30:
            time.sleep(0.1)
        # collected by its heartbeat deadline (2 s), before the idle timeout would
        assert sid in server.expired_sessions and time.monotonic() - stopped < IDLE - 0.5
        assert requests.get(f"{server.url}/sessions/{sid}", timeout=30).status_code == 404
    finally:
        conf.override_all({})


def test_a_session_with_a_run_going_stays_up_when_this_process_ends(server, capsys):
    from maggy_magic.backends.livy.session import following

    target = own_session(LivySettings(url=server.url, start_timeout=300.0))
    following(target, "20261201-000000-beef", True)
    try:
        close_owned()  # what runs at exit
    finally:
        following(target, "20261201-000000-beef", False)
    assert server.sessions[target.session_id].state == "idle"  # not deleted
    note = capsys.readouterr().err
    assert f"Livy session {target.session_id}" in note and "stays up" in note
    assert "20261201-000000-beef" in note and "%maggy attach" in note
    target.client.delete_session(target.session_id)
