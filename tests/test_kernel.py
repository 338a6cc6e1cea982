"""``%%maggy hpo`` in a real Jupyter kernel (ipykernel in a subprocess, jupyter_client).

The kernel runs from a kernel spec written into a temporary directory (this Python,
``ipykernel_launcher``), so no machine-wide kernel or profile is involved. Each test
collects the iopub messages of one cell and checks what a notebook would show: live
progress that is sent while trials still run (its send time precedes the end of the last
trial, as recorded in the run's journal), and the static summary as the cell's last
output.

Nothing here depends on how fast trials run: the first trials run at once, the later ones
wait for a gate file (or for the driver to stop them), which a test creates once it has
seen what it waits for; so the run is still going when the test looks at it.
"""

import datetime
import json
import os
import re
import sys

import pytest
from conftest import journal, pid_alive
from kernels import running_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120     # a hang guard: longer than the held trials wait when a test fails

CELL = """%%maggy hpo --trials 6 --workers 2 --es-policy none --seed 3 --metric score \
--name {name} -o res {extra}
import os, time
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    # trials numbered {free} and up wait for the gate (or to be stopped)
    deadline = time.monotonic() + 30     # in case the test never opens it
    while int(reporter.get_trial_id()) >= {free} and not os.path.exists({gate!r}) \\
            and not reporter.early_stop and time.monotonic() < deadline:
        time.sleep(0.02)
    for step in range(3):
        reporter.broadcast(x + step, step)
        time.sleep(0.1)
    print("trial done", x)
    return {{"score": x}}
"""


def cell(gate, name, extra="", free=2, trials=6, steps=3):
    """CELL for a run called ``name``: ``free`` trials start at once, the rest wait for
    the file ``gate``."""
    return CELL.replace("--trials 6", f"--trials {trials}").replace(
        "range(3)", f"range({steps})").format(name=name, extra=extra, free=free,
                                              gate=str(gate))


@pytest.fixture
def gate(tmp_path):
    """The gate file's path; whatever happens, it exists once the test is over."""
    path = tmp_path / "gate"
    yield path
    path.touch()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    with running_kernel(tmp_path_factory.mktemp("kernel"), {}, TIMEOUT) as kernel:
        reply, _ = kernel.execute("%load_ext maggy_magic")
        assert reply["content"]["status"] == "ok", reply["content"]
        yield kernel


def sent_at(msg):
    date = msg["header"]["date"]
    if isinstance(date, str):
        date = datetime.datetime.fromisoformat(date)
    return date.timestamp()


def outputs(messages):
    return [m for m in messages if m["msg_type"] in ("stream", "display_data",
                                                     "execute_result", "error")]


def last_trial_end(run_dir):
    return max(e["t"] for e in journal(run_dir) if e["type"] in ("trial_finished",
                                                                 "trial_failed"))


def check_summary_is_last_output(kernel, messages):
    """The cell's last output is the static HTML summary of the result bound to res."""
    best_id, best_metric = kernel.value("[res.best_id, res.best_metric]")
    last = outputs(messages)[-1]
    assert last["msg_type"] in ("execute_result", "display_data"), last["msg_type"]
    html = last["content"]["data"]["text/html"]
    assert "maggy-summary" in html and "<svg" in html and "<script" not in html
    match = re.search(r'class="maggy-best">best score = <b>([^<]+)</b> \(trial ([^,]+),', html)
    assert match, html[:500]
    assert match.group(2) == best_id
    assert float(match.group(1)) == pytest.approx(best_metric, rel=1e-3)


def test_text_progress_streams_while_trials_run_then_the_summary(kernel, gate):
    live = []

    def open_the_gate_on_progress(msg):
        # a status line of a run that goes on, with trials done: the gate opens
        if msg["msg_type"] == "stream" and re.search(r"\[running\] [1-9]\d*/6 trials",
                                                     msg["content"]["text"]):
            live.append(msg)
            gate.touch()

    reply, messages = kernel.execute(cell(gate, "text", "--ui text"),
                                     open_the_gate_on_progress)
    assert reply["content"]["status"] == "ok", reply["content"]
    run_dir = kernel.value("res.run_dir")
    ended = last_trial_end(run_dir)
    assert live, [m["content"] for m in outputs(messages)]
    assert sent_at(live[0]) < ended, "no progress line before the last trial ended"
    assert not [m for m in messages if m["msg_type"].startswith("comm_")]
    check_summary_is_last_output(kernel, messages)


def live_status(msg):
    """The dashboard status a comm message syncs while the run goes on, with trials
    finished; else None."""
    if msg["msg_type"] != "comm_msg":
        return None
    status = ((msg["content"].get("data") or {}).get("state") or {}).get("status") or {}
    if status.get("state") == "running" and (status.get("counts") or {}).get("finished"):
        return status
    return None


def test_dashboard_updates_while_trials_run_then_the_summary(kernel, gate):
    assert kernel.value("__import__('maggy_magic.ui').ui.widgets_available()")

    def open_the_gate_on_progress(msg):
        if live_status(msg):
            gate.touch()

    reply, messages = kernel.execute(cell(gate, "widget"), open_the_gate_on_progress)
    assert reply["content"]["status"] == "ok", reply["content"]
    run_dir = kernel.value("res.run_dir")
    ended = last_trial_end(run_dir)
    opened = [m for m in messages if m["msg_type"] == "comm_open"]
    assert opened and sent_at(opened[0]) < ended
    # an update that shows finished trials of a run still going (not the first, empty
    # state the widget is created with) was sent before the last trial ended
    during = [m for m in messages if live_status(m)]
    assert during, "no widget update with finished trials while the run went on"
    assert sent_at(during[0]) < ended
    assert not [m for m in messages if m["msg_type"] == "stream" and
                "/6 trials" in m["content"]["text"]]          # no text progress as well
    check_summary_is_last_output(kernel, messages)

    # the finished run again: its dashboard (replayed) and its summary
    reply, messages = kernel.execute(f"%maggy show {os.path.basename(run_dir)}")
    assert reply["content"]["status"] == "ok", reply["content"]
    kinds = [m["msg_type"] for m in messages]
    assert "comm_open" in kinds
    check_summary_is_last_output(kernel, messages[:])


def test_dashboard_stop_button_stops_the_run_while_the_cell_blocks(kernel, gate):
    assert kernel.value("__import__('maggy_magic.ui').ui.widgets_available()")
    session = kernel.client.session
    sent = []

    def click_stop(msg):
        # the dashboard's model is the comm opened with the anywidget id; stop once a
        # trial is running, as a user would
        if msg["msg_type"] == "comm_open" and "_anywidget_id" in json.dumps(
                msg["content"]["data"].get("state", {})):
            sent.append(msg["content"]["comm_id"])
        elif sent and len(sent) == 1 and msg["msg_type"] == "comm_msg" and \
                '"RUNNING"' in json.dumps(msg["content"]):
            request = session.msg("comm_msg", {"comm_id": sent[0], "data": {
                "method": "custom", "content": {"type": "stop"}}})
            kernel.client.shell_channel.send(request)
            sent.append("stop")

    # the gate stays shut: the trials after the first two run until Stop ends them
    reply, messages = kernel.execute(cell(gate, "stop", trials=8, steps=10), click_stop)
    assert sent[-1] == "stop", "never saw a running trial in the dashboard"
    assert reply["content"]["status"] == "ok", reply["content"]
    state, count = kernel.value("[res.state, len(res.trial_records)]")
    assert state == "stopped" and count < 8


def test_interrupt_stops_workers_shows_partial_summary_and_resume_hint(kernel, gate):
    interrupted = []

    def interrupt_after_two(msg):
        if not interrupted and msg["msg_type"] == "stream" and \
                re.search(r"\b[2-9] finished", msg["content"]["text"]):
            interrupted.append(True)
            kernel.manager.interrupt_kernel()

    # the gate stays shut: trials after the first four wait, the run is live when the
    # interrupt comes
    reply, messages = kernel.execute(cell(gate, "intr", "--ui text -o part", free=4,
                                          trials=8, steps=5), interrupt_after_two)
    assert interrupted
    content = reply["content"]
    assert content["status"] == "error" and content["ename"] == "ExperimentInterrupted"
    assert len(content["traceback"]) == 1 and "\n" not in content["traceback"][0]
    assert "--resume" in content["evalue"]
    shown = [m for m in outputs(messages) if m["msg_type"] == "display_data"]
    assert shown and "maggy-summary" in shown[-1]["content"]["data"]["text/html"]
    assert "interrupted" in shown[-1]["content"]["data"]["text/html"]
    state, run_dir = kernel.value("[part.state, part.run_dir]")
    assert state == "interrupted"
    run_id = os.path.basename(run_dir)
    assert f"--resume {run_id}" in content["evalue"]
    pids = [e["pid"] for e in journal(run_dir) if e["type"] == "worker_joined"]
    assert pids and not any(pid_alive(pid) for pid in pids)


def test_papermill_parameters_drive_the_magic(tmp_path, monkeypatch):
    """A papermill run: the injected parameters reach the options through $name/{name},
    and the executed notebook keeps the static summary as the magic cell's last output."""
    import nbformat
    import papermill

    kernels = tmp_path / "jupyter" / "kernels" / "maggy-papermill"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "maggy-magic papermill", "language": "python",
        "env": {"PYTHONPATH": ROOT, "IPYTHONDIR": str(tmp_path / "ipython")}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("n_trials = 1\nexperiment = 'default'")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        parameters,
        nbformat.v4.new_code_cell("%load_ext maggy_magic"),
        nbformat.v4.new_code_cell(
            "%%maggy hpo --trials $n_trials --name {experiment} --workers 2 "
            "--es-policy none -o res\n"
            "from maggy_magic import Searchspace\n"
            "space = Searchspace(x=('DOUBLE', [0, 1]))\n"
            "def train(x):\n    return x\n"),
        nbformat.v4.new_code_cell("print('TRIALS', len(res.trial_records), res.name)"),
    ]
    nbformat.write(notebook, str(tmp_path / "in.ipynb"))
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"n_trials": 3, "experiment": "papermilled"},
                               kernel_name="maggy-papermill", language="python",
                               cwd=str(tmp_path), progress_bar=False)
    executed = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    magic_cell = next(c for c in executed.cells if c.source.startswith("%%maggy"))
    last = magic_cell.outputs[-1]
    assert last["output_type"] == "execute_result"
    assert "maggy-summary" in last["data"]["text/html"]
    assert "papermilled" in last["data"]["text/html"]
    printed = executed.cells[-1].outputs[0]["text"]
    assert printed.strip() == "TRIALS 3 papermilled"
    assert os.path.isdir(tmp_path / "maggy_experiments" / "papermilled")
