"""Pieces of the livy backend that need no server: the remote ring buffer and its gap
report, the replay of a poll into listeners, the reply framing, and the statements."""

import ast
import threading

import pytest

from maggy_magic.backends.livy import bundle, remote, statements
from maggy_magic.backends.livy.remote import EventBuffer


def _event(i):
    return {"type": "metric", "run": "r", "seq": i, "t": 0.0, "trial": "0", "step": i,
            "value": float(i)}


def test_buffer_reports_a_gap_instead_of_losing_events_silently():
    buffer = EventBuffer(capacity=5)
    for i in range(12):
        buffer(_event(i))
    events, lost, cursor = buffer.since(0, limit=3)
    assert lost == [0, 7]  # cursors 0..6 fell out of the buffer
    assert [e["seq"] for e in events] == [7, 8, 9] and cursor == 10
    events, lost, cursor = buffer.since(cursor)
    assert lost is None and [e["seq"] for e in events] == [10, 11] and cursor == 12
    assert buffer.since(12) == ([], None, 12)


def test_buffer_is_safe_between_a_writer_and_a_reader():
    buffer = EventBuffer(capacity=100000)
    writer = threading.Thread(target=lambda: [buffer(_event(i)) for i in range(20000)])
    writer.start()
    got, cursor = [], 0
    while writer.is_alive() or cursor < buffer.total:
        events, lost, cursor = buffer.since(cursor, limit=500)
        assert lost is None
        got += [e["seq"] for e in events]
    writer.join()
    assert got == list(range(20000))


def test_poll_replay_delivers_a_gap_event_then_the_rest(tmp_path):
    from maggy_magic.backends.livy.follow import Poller, RemoteRunHandle
    from maggy_magic.backends.livy.settings import LivySettings
    from maggy_magic.events import EventStream
    from maggy_magic.store import RunStore, read_journal

    store = RunStore(str(tmp_path / "run"))
    stream = EventStream("r")
    seen = []
    stream.add(store)
    stream.add(seen.append)
    handle = RemoteRunHandle(stream)
    # a session that lost the run's journal too: the replay finds nothing
    target = SessionHere({"_maggy_livy": {"uploads": {}, "runs": {}}})
    poller = Poller(target, "r", handle, stream, LivySettings(url="http://x:1"), store)
    poller.absorb({"events": [_event(0)], "lost": None, "cursor": 1, "done": False})
    poller.absorb({"events": [_event(5)], "lost": [1, 5], "cursor": 6, "done": True,
                   "result": None, "error": None})
    store.close()
    assert [e["type"] for e in seen] == ["metric", "events_lost", "metric"]
    assert seen[1]["count"] == 4 and seen[1]["first"] == 1 and seen[1]["end"] == 5
    assert [e["type"] for e in read_journal(store.path)] == ["metric", "events_lost", "metric"]
    assert handle.done and poller.cursor == 6


class SessionHere:
    """Runs the statements the client sends in a namespace of this process, as a Livy
    session would in its own (for the pieces that need no Spark)."""

    session_id, label = 0, "a namespace here"

    def __init__(self, namespace):
        self.namespace = namespace
        self.client = self

    def run(self, session_id, code, timeout, what):
        printed = []
        self.namespace["print"] = lambda *args: printed.append(" ".join(map(str, args)))
        exec(code, self.namespace)  # noqa: S102 - the client's own statements
        return "\n".join(printed)


def test_events_that_fell_out_of_the_buffer_are_read_from_the_cluster_journal(tmp_path):
    from maggy_magic.backends.livy.follow import Poller, RemoteRunHandle
    from maggy_magic.backends.livy.settings import LivySettings
    from maggy_magic.events import EventStream
    from maggy_magic.store import RunStore, read_journal

    cluster = RunStore(str(tmp_path / "cluster"))
    for i in range(6):
        cluster(_event(i))
    cluster.close()

    class Held:  # what the session holds of the run: where its journal is
        run_dir = cluster.path

    target = SessionHere({"_maggy_livy": {"uploads": {}, "runs": {"r": Held()}}})
    local = RunStore(str(tmp_path / "local"))
    stream = EventStream("r")
    seen = []
    stream.add(local)
    stream.add(seen.append)
    poller = Poller(target, "r", RemoteRunHandle(stream), stream,
                     LivySettings(url="http://x:1"), local)
    poller.absorb({"events": [_event(0)], "lost": None, "cursor": 1, "done": False})
    poller.absorb({"events": [_event(5)], "lost": [1, 5], "cursor": 6, "done": True,
                   "result": None, "error": None})
    local.close()
    assert [e["seq"] for e in seen] == list(range(6))
    assert [e["seq"] for e in read_journal(local.path)] == list(range(6))


def test_a_reattached_record_keeps_each_event_once(tmp_path):
    from maggy_magic.backends.livy.follow import After
    from maggy_magic.store import RunStore, read_journal

    store = RunStore(str(tmp_path / "run"))
    for i in range(3):
        store(_event(i))
    keep = After(store, kept=2)  # the record held seq 0..2; the replay starts at 0
    for i in range(5):
        keep(_event(i))
    store.close()
    assert [e["seq"] for e in read_journal(store.path)] == [0, 1, 2, 3, 4]


def test_a_remote_cell_runs_in_the_session_namespace_and_finds_its_names():
    from maggy_magic.backends.livy.remote_cell import build
    from maggy_magic.errors import ConfigError

    namespace = {"__name__": "__main__", "offset": 3}
    exec("def helper(x):\n    return x + offset\n", namespace)  # an earlier cell
    cell = ("from maggy_magic import Searchspace\nprint('cell ran')\n"
            "space = Searchspace(x=('DOUBLE', [0, 1]))\n"
            "def train(x, reporter):\n    return {'metric': helper(x)}\n")
    spec = {"kind": "hpo", "num_trials": 2, "run_id": "r", "cell": cell, "magic": {},
            "backend": "spark", "es_policy": "none"}
    config, train_fn, printed = build(spec, namespace, {"master": "local[1]"})
    assert printed == "cell ran" and list(config.searchspace.keys()) == ["x"]
    assert train_fn.__globals__ is namespace and namespace["train"] is train_fn
    assert train_fn(0.5, None) == {"metric": 3.5}
    assert config.backend_options == {"master": "local[1]"} and config.num_trials == 2
    with pytest.raises(NameError):
        build(dict(spec, cell="missing + 1"), namespace, {})
    with pytest.raises(ConfigError, match="--fn 'nope' is not defined"):
        build(dict(spec, magic={"fn": "nope"}), namespace, {})


def test_a_big_payload_names_its_heaviest_captured_globals(capsys):
    from maggy_magic.backends.livy.payload import big_payload_note

    big, small = bytes(3 * 2**20), bytes(10)

    def train(x):
        return len(big) + len(small) + x

    assert big_payload_note(train, {}, 2**20, threshold=4 * 2**20) is None
    note = big_payload_note(train, {}, 3 * 2**20, threshold=2**20)
    assert "as 3.0 MB, mostly big (3.0 MB);" in note and "small" not in note
    assert note in capsys.readouterr().out


def test_reply_survives_noise_printed_around_it():
    text = "a background print\n" + bundle.reply({"cursor": 3, "events": []}) + "\nmore"
    assert bundle.read_reply(text) == {"cursor": 3, "events": []}
    assert bundle.read_reply("no reply here") is None


@pytest.mark.parametrize("code", [
    statements.probe(), statements.upload("k", "QUJD"), statements.install("k", "m.zip"),
    statements.start('{"run_id": "r"}', "x = '''\"quotes\"'''"),
    statements.poll("r", 3, 10), statements.stop("r", "stop", "it's done"),
    statements.forget("r"), statements.start_cell('{"cell": "x = 1"}'), statements.runs(),
    statements.replay("r", 0, 5, 10)])
def test_statements_are_valid_python(code):
    ast.parse(code)


def test_upload_and_probe_statements_run_with_the_standard_library_alone():
    namespace = {}
    for chunk in ("QU", "JD"):
        exec(statements.upload("k", chunk), namespace)  # noqa: S102 - our own code
    assert namespace["_maggy_livy"]["uploads"]["k"] == ["QU", "JD"]
    printed = []
    namespace["print"] = printed.append
    exec(statements.probe(), namespace)  # noqa: S102
    answer = bundle.read_reply(printed[-1])
    assert answer["python"] == bundle.python_version() and answer["importable"] is True


def _train(x, reporter):
    return {"metric": x}


def test_config_objects_travel_with_the_function_and_plain_options_as_json():
    from maggy_magic import AblationConfig, AblationStudy
    from maggy_magic.ablation import LOCO
    from maggy_magic.distributed.config import TorchDistributedConfig

    study = AblationStudy("d", 1, "y", dataset_generator=lambda ablated: ablated)
    study.features.include("a", "b")
    named = AblationConfig(study, name="abl", workers=2, backend="livy", run_id="r1")
    spec = bundle.config_spec(named, "remote", {"conf": {"k": "v"}})
    assert spec["kind"] == "ablation" and spec["objects"] == ["ablation_study"]
    assert spec["ablator"] == "loco" and "ablation_study" not in spec
    assert spec["backend"] == "spark" and spec["backend_options"] == {"conf": {"k": "v"}}
    assert bundle.config_objects(named) == {"ablation_study": study}
    # an ablator given as an object is an object too
    given = AblationConfig(study, ablator=LOCO(study), backend="livy")
    assert bundle.config_spec(given, "remote", {})["objects"] == ["ablation_study", "ablator"]
    assert "ablator" not in bundle.config_spec(given, "remote", {})
    dist = TorchDistributedConfig(module="M", dataset=["D"], hparams={"lr": 0.1},
                                  backend="livy", max_restarts=1)
    spec = bundle.config_spec(dist, "remote", {})
    assert spec["kind"] == "dist" and spec["framework"] == "torch"
    assert spec["objects"] == ["dataset", "model"] and "model" not in spec
    assert spec["hparams"] == {"lr": 0.1} and spec["max_restarts"] == 1
    assert spec["backend_options"] == {"barrier": True}  # every rank at once
    assert bundle.config_spec(dist, "remote", {"barrier": False})["backend_options"] == \
        {"barrier": False}
    assert bundle.config_objects(dist) == {"model": "M", "dataset": ["D"]}



def test_the_run_options_of_every_kind_travel_to_the_cluster(monkeypatch):
    from maggy_magic import HyperparameterOptConfig, Searchspace

    config = HyperparameterOptConfig(
        num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0, 1])), backend="livy",
        tls=False, files_limit_mb=8, driver_port="50000-50010", max_failures=3, seed=4)
    spec = bundle.config_spec(config, "remote", {})
    assert "objects" not in spec and spec["searchspace"] == config.searchspace.to_dict()
    assert (spec["tls"], spec["files_limit_mb"], spec["driver_port"], spec["max_failures"],
            spec["seed"], spec["storage"]) == (False, 8, "50000-50010", 3, 4, None)
    # the stop conditions too: the cluster's driver is the one that stops the search
    timed = HyperparameterOptConfig(
        num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0, 1])), backend="livy",
        time_budget="2m", target=0.9)
    spec = bundle.config_spec(timed, "remote", {})
    assert (spec["time_budget"], spec["target"]) == (timed.time_budget, 0.9)
    rebuilt = remote.build_config(spec, {})
    assert (rebuilt.time_budget, rebuilt.target) == (timed.time_budget, 0.9)
    # MLflow tracking is this side's (it logs the events replayed here), whatever the
    # cluster's environment says
    tracked = HyperparameterOptConfig(searchspace=Searchspace(x=("DOUBLE", [0, 1])),
                                      backend="livy", mlflow="http://127.0.0.1:5000")
    spec = bundle.config_spec(tracked, "remote", {})
    assert spec["mlflow"] is False
    monkeypatch.setenv("MAGGY_MAGIC_MLFLOW", "http://cluster:5000")
    rebuilt = remote.build_config(spec, {})
    rebuilt.validate()
    assert rebuilt.mlflow is False


def test_a_config_the_cluster_refuses_is_its_one_line_error_in_the_first_reply():
    import base64
    import json

    import cloudpickle

    from maggy_magic.backends.livy import remote

    namespace = {}
    payload = cloudpickle.dumps({"function": _train, "objects": {"model": 1, "dataset": 2}})
    remote.session_state(namespace)["uploads"]["r2"] = [base64.b64encode(payload).decode()]
    spec = {"kind": "dist", "framework": "jax", "objects": ["dataset", "model"],
            "run_id": "r2", "hparams": {}, "backend": "spark", "backend_options": {}}
    answer = bundle.read_reply(remote.start(namespace, json.dumps(spec)))
    assert answer["done"] is True and answer["result"] is None
    assert answer["error"]["type"] == "ConfigError"
    assert answer["error"]["message"] == "unknown framework 'jax' for a dist run"
    assert "r2" not in remote.session_state(namespace)["runs"]
