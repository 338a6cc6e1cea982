"""``--backend livy`` with ``--url``: sessions this process makes, and each way they fail.

A Livy test server (``livy_server.py``: Livy's REST API, real Spark sessions on
``local[2]``, a session Python without maggy_magic) serves the module; its sessions are
made by the backend from the URL (no sparkmagic). A second server runs its sessions on a
Python of another minor version, and a third, idle one answers as a sick gateway in front
of Livy would (``LivyServer.misbehave``). Every failure is a one-line ``LivyError`` (a
``MaggyError``), never a hang.
"""

import json
import os
import re
import time

import pytest
from conftest import journal
from livy_server import LivyServer, other_python

from maggy_magic import Searchspace, experiment
from maggy_magic.backends.livy.session import close_owned, own_session
from maggy_magic.backends.livy.settings import LivySettings
from maggy_magic.config import HyperparameterOptConfig
from maggy_magic.errors import (
    LivyError,
    LivySessionError,
    LivyTimeout,
    LivyVersionError,
)

pytestmark = pytest.mark.slow

#: Hang guard, not a speed bound: a session still starting after this long is a failure.
START_GUARD = 300.0

CELL = """%%maggy hpo --backend livy --url {url} --trials 2 --workers 2 --es-policy none \
--seed 3 --metric score --name {name} -o {var} --ui text
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    reporter.broadcast(x, 0)
    return {{"score": x}}
"""


@pytest.fixture(scope="module")
def server():
    with LivyServer(spark_master="local[2]") as livy:
        yield livy
        close_owned()


@pytest.fixture(autouse=True)
def _no_sparkmagic_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")


def settings(url, **options):
    return LivySettings(url=url, start_timeout=START_GUARD, **options)


def _config(**options):
    options.setdefault("start_timeout", START_GUARD)
    return HyperparameterOptConfig(num_trials=1, searchspace=Searchspace(x=("DOUBLE", [0, 1])),
                                   es_policy="none", backend="livy", backend_options=options)


def _quick(x, reporter):
    return {"metric": x}


def codes(server, session_id):
    return [s.code for s in server.sessions[session_id].statements]


def one_line(info):
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- a session made from the URL ----------------------------------------------------------
def test_a_session_made_from_url_runs_a_search_and_the_next_run_reuses_it(server, shell):
    close_owned()  # this process owns no session of the server: the first run makes one
    before = set(server.sessions)
    for name, var in (("first", "one"), ("second", "two")):
        cell = shell.run_cell(CELL.format(url=server.url, name=name, var=var))
        assert cell.success, cell.error_in_exec
    made = sorted(set(server.sessions) - before)
    assert len(made) == 1, f"each run made its own session: {made}"
    session = made[0]
    for _ in range(100):  # the last poll's statement may still be finishing: bounded wait
        if server.sessions[session].state == "idle":
            break
        time.sleep(0.1)
    assert server.sessions[session].state == "idle"
    label = f"Livy session {session} at {server.url}"
    for var in ("one", "two"):
        result = shell.user_ns[var]
        assert result.state == "finished" and result.num_finished == 2
        with open(os.path.join(result.run_dir, "config.json")) as handle:
            assert json.load(handle)["livy_session"] == label
        assert journal(result.run_dir)[-1]["type"] == "run_finished"
    sent = codes(server, session)
    assert sum("_maggy_remote.start(" in code for code in sent) == 2
    # the package went over once: the second run found it installed (a package whose
    # files changed in between is another zip, and goes over as well)
    zips = [re.search(r"maggy_magic-[^'\"\s]+\.zip", code).group(0)
            for code in sent if "_maggy_install" in code]
    assert zips and len(zips) == len(set(zips)), zips


def test_ship_never_on_a_cluster_without_maggy_magic_is_one_line(server):
    close_owned()  # a fresh session: nothing installed there yet
    before = set(server.sessions)
    with pytest.raises(LivyError) as info:
        experiment.lagom(_quick, _config(url=server.url, ship="never"))
    assert type(info.value) is LivyError  # not the start statement's ModuleNotFoundError
    assert one_line(info) == ("the cluster cannot import maggy_magic and ship is 'never'; "
                              "install it there or use ship='auto'")
    (session,) = set(server.sessions) - before
    sent = codes(server, session)
    assert len(sent) == 1 and "_maggy_probe" in sent[0]  # the probe, nothing uploaded or run


def test_a_session_that_dies_at_start_is_one_line(server):
    # a healthy session of this server is already this process's: a run asking for other
    # session settings must not be handed that one
    healthy = own_session(settings(server.url)).session_id
    before = set(server.sessions)
    # the driver's JVM cannot start with this heap size, as on a real cluster
    with pytest.raises(LivySessionError) as info:
        experiment.lagom(_quick, _config(url=server.url,
                                         session_conf={"driverMemory": "lots"}))
    message = one_line(info)
    (dead,) = set(server.sessions) - before
    assert message.startswith(f"Livy session {dead} at {server.url} is dead instead of "
                              "starting: "), message
    assert "JAVA_GATEWAY_EXITED" in message or "heap size" in message, message
    assert server.sessions[dead].state in ("dead", "killed")
    # the healthy one was left alone and is still the one for the default settings
    assert own_session(settings(server.url)).session_id == healthy
    assert server.sessions[healthy].state == "idle"


def test_a_failing_gateway_mid_run_is_one_line_and_keeps_the_record(server, tmp_path):
    gate = str(tmp_path / "hold")
    open(gate, "w").close()
    namespace = {}
    exec(  # noqa: S102 - the trials wait for the gate, so the run is alive when Livy fails
        "def held(x, reporter):\n"
        "    import os, time\n"
        "    deadline = time.time() + 300\n"
        f"    while os.path.exists({gate!r}) and time.time() < deadline:\n"
        "        reporter.broadcast(x, 0)\n"
        "        time.sleep(0.1)\n"
        "    return {'metric': x}\n", namespace)
    rules = []

    def break_livy_once_running(event):
        if event["type"] == "trial_started" and not rules:
            rules.append(server.misbehave("GET", r"/sessions/\d+/statements/\d+", status=502,
                                          body=b"<html><h1>502 Bad Gateway</h1></html>",
                                          times=None))

    try:
        with pytest.raises(LivyError) as info:
            experiment.lagom(namespace["held"], _config(url=server.url),
                             listeners=[break_livy_once_running])
    finally:
        server.behave()
        os.unlink(gate)
    message = one_line(info)
    assert rules and rules[0].hits >= 1
    assert f"Livy at {server.url} answered HTTP 502 to GET /sessions/" in message, message
    assert "502 Bad Gateway" in message
    result = info.value.result
    assert result.state == "failed" and result.error == message
    kinds = [e["type"] for e in journal(result.run_dir)]
    assert "run_started" in kinds and "trial_started" in kinds and "run_finished" not in kinds


# -- a session whose Python is another minor version ------------------------------------
def test_a_cluster_on_another_python_version_is_one_line(tmp_path):
    import sys

    python = other_python(tmp_path)
    assert python is not None, ("this test runs a Livy session on a Python of another minor "
                                "version; install one (pyenv, or the OS's python3.N)")
    with LivyServer(python=python, spark_master="local[1]") as livy:
        try:
            with pytest.raises(LivyVersionError) as info:
                experiment.lagom(_quick, _config(url=livy.url))
            (session,) = livy.sessions
            sent = codes(livy, session)
        finally:
            close_owned()
    message = one_line(info)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert message.startswith("the cluster runs Python 3.") and f"this kernel Python {here}" \
        in message and f"the cluster runs Python {here} " not in message, message
    assert "set the session's PYSPARK_PYTHON" in message
    assert len(sent) == 1 and "_maggy_probe" in sent[0]  # nothing shipped, nothing run


# -- answers that are not Livy's ------------------------------------------------------------
def test_a_gateway_error_page_is_one_line(livy_server):
    page = (b"<html><head><title>503 Service Unavailable</title></head>\n<body>\n"
            b"<h1>Service Unavailable</h1>\n<p>No server is available.</p>\n</body></html>")
    rule = livy_server.misbehave("POST", "/sessions", status=503, body=page)
    with pytest.raises(LivyError) as info:
        experiment.lagom(_quick, _config(url=livy_server.url))
    assert type(info.value) is LivyError and rule.hits == 1
    assert one_line(info).startswith(
        f"Livy at {livy_server.url} answered HTTP 503 to POST /sessions: <html><head><title>"
        "503 Service Unavailable</title></head> <body> <h1>Service Unavailable</h1>")
    assert not livy_server.sessions


def test_an_answer_that_is_not_json_is_one_line(livy_server):
    rule = livy_server.misbehave("POST", "/sessions", status=200,
                                 body=b"<html><body>Please log in</body></html>")
    with pytest.raises(LivyError) as info:
        experiment.lagom(_quick, _config(url=livy_server.url))
    assert type(info.value) is LivyError and rule.hits == 1
    assert one_line(info) == (f"Livy at {livy_server.url} answered POST /sessions with "
                              "something that is not JSON; is this URL a Livy server?")
    assert not livy_server.sessions


def test_a_server_that_stops_answering_is_a_one_line_timeout(livy_server):
    from maggy_magic.backends.livy.client import LivyClient

    rule = livy_server.misbehave("GET", "/sessions", status=None, hold=True)
    client = LivyClient(livy_server.url, request_timeout=0.5)
    try:
        with pytest.raises(LivyTimeout) as info:
            client.sessions()
        assert rule.holding.is_set()  # the request arrived; only the answer never came
    finally:
        rule.release()
    assert one_line(info) == (f"Livy at {livy_server.url} did not answer GET /sessions within "
                              "0.5 s; check the server's load and network")
    assert client.sessions() == []  # answered again: the client is fine

