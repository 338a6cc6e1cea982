"""``--backend livy`` end to end: a real kernel with sparkmagic, the Livy test server
(``livy_server.py``: Livy's REST API on real Spark sessions whose Python has pyspark but not
maggy_magic), basic auth and CSRF required.

The kernel's sparkmagic creates the session (``%spark add``); ``%%maggy hpo --backend livy
--session s1`` reuses it (and its credentials), installs maggy_magic there, runs the search
on the session's Spark executors and streams it back. Each failure mode gives its one-line
error; the kill test runs last because it ends the session.
"""

import glob
import json
import os
import subprocess
import threading

import pytest
from conftest import journal
from kernels import running_kernel
from livy_server import LivyServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "alice", "pw-Zq81-secret"
TIMEOUT = 900

pytestmark = pytest.mark.slow

CELL = """%%maggy hpo --backend livy --session s1 --trials 4 --workers 2 --es-policy none \
--seed 3 --metric score --name {name} -o {var} --ui text {extra}
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    import os, time
    print("hello from trial", x)
    for step in range(3):
        reporter.broadcast(x + step, step)
    # held while the test's gate file exists (bounded, so a broken test cannot hang it)
    deadline = time.time() + 300
    while os.path.exists({hold!r}) and time.time() < deadline:
        reporter.broadcast(x + 3, 3)
        time.sleep(0.1)
    return {{"score": x}}
"""


@pytest.fixture(scope="module")
def server():
    with LivyServer(auth=(USER, PASSWORD)) as livy:
        yield livy


@pytest.fixture(scope="module")
def kernel(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("livy-kernel")
    conf = base / "sparkmagic"
    conf.mkdir()
    (conf / "config.json").write_text(json.dumps({
        "livy_session_startup_timeout_seconds": TIMEOUT,
        "wait_for_idle_timeout_seconds": TIMEOUT,
        # Livy's CSRF protection wants it; sparkmagic sends only configured headers
        "custom_headers": {"X-Requested-By": "sparkmagic"}}))
    env = {"SPARKMAGIC_CONF_DIR": str(conf), "SPARK_LOCAL_IP": "127.0.0.1"}
    with running_kernel(base, env, TIMEOUT) as k:
        for code in ("%load_ext maggy_magic", "%load_ext sparkmagic.magics",
                     f"%spark add -s s1 -l python -u {server.url} -a {USER} -p {PASSWORD} "
                     "-t Basic_Access"):
            # the session's own line holds the password: the outputs checked are the rest
            reply, messages = k.execute(code, record="%spark add" not in code)
            assert reply["content"]["status"] == "ok", (code, reply["content"])
        assert list(server.sessions) == [0], [m["content"] for m in messages
                                              if m["msg_type"] in ("stream", "error")]
        yield k


class JournalWatch(threading.Thread):
    """Reads the local record under ``root/name`` while a cell runs; calls ``on_event``
    once per new event with the events seen so far.

    The journal is appended while it is read, so the last line may be half written: only
    lines that end in a newline are read, the rest waits for the next look."""

    def __init__(self, root, name, on_event=None):
        super().__init__(daemon=True)
        self.pattern = os.path.join(root, name, "*", "journal.jsonl")
        self.on_event, self.seen, self.stop = on_event, [], threading.Event()
        self.live_line = None  # the log event with our line, seen before run_finished
        self._path, self._offset = None, 0

    def read_new(self):
        """The events whose lines were completed since the last call."""
        if self._path is None:
            paths = glob.glob(self.pattern)
            if not paths:
                return []
            self._path = paths[0]
        with open(self._path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def run(self):
        while not self.stop.wait(0.05):
            for event in self.read_new():
                self.seen.append(event)
                finished = any(e["type"] == "run_finished" for e in self.seen)
                if event["type"] == "log" and self.live_line is None and not finished and \
                        any("hello from trial" in line for line in event["lines"]):
                    self.live_line = event
                if self.on_event is not None:
                    self.on_event(event, self.seen)


def test_journal_watch_leaves_a_half_written_line_for_later(tmp_path):
    run_dir = tmp_path / "root" / "name" / "run-1"
    run_dir.mkdir(parents=True)
    first = json.dumps({"type": "run_started", "seq": 0})
    second = json.dumps({"type": "log", "seq": 1, "lines": ["hello from trial 0.5 é"]},
                        ensure_ascii=False)
    torn = second.encode().index("é".encode()) + 1  # inside a two-byte character
    with open(run_dir / "journal.jsonl", "wb") as handle:
        handle.write(first.encode() + b"\n" + second.encode()[:torn])
    watch = JournalWatch(str(tmp_path / "root"), "name")
    assert [e["seq"] for e in watch.read_new()] == [0]
    assert watch.read_new() == []  # still being written
    with open(run_dir / "journal.jsonl", "ab") as handle:
        handle.write(second.encode()[torn:] + b"\n")
    assert watch.read_new() == [json.loads(second)]
    assert watch.read_new() == []


def cell_error(reply):
    content = reply["content"]
    assert content["status"] == "error", content
    return content["ename"], content["evalue"]


def no_password(texts):
    import base64

    header = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return not any(PASSWORD in text or header in text for text in texts)


def files_under(path):
    for folder, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(folder, name), errors="replace") as handle:
                yield handle.read()


def test_search_runs_on_the_session_and_streams_live(kernel, server, tmp_path):
    root = os.path.join(kernel.cwd, "maggy_experiments")
    hold = str(tmp_path / "hold")
    open(hold, "w").close()

    def release_once_printed(event, seen):
        # the trials wait until a line they printed is in the local record
        if watch.live_line is not None and os.path.exists(hold):
            os.unlink(hold)

    watch = JournalWatch(root, "onlivy", release_once_printed)
    watch.start()
    try:
        reply, messages = kernel.execute(CELL.format(name="onlivy", var="res", extra="",
                                                     hold=hold))
    finally:
        watch.stop.set()
        watch.join()
        if os.path.exists(hold):
            os.unlink(hold)
    assert reply["content"]["status"] == "ok", reply["content"]
    # a line printed inside a trial on an executor reached the local stream mid-run
    assert watch.live_line is not None, [e["type"] for e in watch.seen]
    state, finished, local_dir, remote_dir = kernel.value(
        "[res.state, res.num_finished, res.run_dir, res.remote_run_dir]")
    assert (state, finished) == ("finished", 4)
    assert local_dir.startswith(root) and remote_dir != local_dir
    # the cluster's run directory (on this machine, the test server's) holds the same events
    remote_events, local_events = journal(remote_dir), journal(local_dir)
    assert [e["seq"] for e in local_events] == [e["seq"] for e in remote_events]
    assert local_events[-1]["type"] == "run_finished"
    texts = " ".join(json.dumps(m["content"]) for m in messages)
    assert remote_dir in texts  # the cluster-side path is reported in the cell
    # same shape as a local run's result
    reply, _ = kernel.execute(CELL.replace("--backend livy --session s1 ", "").format(
        name="here", var="loc", extra="--trials 2", hold=""))
    assert reply["content"]["status"] == "ok", reply["content"]
    shape = "[sorted(r.to_dict()), list(r.trials.columns), sorted(r.trial_records[0])]"
    assert kernel.value(shape.replace("r.", "res.")) == kernel.value(shape.replace("r.", "loc."))
    # the bare session Python had no maggy_magic: the zip was uploaded and installed
    scrubbed = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bare = subprocess.run([server.python, "-c", "import maggy_magic"], capture_output=True,
                          env=scrubbed, cwd=server.python.rsplit("/bin/", 1)[0])
    assert bare.returncode != 0
    reply, messages = kernel.execute('%%spark -s s1\nprint(_maggy_livy["zip"])')
    shown = " ".join(json.dumps(m["content"]) for m in messages)
    assert reply["content"]["status"] == "ok" and "maggy_magic-" in shown, shown
    # credentials never reach a run directory, a journal or an output
    assert no_password(list(files_under(root)) + list(files_under(remote_dir)) +
                       kernel.outputs)


def test_a_statement_error_is_one_line(kernel, tmp_path):
    # a local module without source (only its compiled file) cannot travel: importing
    # the function fails on the cluster
    import py_compile

    source = tmp_path / "only_here.py"
    source.write_text("def train(x, reporter):\n    return {'score': x}\n")
    py_compile.compile(str(source), cfile=os.path.join(kernel.cwd, "only_here.pyc"),
                       doraise=True)
    reply, _ = kernel.execute(
        "%%maggy hpo --backend livy --session s1 --trials 2 --metric score --fn train\n"
        "from only_here import train\n"
        "from maggy_magic import Searchspace\n"
        "space = Searchspace(x=('DOUBLE', [0, 1]))\n")
    name, value = cell_error(reply)
    assert name == "LivyStatementError", value
    assert "start statement failed on the cluster" in value and "only_here" in value
    assert "\n" not in value
    assert kernel.value("1 + 1") == 2  # the kernel stays usable


def test_a_mistyped_session_name_is_one_line_and_starts_nothing(kernel, server):
    reply, _ = kernel.execute(
        "%%maggy hpo --backend livy --session s2 --trials 2 --metric score\n"
        "from maggy_magic import Searchspace\n"
        "space = Searchspace(x=('DOUBLE', [0, 1]))\n"
        "def train(x, reporter):\n    return {'score': x}\n")
    name, value = cell_error(reply)
    assert name == "ConfigError", value
    assert value == ("this kernel has no sparkmagic session called 's2' (sessions: s1); "
                     "create it with %spark add -s s2 -l python -u URL, or give --url instead")
    assert list(server.sessions) == [0]  # no session was made for the name


def test_a_statement_timeout_is_one_line(kernel, server, tmp_path):
    from requests.auth import HTTPBasicAuth

    from maggy_magic.backends.livy.client import LivyClient

    # someone else keeps the session busy until the gate goes: our statements wait
    gate = str(tmp_path / "busy")
    open(gate, "w").close()
    other = LivyClient(server.url, auth=HTTPBasicAuth(USER, PASSWORD))
    other.request("POST", "/sessions/0/statements", {
        "code": f"import os, time\ndeadline = time.time() + 300\n"
                f"while os.path.exists({gate!r}) and time.time() < deadline:\n"
                "    time.sleep(0.05)\n", "kind": "pyspark"})
    kernel.execute("from maggy_magic import experiment, Searchspace\n"
                   "from maggy_magic.config import HyperparameterOptConfig\n"
                   "def quick(x, reporter):\n    return {'metric': x}\n")
    reply, _ = kernel.execute(
        "try:\n"
        "    experiment.lagom(quick, HyperparameterOptConfig(num_trials=1, "
        "searchspace=Searchspace(x=('DOUBLE', [0, 1])), backend='livy', "
        "backend_options={'session': 's1', 'statement_timeout': 1.0}))\n"
        "except Exception as exc:\n"
        "    caught = [type(exc).__name__, str(exc)]\n")
    os.unlink(gate)
    assert reply["content"]["status"] == "ok", reply["content"]
    name, message = kernel.value("caught")
    assert name == "LivyTimeout" and "did not finish within" in message, message
    assert "\n" not in message


def test_interrupt_sends_a_stop_statement(kernel, tmp_path):
    def interrupt_once_started(event, seen):
        if event["type"] == "trial_started" and not getattr(kernel, "_interrupted", False):
            kernel._interrupted = True
            kernel.manager.interrupt_kernel()

    root = os.path.join(kernel.cwd, "maggy_experiments")
    hold = str(tmp_path / "hold")  # no trial can finish while it exists
    open(hold, "w").close()
    watch = JournalWatch(root, "interrupted", interrupt_once_started)
    watch.start()
    try:
        reply, _ = kernel.execute(CELL.format(name="interrupted", var="cut",
                                              extra="--trials 8", hold=hold))
    finally:
        watch.stop.set()
        watch.join()
        os.unlink(hold)
    name, value = cell_error(reply)
    assert name == "ExperimentInterrupted", value
    run_id = value.split("--resume ", 1)[1].split()[0]  # resumable like any search
    assert "run the cell again with --resume" in value, value
    state, remote_dir = kernel.value("[cut.state, cut.remote_run_dir]")
    assert state == "interrupted"
    # the cluster's driver ended the run on the stop statement, while the trials were held
    last = journal(remote_dir)[-1]
    assert last["type"] == "run_finished" and last["state"] == "interrupted"
    assert last["counts"]["finished"] == 0
    assert os.path.basename(remote_dir) == run_id


def test_session_killed_mid_run_is_one_line_and_keeps_the_record(kernel, server, tmp_path):
    def kill_once_started(event, seen):
        if event["type"] == "trial_started" and not getattr(kernel, "_killed", False):
            kernel._killed = True
            threading.Thread(target=server.kill_session_process, args=(0,)).start()

    root = os.path.join(kernel.cwd, "maggy_experiments")
    hold = str(tmp_path / "hold")  # the run is alive when the session dies
    open(hold, "w").close()
    watch = JournalWatch(root, "killed", kill_once_started)
    watch.start()
    try:
        reply, messages = kernel.execute(CELL.format(name="killed", var="part",
                                                     extra="--trials 8", hold=hold))
    finally:
        watch.stop.set()
        watch.join()
        os.unlink(hold)
    name, value = cell_error(reply)
    assert name == "LivySessionError", value
    assert "dead" in value and "\n" not in value
    local_dir, state = kernel.value("[part.run_dir, part.state]")
    assert state == "failed"
    events = journal(local_dir)
    types = [e["type"] for e in events]
    assert "run_started" in types and "trial_started" in types and "run_finished" not in types
    assert len(events) >= len(watch.seen) > 0  # every event that arrived stayed
    assert kernel.value("2 + 2") == 4
    assert no_password(list(files_under(root)) + kernel.outputs)


# -- failures that need no session: through the Python API, in this process --------------
def _config(**options):
    from maggy_magic import Searchspace
    from maggy_magic.config import HyperparameterOptConfig

    return HyperparameterOptConfig(num_trials=1, searchspace=Searchspace(x=("DOUBLE", [0, 1])),
                                   backend="livy", backend_options=options)


def _quick(x, reporter):
    return {"metric": x}


def test_unreachable_livy_is_one_line(tmp_path, monkeypatch):
    import socket

    from maggy_magic import experiment
    from maggy_magic.errors import LivyUnreachable

    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(LivyUnreachable) as info:
        experiment.lagom(_quick, _config(url=f"http://127.0.0.1:{port}"))
    assert f"cannot reach Livy at http://127.0.0.1:{port}" in str(info.value)
    assert "\n" not in str(info.value)


def test_refused_credentials_are_one_line_and_not_shown(server, tmp_path, monkeypatch):
    from maggy_magic import experiment
    from maggy_magic.errors import LivyAuthError

    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("MAGGY_LIVY_PASSWORD", "wrong-" + PASSWORD)
    with pytest.raises(LivyAuthError) as info:
        experiment.lagom(_quick, _config(url=server.url, auth="basic", user=USER))
    assert "refused the credentials (HTTP 401)" in str(info.value)
    assert PASSWORD not in str(info.value) and "\n" not in str(info.value)


def test_settings_come_from_sparkmagic_config(tmp_path, monkeypatch):
    import base64

    from maggy_magic.backends.livy.settings import LivySettings

    (tmp_path / "other.json").write_text(json.dumps({
        "kernel_python_credentials": {"username": USER, "url": "http://livy:8998",
                                      "auth": "Basic_Access",
                                      "base64_password": base64.b64encode(
                                          PASSWORD.encode()).decode()},
        "custom_headers": {"X-Team": "ml"}, "session_configs": {"driverMemory": "2g"}}))
    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("SPARKMAGIC_CONF_FILE", "other.json")
    monkeypatch.delenv("MAGGY_LIVY_PASSWORD", raising=False)
    settings = LivySettings()
    assert (settings.url, settings.user, settings.auth) == ("http://livy:8998", USER, "basic")
    assert settings.headers == {"X-Team": "ml"}
    assert settings.session_properties == {"driverMemory": "2g"}
    assert settings.requests_auth().password == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in repr(vars(settings))
    # the config's password is not sent to another server
    assert LivySettings(url="http://elsewhere:8998")._password is None



def test_an_empty_or_broken_sparkmagic_config(tmp_path, monkeypatch):
    from maggy_magic.backends.livy.settings import read_sparkmagic_config
    from maggy_magic.errors import ConfigError

    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    (tmp_path / "config.json").write_text("")  # what sparkmagic itself creates
    assert read_sparkmagic_config() == {}
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as info:
        read_sparkmagic_config()
    assert "fix the JSON or point SPARKMAGIC_CONF_DIR elsewhere" in str(info.value)


@pytest.mark.parametrize("options, fragment", [
    ({"sesion": "s1"}, "unknown livy backend option 'sesion'; did you mean 'session'"),
    ({"url": "http://x:1", "auth": "basic", "user": "u"}, "needs a user"),
    ({"url": "http://x:1", "poll_interval": 0}, "poll_interval must be a positive number"),
    ({"url": "http://x:1", "auth": "ntlm"}, "unknown livy auth 'ntlm'"),
])
def test_bad_livy_options_are_one_line(options, fragment, tmp_path, monkeypatch):
    from maggy_magic import experiment
    from maggy_magic.errors import ConfigError

    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    monkeypatch.delenv("MAGGY_LIVY_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as info:
        experiment.lagom(_quick, _config(**options))
    assert fragment in str(info.value) and "\n" not in str(info.value)
