"""Cluster runs that outlive their kernel, through real kernels (jupyter_client) and the
Livy test server: ``--resume`` of an interrupted livy run in a new kernel runs only the
missing trials, and ``%maggy attach`` in a new kernel follows a run whose kernel was killed
to its end, with the whole run in the dashboard (the session's buffer is kept small here,
so most of it comes from the cluster's journal) and the local record continued.
"""

import json
import os
import re
import signal
import time

import pytest
from kernels import running_kernel
from livy_server import LivyServer

TIMEOUT = 900

pytestmark = pytest.mark.slow

CELL = """%%maggy hpo --backend livy --url {url} --trials {trials} --workers 2 \
--es-policy none --seed 5 --metric score --name {name} --root {root} -o res --ui {ui} \
--backend-opt remote_root={remote} --backend-opt buffer_events=20 {extra}
from maggy_magic import Searchspace
space = Searchspace(x=("INTEGER", [0, 1000]))

def train(x, reporter):
    import glob, os, time, uuid
    # the first {free} trials end at once; later ones wait while the gate file exists
    # (bounded, so a broken test cannot hang them)
    if len(glob.glob({marks!r} + "/*")) >= {free}:
        deadline = time.time() + 300
        while os.path.exists({gate!r}) and time.time() < deadline:
            reporter.broadcast(x, 0)
            time.sleep(0.1)
    for step in range(5):
        reporter.broadcast(x + step, step)
    open(os.path.join({marks!r}, uuid.uuid4().hex), "w").close()
    return {{"score": x}}
"""


@pytest.fixture(scope="module")
def server():
    with LivyServer(spark_master="local[2]") as livy:
        yield livy


@pytest.fixture
def place(tmp_path):
    (tmp_path / "marks").mkdir()
    (tmp_path / "gate").touch()
    return tmp_path


def cell(server, place, name, trials, free, ui="text", extra=""):
    return CELL.format(url=server.url, trials=trials, name=name, root=place / "runs",
                       remote=place / "cluster", ui=ui, extra=extra, free=free,
                       marks=str(place / "marks"), gate=str(place / "gate"))


def kernel_in(place, label):
    conf = place / f"sparkmagic-{label}"
    conf.mkdir()
    return running_kernel(place / label, {"SPARKMAGIC_CONF_DIR": str(conf),
                                          "SPARK_LOCAL_IP": "127.0.0.1"}, TIMEOUT)


def shown(messages):
    return " ".join(json.dumps(m["content"]) for m in messages
                    if m["msg_type"] in ("stream", "error", "execute_result", "display_data"))


def events(run_dir):
    with open(os.path.join(run_dir, "journal.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_an_interrupted_livy_run_resumes_in_a_new_kernel_running_only_missing_trials(
        server, place):
    with kernel_in(place, "first") as kernel:
        kernel.execute("%load_ext maggy_magic")
        interrupted = []

        def interrupt_after_two(msg):
            if not interrupted and msg["msg_type"] == "stream" and \
                    re.search(r"\b2 finished", msg["content"]["text"]):
                interrupted.append(True)
                kernel.manager.interrupt_kernel()

        reply, messages = kernel.execute(cell(server, place, "resumable", 6, free=2),
                                         interrupt_after_two)
        assert interrupted and reply["content"]["status"] == "error", shown(messages)
        hint = reply["content"]["evalue"]
        found = re.search(r"--resume (\S+)", hint)
        assert found and "ExperimentInterrupted" == reply["content"]["ename"], hint
        run_id = found.group(1)
    os.unlink(place / "gate")  # the rest may run now
    with kernel_in(place, "second") as kernel:
        kernel.execute("%load_ext maggy_magic")
        reply, messages = kernel.execute(cell(server, place, "resumable", 6, free=2,
                                              extra=f"--resume {run_id}"))
        assert reply["content"]["status"] == "ok", shown(messages)
        state, count, run_dir, remote = kernel.value(
            "[res.state, res.num_finished, res.run_dir, res.remote_run_dir]")
    assert (state, count) == ("finished", 6)
    assert os.path.basename(run_dir) == run_id and str(place / "cluster") in remote
    # a new session resumed the cluster's journal: the second part started only the
    # trials the first did not finish
    journal = events(remote)
    second = max(i for i, e in enumerate(journal) if e["type"] == "run_started")
    done_before = {e["trial"] for e in journal[:second] if e["type"] == "trial_finished"}
    started_after = {e["trial"] for e in journal[second:] if e["type"] == "trial_started"}
    assert len(done_before) == 2 and not done_before & started_after
    assert len(done_before | started_after) == 6 and journal[second]["resumed"] is True
    assert len(server.sessions) >= 2  # the second kernel made a session of its own
    # the local record went on too: both parts, each trial finished once
    local = events(run_dir)
    assert [e["type"] for e in local].count("run_started") == 2
    finished = [e["trial"] for e in local if e["type"] == "trial_finished"]
    assert sorted(set(finished)) == sorted(finished) and len(finished) == 6


def test_a_run_outlives_its_killed_kernel_and_attach_follows_it_to_the_end(server, place):
    with kernel_in(place, "doomed") as kernel:
        kernel.execute("%load_ext maggy_magic")
        client = kernel.client
        msg_id = client.execute(cell(server, place, "outlives", 4, free=1))
        run_id, deadline = None, time.time() + 600
        while run_id is None and time.time() < deadline:
            msg = client.get_iopub_msg(timeout=TIMEOUT)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                found = re.search(r"maggy-magic: run (\S+) on Livy session",
                                  msg["content"]["text"])
                run_id = found.group(1) if found else None
        assert run_id
        while len(os.listdir(place / "marks")) < 1 and time.time() < deadline:
            time.sleep(0.2)  # a trial ended while the first kernel followed the run
        time.sleep(2)
        kernel.manager.signal_kernel(signal.SIGKILL)  # no atexit, no goodbye
        while kernel.manager.is_alive() and time.time() < deadline:
            time.sleep(0.1)
    with kernel_in(place, "later") as kernel:
        kernel.execute("%load_ext maggy_magic")
        reply, messages = kernel.execute(f"%maggy list --root {place / 'runs'}")
        assert reply["content"]["status"] == "ok", shown(messages)
        assert re.search(rf"run {run_id} \(outlives\) is going on Livy session \d+",
                         shown(messages)), shown(messages)
        released = []

        def release_once_attached(msg):
            if not released and msg["msg_type"] == "comm_open":
                released.append(True)
                os.unlink(place / "gate")

        reply, messages = kernel.execute(f"%maggy attach {run_id} --root {place / 'runs'} "
                                         "-o res --ui widget", release_once_attached)
        assert reply["content"]["status"] == "ok", shown(messages)
        assert released
        state, count, run_dir = kernel.value("[res.state, res.num_finished, res.run_dir]")
    assert (state, count) == ("finished", 4)
    # the dashboard got the whole run from the start (most of it from the cluster's
    # journal: the session's buffer holds 20 events), the last update with 4 finished
    updates = [m["content"]["data"]["state"] for m in messages
               if m["msg_type"] == "comm_msg" and "state" in (m["content"].get("data") or {})]
    status = [u["status"] for u in updates if "status" in u]
    assert status and status[-1]["state"] == "finished" and \
        status[-1]["counts"]["finished"] == 4, status[-1:]
    assert not any(e["type"] == "events_lost" for e in events(run_dir))
    # the local record: what the killed kernel wrote, then the rest, each event once
    seqs = [e["seq"] for e in events(run_dir)]
    assert seqs == list(range(len(seqs))) and events(run_dir)[-1]["type"] == "run_finished"
    assert os.path.exists(os.path.join(run_dir, "result.json"))
