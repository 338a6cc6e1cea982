"""The Livy test server against Livy's own clients (sparkmagic, ``livy``) and raw REST calls.

One server with basic auth and CSRF protection serves the module; one session, created by
the ``livy`` client, is shared by the REST tests. sparkmagic creates and deletes a session of
its own, and a second server on ``local[1]`` has its session process killed.
"""

import os
import subprocess
import tempfile
import time

import pytest
import requests
from livy_server import CSRF_MESSAGE, LivyServer, bare_python

AUTH = ("alice", "s3cret")
HEADERS = {"X-Requested-By": "tests"}
STATEMENT_TIMEOUT = 120
SESSION_TIMEOUT = 240
# pyspark 4 warns on DataFrame.toJSON; a Livy interpreter returns stderr with stdout, so the
# warning would land among the JSON rows that both clients parse (as it does on real Livy)
QUIET_TOJSON = ("import warnings\n"
                "warnings.filterwarnings('ignore', message='The return type of DataFrame.toJSON')")


@pytest.fixture(scope="module")
def server():
    with LivyServer(auth=AUTH) as livy:
        yield livy


def call(server, method, path, expect=200, **kwargs):
    """A REST call with credentials and the CSRF header; returns the JSON body."""
    kwargs.setdefault("auth", AUTH)
    kwargs.setdefault("headers", HEADERS)
    response = requests.request(method, server.url + path, timeout=30, **kwargs)
    assert response.status_code == expect, (response.status_code, response.text)
    return response.json()


def wait_for(predicate, timeout=STATEMENT_TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def post_statement(server, session_id, code, **fields):
    return call(server, "POST", f"/sessions/{session_id}/statements", expect=201,
                json={"code": code, **fields})


def get_statement(server, session_id, statement_id):
    return call(server, "GET", f"/sessions/{session_id}/statements/{statement_id}")


def finished(server, session_id, statement_id):
    def done():
        statement = get_statement(server, session_id, statement_id)
        return statement if statement["state"] in ("available", "error", "cancelled") else None
    return wait_for(done, what=f"statement {statement_id}")


def run(server, session_id, code, **fields):
    return finished(server, session_id, post_statement(server, session_id, code, **fields)["id"])


def marker(name):
    return os.path.join(tempfile.mkdtemp(prefix="livy-test-"), name)


@pytest.fixture(scope="module")
def session(server):
    """A pyspark session created and awaited by the ``livy`` package's client."""
    from livy import LivySession, SessionKind

    livy_session = LivySession.create(server.url, kind=SessionKind.PYSPARK, auth=AUTH,
                                      requests_session=_csrf_requests_session(),
                                      name="shared", echo=False)
    livy_session.wait()
    yield livy_session
    livy_session.close()


def _csrf_requests_session():
    http = requests.Session()
    http.headers.update(HEADERS)
    return http


# -- without Spark ---------------------------------------------------------------------------

def test_bare_python_has_pyspark_but_not_maggy_magic(tmp_path):
    python = bare_python(tmp_path)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = subprocess.run([python, "-c", "import pyspark, sys; print(sys.prefix)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(tmp_path / "bare-venv")
    missing = subprocess.run([python, "-c", "import maggy_magic"], capture_output=True,
                             text=True, env=env, cwd=tmp_path)
    assert "No module named 'maggy_magic'" in missing.stderr
    assert bare_python(tmp_path) == python


def test_basic_auth_rejects_missing_and_wrong_credentials(server):
    for auth in (None, ("alice", "wrong"), ("mallory", "s3cret")):
        response = requests.get(server.url + "/sessions", auth=auth, timeout=30)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "sessions" in call(server, "GET", "/sessions")


def test_csrf_protection_needs_x_requested_by_on_post_and_delete(livy_server):
    for method, path in (("POST", "/sessions"), ("DELETE", "/sessions/0"),
                         ("POST", "/sessions/0/statements")):
        response = requests.request(method, livy_server.url + path, json={"kind": "pyspark"},
                                    timeout=30)
        assert response.status_code == 400
        assert CSRF_MESSAGE in response.text
    assert livy_server.sessions == {}
    listing = requests.get(livy_server.url + "/sessions", timeout=30)
    assert listing.status_code == 200
    assert listing.json() == {"from": 0, "total": 0, "sessions": []}


def test_unknown_ids_get_404_with_livy_messages(livy_server):
    for method, path in (("GET", "/sessions/7"), ("GET", "/sessions/7/state"),
                         ("GET", "/sessions/7/log"), ("DELETE", "/sessions/7"),
                         ("GET", "/sessions/7/statements/0"),
                         ("POST", "/sessions/7/statements")):
        response = requests.request(method, livy_server.url + path, headers=HEADERS,
                                    json={"code": "1"}, timeout=30)
        assert response.status_code == 404
        assert response.json() == {"msg": "Session '7' not found."}
    bad = requests.get(livy_server.url + "/sessions/seven", timeout=30)
    assert bad.status_code == 400
    assert bad.json() == {"msg": 'For input string: "seven"'}


def test_bad_session_requests_get_400_and_start_nothing(livy_server):
    for body, message in (({"kind": "cobol"}, "Invalid kind: cobol"),
                          ({"kind": "pyspark", "conf": {"spark.master": "yarn"}},
                           "Blacklisted configuration values in session config: spark.master"),
                          ({"kind": "pyspark", "colour": "red"}, 'Unrecognized field "colour"')):
        response = requests.post(livy_server.url + "/sessions", json=body, headers=HEADERS,
                                 timeout=30)
        assert response.status_code == 400
        assert response.json() == {"msg": message}
    assert livy_server.sessions == {}


def test_misbehave_answers_as_told_then_livy_answers_again(livy_server):
    import threading

    url = livy_server.url + "/sessions"
    rule = livy_server.misbehave("GET", "/sessions", status=502, body=b"<h1>Bad Gateway</h1>",
                                 times=2)
    for _ in range(2):
        response = requests.get(url, timeout=30)
        assert (response.status_code, response.text) == (502, "<h1>Bad Gateway</h1>")
        assert response.headers["Content-Type"].startswith("text/html")
    assert rule.hits == 2
    assert requests.get(url, timeout=30).json() == {"from": 0, "total": 0, "sessions": []}
    # another path or method is not the rule's
    other = livy_server.misbehave("GET", "/sessions", times=None)
    assert requests.get(url + "/3", timeout=30).status_code == 404
    assert other.hits == 0
    livy_server.behave()
    # a held request gets no answer until released, then Livy's own (status=None)
    held = livy_server.misbehave("GET", "/sessions", status=None, hold=True)
    answers = []
    asker = threading.Thread(target=lambda: answers.append(requests.get(url, timeout=120)))
    asker.start()
    assert held.holding.wait(60) and not answers
    held.release()
    asker.join(60)
    assert answers[0].status_code == 200 and answers[0].json()["total"] == 0


# -- the livy package's client ----------------------------------------------------------------

@pytest.mark.slow
def test_livy_client_runs_statements_and_downloads_a_dataframe(server, session):
    from livy import SessionState
    from livy.models import OutputStatus, SparkRuntimeError

    assert session.state == SessionState.IDLE
    output = session.run("print('hello from', spark.version)\nsc.parallelize(range(10), 4).sum()")
    assert output.status == OutputStatus.OK
    assert output.text.splitlines() == [f"hello from {_pyspark_version()}", "45"]
    session.run(QUIET_TOJSON)
    session.run("frame = spark.createDataFrame([(1, 'a'), (2, 'b')], ['n', 's'])")
    downloaded = session.download("frame")
    assert downloaded.to_dict("records") == [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}]
    with pytest.raises(SparkRuntimeError) as failure:
        session.run("raise KeyError('missing')")
    assert failure.value.ename == "KeyError"
    assert failure.value.evalue == "'missing'"
    assert failure.value.traceback[-1] == "KeyError: 'missing'\n"


def _pyspark_version():
    import pyspark

    return pyspark.__version__


# -- REST: the shared session -----------------------------------------------------------------

@pytest.mark.slow
def test_session_view_has_livy_fields(server, session):
    view = call(server, "GET", f"/sessions/{session.session_id}")
    assert view["id"] == session.session_id and view["name"] == "shared"
    assert view["kind"] == "pyspark" and view["state"] == "idle"
    assert view["owner"] == "alice" and view["proxyUser"] == "alice"
    assert view["appId"].startswith("app-")
    assert set(view["appInfo"]) == {"driverLogUrl", "sparkUiUrl"}
    assert isinstance(view["log"], list) and len(view["log"]) <= 10
    listing = call(server, "GET", "/sessions")
    assert listing["from"] == 0 and listing["total"] >= 1
    assert session.session_id in [item["id"] for item in listing["sessions"]]
    assert call(server, "GET", f"/sessions/{session.session_id}/state") == {
        "id": session.session_id, "state": "idle"}


@pytest.mark.slow
def test_sessions_run_on_the_bare_python_without_maggy_magic(server, session):
    sid = session.session_id
    failed = run(server, sid, "import maggy_magic")
    assert failed["state"] == "available"
    assert failed["output"]["ename"] == "ModuleNotFoundError"
    where = run(server, sid, "import sys\nprint(sys.executable)\n"
                "print(sc.parallelize([0], 1).map(lambda _: __import__('sys').executable)"
                ".first())\n"
                "def probe(_):\n"
                "    try:\n        import maggy_magic\n        return 'importable'\n"
                "    except ImportError:\n        return 'missing'\n"
                "print(sc.parallelize([0, 1], 2).map(probe).collect())")
    assert where["output"]["status"] == "ok"
    assert where["output"]["data"]["text/plain"].splitlines() == [
        server.python, server.python, "['missing', 'missing']"]


@pytest.mark.slow
def test_statement_shape_last_expression_and_execution_count(server, session):
    sid = session.session_id
    statement = post_statement(server, sid, "x = 20\nx + 22")
    assert set(statement) == {"id", "code", "state", "output", "progress", "started",
                              "completed"}
    assert statement["code"] == "x = 20\nx + 22"
    assert statement["state"] == "waiting"
    done = finished(server, sid, statement["id"])
    assert done["state"] == "available" and done["progress"] == 1.0
    assert done["output"]["status"] == "ok"
    assert done["output"]["data"] == {"text/plain": "42"}
    assert isinstance(done["output"]["execution_count"], int)
    assert 0 < done["started"] <= done["completed"]
    listing = call(server, "GET", f"/sessions/{sid}/statements")
    assert listing["total_statements"] == len(listing["statements"])
    assert listing["statements"][statement["id"]]["output"] == done["output"]


@pytest.mark.slow
def test_exception_gives_available_statement_with_error_output(server, session):
    sid = session.session_id
    failed = run(server, sid, "def inner():\n    raise ValueError('bad value')\ninner()")
    assert failed["state"] == "available"
    output = failed["output"]
    assert output["status"] == "error"
    assert output["ename"] == "ValueError" and output["evalue"] == "bad value"
    assert output["traceback"][0] == "Traceback (most recent call last):\n"
    assert any('File "<stdin>", line 2, in inner' in line for line in output["traceback"])
    assert output["traceback"][-1] == "ValueError: bad value\n"
    assert "data" not in output
    syntax = run(server, sid, "x = (")
    assert syntax["state"] == "available"
    assert syntax["output"]["ename"] == "SyntaxError"


@pytest.mark.slow
def test_output_of_a_failed_statement_comes_with_the_next_one_as_in_livy(server, session):
    sid = session.session_id
    failed = run(server, sid, "print('printed before failing')\n1 / 0")
    assert failed["output"]["ename"] == "ZeroDivisionError"
    after = run(server, sid, "print('next')")
    assert after["output"]["data"]["text/plain"] == "printed before failing\nnext"


@pytest.mark.slow
def test_output_is_buffered_until_the_statement_ends(server, session):
    sid = session.session_id
    started, release = marker("started"), marker("release")
    statement = post_statement(
        server, sid,
        f"import os, sys, time\nprint('first')\nprint('warned', file=sys.stderr)\n"
        f"open({started!r}, 'w').close()\n"
        f"while not os.path.exists({release!r}):\n    time.sleep(0.05)\nprint('second')")
    wait_for(lambda: os.path.exists(started), what="the statement to print")
    running = get_statement(server, sid, statement["id"])
    assert running["state"] == "running" and running["output"] is None
    assert call(server, "GET", f"/sessions/{sid}/state")["state"] == "busy"
    open(release, "w").close()
    done = finished(server, sid, statement["id"])
    assert done["output"]["data"]["text/plain"] == "first\nsecond\nwarned"
    assert call(server, "GET", f"/sessions/{sid}/state")["state"] == "idle"


@pytest.mark.slow
def test_statements_run_one_at_a_time(server, session):
    sid = session.session_id
    started, release, second_ran = marker("started"), marker("release"), marker("second")
    first = post_statement(
        server, sid,
        f"import os, time\nopen({started!r}, 'w').close()\n"
        f"while not os.path.exists({release!r}):\n    time.sleep(0.05)")
    second = post_statement(server, sid, f"open({second_ran!r}, 'w').close()\n'second done'")
    wait_for(lambda: os.path.exists(started), what="the first statement to start")
    assert get_statement(server, sid, first["id"])["state"] == "running"
    waiting = get_statement(server, sid, second["id"])
    assert waiting["state"] == "waiting" and waiting["output"] is None
    assert not os.path.exists(second_ran)
    open(release, "w").close()
    first_done = finished(server, sid, first["id"])
    second_done = finished(server, sid, second["id"])
    assert second_done["output"]["data"]["text/plain"] == "'second done'"
    assert second_done["started"] >= first_done["completed"]


@pytest.mark.slow
def test_progress_follows_the_statements_spark_tasks(server, session):
    sid = session.session_id
    release = marker("release")
    statement = post_statement(
        server, sid,
        "import os, time\n"
        "def task(i):\n"
        f"    while i >= 2 and not os.path.exists({release!r}):\n"
        "        time.sleep(0.05)\n"
        "    return i\n"
        "sc.parallelize(range(4), 4).map(task).collect()")
    wait_for(lambda: get_statement(server, sid, statement["id"])["progress"] == 0.5,
             what="half of the tasks to finish")
    assert get_statement(server, sid, statement["id"])["state"] == "running"
    open(release, "w").close()
    done = finished(server, sid, statement["id"])
    assert done["output"]["data"]["text/plain"] == "[0, 1, 2, 3]"
    assert done["progress"] == 1.0


@pytest.mark.slow
def test_cancel_interrupts_running_code_and_drops_waiting_statements(server, session):
    sid = session.session_id
    started, never = marker("started"), marker("never")
    looping = post_statement(
        server, sid,
        f"import time\nopen({started!r}, 'w').close()\nwhile True:\n    time.sleep(0.05)")
    waiting = post_statement(server, sid, f"open({never!r}, 'w').close()")
    wait_for(lambda: os.path.exists(started), what="the loop to start")
    assert call(server, "POST", f"/sessions/{sid}/statements/{waiting['id']}/cancel") == {
        "msg": "canceled"}
    assert get_statement(server, sid, waiting["id"])["state"] == "cancelled"
    assert call(server, "POST", f"/sessions/{sid}/statements/{looping['id']}/cancel") == {
        "msg": "canceled"}
    cancelled = finished(server, sid, looping["id"])
    assert cancelled["state"] == "cancelled"
    assert cancelled["output"]["ename"] == "KeyboardInterrupt"
    assert run(server, sid, "'still alive'")["output"]["data"]["text/plain"] == "'still alive'"
    assert not os.path.exists(never)


@pytest.mark.slow
def test_cancel_stops_a_running_spark_job(server, session):
    sid = session.session_id
    folder = tempfile.mkdtemp(prefix="livy-test-")
    job = post_statement(
        server, sid,
        "import os, time\n"
        "def task(i):\n"
        f"    open(os.path.join({folder!r}, str(i)), 'w').close()\n"
        "    time.sleep(600)\n"
        "sc.parallelize(range(2), 2).map(task).collect()")
    wait_for(lambda: len(os.listdir(folder)) == 2, what="both tasks to run")
    call(server, "POST", f"/sessions/{sid}/statements/{job['id']}/cancel")
    cancelled = finished(server, sid, job["id"])
    assert cancelled["state"] == "cancelled"
    # both executor cores were held by the sleeping tasks: a new job runs only if they died
    count = run(server, sid, "sc.parallelize(range(4), 2).count()")
    assert count["output"]["data"]["text/plain"] == "4"


@pytest.mark.slow
def test_sql_statements_return_livy_json_tables(server, session):
    sid = session.session_id
    done = run(server, sid, "SELECT 1 AS one, 'x' AS letter", kind="sql")
    table = done["output"]["data"]["application/json"]
    assert [field["name"] for field in table["schema"]["fields"]] == ["one", "letter"]
    assert table["data"] == [[1, "x"]]


@pytest.mark.slow
def test_livy_magics_give_json_and_table_output(server, session):
    sid = session.session_id
    done = run(server, sid, "counts = {'a': 1, 'b': [2, 3]}\nprint('before')\n%json counts")
    assert done["output"]["data"] == {"application/json": {"a": 1, "b": [2, 3]},
                                      "text/plain": "before"}
    rows = run(server, sid, "rows = spark.createDataFrame([(1, 'x', None), (2, 'y', 0.5)],"
                            " 'n int, s string, f double').collect()\n%table rows")
    table = rows["output"]["data"]["application/vnd.livy.table.v1+json"]
    assert table == {"headers": [{"name": "f", "type": "DOUBLE_TYPE"},
                                 {"name": "n", "type": "INT_TYPE"},
                                 {"name": "s", "type": "STRING_TYPE"}],
                     "data": [[None, 1, "x"], [0.5, 2, "y"]]}
    unknown = run(server, sid, "%plot counts")
    assert unknown["output"]["ename"] == "UnknownMagic"
    assert unknown["output"]["evalue"] == "unknown magic command 'plot'"
    missing = run(server, sid, "%json no_such_name")
    assert missing["output"]["ename"] == "KeyError"


@pytest.mark.slow
def test_session_log_collects_the_processes_stderr(server, session):
    sid = session.session_id
    run(server, sid, "import sys\nprint('line for the session log', file=sys.__stderr__, "
                     "flush=True)")
    log = wait_for(lambda: (lambda body: body if "line for the session log" in body["log"]
                            else None)(call(server, "GET", f"/sessions/{sid}/log?size=-1")),
                   what="the log line")
    assert log["id"] == sid and log["from"] == 0 and log["total"] == len(log["log"])
    assert any("log level" in line or "WARN" in line for line in log["log"])
    page = call(server, "GET", f"/sessions/{sid}/log?from=1&size=2")
    assert page["from"] == 1 and page["log"] == log["log"][1:3]
    tail = call(server, "GET", f"/sessions/{sid}/log?size=1")
    assert tail["from"] == tail["total"] - 1


@pytest.mark.slow
def test_statement_errors_get_400_and_404(server, session):
    sid = session.session_id
    missing = requests.get(f"{server.url}/sessions/{sid}/statements/9999", auth=AUTH,
                           timeout=30)
    assert missing.status_code == 404 and missing.json() == {"msg": "Statement not found"}
    scala = requests.post(f"{server.url}/sessions/{sid}/statements", auth=AUTH,
                          headers=HEADERS, json={"code": "1 + 1", "kind": "spark"}, timeout=30)
    assert scala.status_code == 400 and "pyspark and sql" in scala.json()["msg"]
    no_code = requests.post(f"{server.url}/sessions/{sid}/statements", auth=AUTH,
                            headers=HEADERS, json={}, timeout=30)
    assert no_code.status_code == 400


# -- sparkmagic's client ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sparkmagic_conf(tmp_path_factory):
    os.environ["SPARKMAGIC_CONF_DIR"] = str(tmp_path_factory.mktemp("sparkmagic"))
    import sparkmagic.utils.configuration as conf

    conf.override_all({"custom_headers": HEADERS, "livy_session_startup_timeout_seconds":
                       SESSION_TIMEOUT, "wait_for_idle_timeout_seconds": STATEMENT_TIMEOUT,
                       "retry_seconds_to_sleep_list": [0.2, 0.5, 1],
                       "configurable_retry_policy_max_retries": 3})
    yield conf
    conf.override_all({})


@pytest.mark.slow
def test_sparkmagic_creates_runs_stores_and_deletes_a_session(server, sparkmagic_conf):
    from hdijupyterutils.ipythondisplay import IpythonDisplay
    from requests.auth import HTTPBasicAuth
    from sparkmagic.livyclientlib.command import Command
    from sparkmagic.livyclientlib.endpoint import Endpoint
    from sparkmagic.livyclientlib.livyreliablehttpclient import LivyReliableHttpClient
    from sparkmagic.livyclientlib.livysession import LivySession
    from sparkmagic.livyclientlib.sparkstorecommand import SparkStoreCommand

    endpoint = Endpoint(server.url, HTTPBasicAuth(*AUTH))
    http = LivyReliableHttpClient.from_endpoint(endpoint)
    livy_session = LivySession(http, {"kind": "pyspark", "name": "from-sparkmagic"},
                               IpythonDisplay())
    livy_session.start()  # waits for idle, then checks that 'spark' exists
    session_id = livy_session.id
    assert livy_session.status == "idle"
    assert livy_session.sql_context_variable_name == "spark"
    assert livy_session.get_user() == "alice"
    assert livy_session.get_app_id().startswith("app-")

    success, text, mimetype = Command("print(sc.parallelize(range(5), 2).map(lambda x: x * x)"
                                      ".sum())").execute(livy_session)
    assert (success, text, mimetype) == (True, "30", "text/plain")
    success, text, _ = Command("undefined_name").execute(livy_session)
    assert not success
    assert text.startswith("name 'undefined_name' is not defined\n")
    assert "NameError" in text

    Command(QUIET_TOJSON).execute(livy_session)
    Command("squares = spark.createDataFrame([(i, i * i) for i in range(3)], ['i', 'sq'])"
            ).execute(livy_session)
    frame = SparkStoreCommand("squares", samplemethod="take", maxrows=10,
                              coerce=False).execute(livy_session)
    assert frame.to_dict("records") == [{"i": 0, "sq": 0}, {"i": 1, "sq": 1},
                                        {"i": 2, "sq": 4}]
    assert any(line for line in livy_session.get_logs().splitlines())

    livy_session.delete()
    gone = requests.get(f"{server.url}/sessions/{session_id}", auth=AUTH, timeout=30)
    assert gone.status_code == 404
    record = server.sessions[session_id]
    assert record.state == "killed" and record.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(record.process.pid, 0)  # no Spark JVM of the session is left


# -- stopping sessions the hard way ----------------------------------------------------------

def test_delete_while_starting_kills_the_session_and_its_jvm(livy_server):
    created = requests.post(livy_server.url + "/sessions", headers=HEADERS,
                            json={"kind": "pyspark", "name": "short-lived"}, timeout=30)
    assert created.status_code == 201 and created.json()["state"] == "starting"
    sid = created.json()["id"]
    deleted = requests.delete(f"{livy_server.url}/sessions/{sid}", headers=HEADERS, timeout=60)
    assert deleted.json() == {"msg": "deleted"}
    record = livy_server.sessions[sid]
    assert record.state == "killed" and record.process.returncode is not None
    assert _group_gone(record.process.pid)
    assert requests.get(f"{livy_server.url}/sessions/{sid}", timeout=30).status_code == 404
    assert requests.get(livy_server.url + "/sessions", timeout=30).json()["total"] == 0


@pytest.fixture(scope="module")
def local_server():
    """A server whose sessions run on ``local[1]``: one JVM, quicker to start and to kill."""
    with LivyServer(spark_master="local[1]") as livy:
        yield livy


def start_local_session(livy):
    created = requests.post(livy.url + "/sessions", headers=HEADERS, json={"kind": "pyspark"},
                            timeout=30)
    assert created.status_code == 201 and created.json()["state"] == "starting"
    sid = created.json()["id"]
    wait_for(lambda: livy.sessions[sid].state == "idle", timeout=SESSION_TIMEOUT,
             what="the session to start")
    return sid


@pytest.mark.slow
def test_delete_while_busy_stops_the_running_statement(local_server):
    livy = local_server
    sid = start_local_session(livy)
    started = marker("started")
    requests.post(f"{livy.url}/sessions/{sid}/statements", headers=HEADERS,
                  json={"code": f"import time\nopen({started!r}, 'w').close()\n"
                                "time.sleep(600)"}, timeout=30)
    wait_for(lambda: os.path.exists(started), what="the statement to start")
    assert requests.get(f"{livy.url}/sessions/{sid}/state", timeout=30).json()["state"] == "busy"
    deleted = requests.delete(f"{livy.url}/sessions/{sid}", headers=HEADERS, timeout=60)
    assert deleted.json() == {"msg": "deleted"}
    record = livy.sessions[sid]
    assert record.state == "killed" and _group_gone(record.process.pid)
    assert [s.state for s in record.statements] == ["cancelled"]
    assert requests.get(f"{livy.url}/sessions/{sid}/state", timeout=30).status_code == 404


@pytest.mark.slow
def test_killed_session_process_makes_the_session_dead_and_fails_its_statements(local_server):
    livy = local_server
    sid = start_local_session(livy)
    started = marker("started")
    busy = requests.post(f"{livy.url}/sessions/{sid}/statements", headers=HEADERS,
                         json={"code": f"import time\nopen({started!r}, 'w').close()\n"
                                       "time.sleep(600)"}, timeout=30).json()
    queued = requests.post(f"{livy.url}/sessions/{sid}/statements", headers=HEADERS,
                           json={"code": "1"}, timeout=30).json()
    wait_for(lambda: os.path.exists(started), what="the statement to start")
    pid = livy.sessions[sid].process.pid

    livy.kill_session_process(sid)

    state = requests.get(f"{livy.url}/sessions/{sid}/state", timeout=30).json()
    assert state == {"id": sid, "state": "dead"}
    for statement_id in (busy["id"], queued["id"]):
        statement = requests.get(f"{livy.url}/sessions/{sid}/statements/{statement_id}",
                                 timeout=30).json()
        assert statement["state"] == "error"
        assert statement["output"]["status"] == "error"
        assert "Interpreter died" in statement["output"]["evalue"]
    refused = requests.post(f"{livy.url}/sessions/{sid}/statements", headers=HEADERS,
                            json={"code": "1"}, timeout=30)
    assert refused.status_code == 400
    assert refused.json() == {"msg": "Session is in state dead"}
    wait_for(lambda: _group_gone(pid), timeout=30, what="the session's JVMs to exit")
    deleted = requests.delete(f"{livy.url}/sessions/{sid}", headers=HEADERS, timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"msg": "deleted"}


def _group_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
