"""The live dashboard's kernel side: the state it syncs, its bounds and its batching.

Events come from real runs on the local backend (``experiment.run`` with the dashboard
as a listener); the 10,000-trial test generates events with the same schema. The last
tests run ``%%maggy hpo`` cells in a real kernel (:mod:`kernels`) and act as the
front-end does: a Stop click and a sort change are comm messages sent while the cell
blocks. How fast the listener is, is measured by ``bench/dashboard_listener.py``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import anywidget  # noqa: F401  (the test extra installs it: missing is a failure)
import pytest
from kernels import running_kernel

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.ui.dashboard import ENV_WIDGETS, Dashboard, widgets_available
from maggy_magic.ui.state import PARTS, Curve, DashboardState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 60


# -- training functions (module level: workers import this module) ---------------------
def curve_fn(x, reporter):
    """Five steps of a rising curve; small x fails; every trial prints one line."""
    if x < 0.2:
        raise ValueError(f"x={x:.2f} is too small")
    for step in range(5):
        reporter.broadcast(x * (step + 1), step)
    print(f"trial says x={x:.3f}")
    return {"score": x * 5}


def until_stopped_fn(x, reporter):
    """Reports once, then runs until the driver stops it (or, if it never does, for a
    while: the test then fails on the trials that finished)."""
    reporter.broadcast(x, 0)
    deadline = time.monotonic() + 30
    while not reporter.early_stop and time.monotonic() < deadline:
        time.sleep(0.02)
    reporter.broadcast(x, 1)        # raises EarlyStopException once stopped
    return x


def hpo(**kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("workers", 2)
    kwargs.setdefault("seed", 3)
    kwargs.setdefault("optimization_key", "score")
    kwargs.setdefault("hb_interval", 0.1)
    return HyperparameterOptConfig(**kwargs)


def sizes(widget):
    return {part: len(json.dumps(getattr(widget, part))) for part in
            ("status", "trials", "curves", "logs")}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One ~1 s run of 8 trials (2 fail, 6 print and finish) seen by a dashboard."""
    os.chdir(tmp_path_factory.mktemp("run"))
    events = []
    dash = Dashboard("curves", on_stop=lambda: None)
    grid = Searchspace(x=("DISCRETE", [0.1, 0.3, 0.5, 0.15, 0.7, 0.9, 0.6, 0.8]))
    config = hpo(optimizer="gridsearch", searchspace=grid, max_failures=8, name="curves")
    result = experiment.run(curve_fn, config, listeners=[events.append, dash],
                            wait=dash.wait)
    dash.close()
    return result, events, dash


def test_synced_state_matches_the_run(real_run):
    result, events, dash = real_run
    w = dash.widget
    assert w.status["state"] == "finished"
    assert w.status["num_trials"] == 8 and w.status["metric"] == "score"
    counts = w.status["counts"]
    assert counts["finished"] == result.num_finished == 6
    assert counts["failed"] == result.num_failed == 2
    assert counts["running"] == counts["pending"] == 0
    assert w.status["best"]["trial"] == result.best_id
    assert w.status["best"]["value"] == pytest.approx(result.best_metric)
    assert w.status["ended"] >= w.status["started"]

    rows = {r["trial"]: r for r in w.trials["rows"]}
    assert w.trials["total"] == 8 and len(rows) == 8
    for record in result.trial_records:
        row = rows[record["trial"]]
        assert row["state"] == record["state"]
        assert row["params"] == record["params"]
        assert row["worker"] == record["worker"]
        if record["state"] == "FINISHED":
            assert row["metric"] == pytest.approx(record["value"])
            assert row["step"] == 4
        else:
            assert row["step"] is None and "too small" in row["error"]
    # default sort: newest trial first
    assert [r["trial"] for r in w.trials["rows"]] == sorted(rows, reverse=True)

    curves = {c["trial"]: c for c in w.curves["curves"]}
    assert w.curves["best"] == result.best_id
    for record in result.trial_records:
        if record["state"] == "FINISHED":
            assert curves[record["trial"]]["points"] == \
                [[s, v] for s, v in zip(record["steps"], record["history"])]

    printed = {e["worker"]: [] for e in events if e["type"] == "worker_joined"}
    for e in events:
        if e["type"] == "log":
            printed[e["worker"]] += [[e["trial"], line] for line in e["lines"]]
    panes = w.logs["workers"]
    assert set(panes) == set(printed)
    for worker, lines in printed.items():
        assert panes[worker]["lines"] == lines and panes[worker]["total"] == len(lines)
        assert panes[worker]["host"]
    # one line per finished trial; a copy of a trial taken back at the tail of the run
    # (grid search queues ahead) may have printed too, under no trial and marked
    said = [(trial, line) for lines in printed.values() for trial, line in lines]
    assert sum("trial says" in line for trial, line in said if trial) == result.num_finished
    assert all(line.startswith("[a copy of trial") for trial, line in said if not trial)


def test_replaying_the_journal_gives_the_same_state(real_run):
    """The same events give the same view, however they arrive (live or replayed)."""
    _, events, dash = real_run
    again = Dashboard("curves", on_stop=lambda: None, interval=60)
    for event in events:
        again(event)
    again.close()
    for part in ("trials", "curves", "logs"):
        live, replayed = getattr(dash.widget, part), getattr(again.widget, part)
        if part == "trials":
            live, replayed = _without_durations(live), _without_durations(replayed)
        assert live == replayed
    assert again.widget.status["counts"] == dash.widget.status["counts"]


def _without_durations(table):
    return [{k: v for k, v in row.items() if k != "duration"} for row in table["rows"]]


def test_stop_from_the_front_end_stops_the_run_gracefully():
    """A Stop message from the front-end (as the button sends it) ends the run early."""
    holder = {}
    dash = Dashboard("stop me", on_stop=lambda: holder["driver"].request_stop())

    def click_once_a_trial_runs(event):
        if event["type"] == "metric" and not holder.get("clicked"):
            holder["clicked"] = True
            # the front-end's message, delivered the way ipywidgets delivers it
            threading.Thread(target=dash.widget._handle_custom_msg,
                             args=({"type": "stop"}, [])).start()

    # the trials run until they are stopped: only the click can end them early
    result = experiment.run(until_stopped_fn, hpo(num_trials=4, name="stop"),
                            listeners=[dash, click_once_a_trial_runs],
                            on_driver=lambda d, _: holder.update(driver=d), wait=dash.wait)
    dash.close()
    assert result.state == "stopped"
    assert result.num_finished + result.num_early_stopped < 4
    assert result.num_finished == 0     # a trial that ran out its time did not finish
    assert dash.widget.status["state"] == "stopped"
    counts = dash.widget.status["counts"]
    assert (counts["finished"], counts["early_stopped"], counts["failed"]) == \
        (result.num_finished, result.num_early_stopped, result.num_failed)
    assert counts["running"] == 0


def test_stop_calls_on_stop_once():
    calls = []
    dash = Dashboard("x", on_stop=lambda: calls.append(1))
    for _ in range(3):
        dash.widget._handle_custom_msg({"type": "stop"}, [])
    dash.widget._handle_custom_msg({"type": "something else"}, [])
    dash.close()
    assert calls == [1]


# -- bounds and batching -----------------------------------------------------------------
def synthetic_run(n_trials, workers=8, steps=20, lines=2):
    """Events of a run of ``n_trials`` trials, with the driver's schema and order."""
    seq = iter(range(10 ** 9))
    t0 = 1_000_000.0

    def ev(type_, t, **fields):
        return dict(type=type_, run="r", seq=next(seq), t=t0 + t, **fields)

    yield ev("run_started", 0, config={"num_trials": n_trials, "direction": "max",
                                       "optimization_key": "acc"},
             kind="hpo", name="big", run_dir="/tmp/x", resumed=False)
    for w in range(workers):
        yield ev("worker_joined", 0, worker=str(w), host="h", pid=w)
    for i in range(n_trials):
        trial, worker, t = f"{i:05d}", str(i % workers), i * 0.01
        x = ((i * 7919) % 10007) / 10007
        yield ev("trial_started", t, trial=trial, params={"x": x, "layers": i % 5},
                 worker=worker, budget=None, info={}, attempt=0)
        for step in range(steps):
            yield ev("metric", t, trial=trial, step=step, value=x * (step + 1) / steps)
        yield ev("log", t, worker=worker, trial=trial,
                 lines=[f"trial {trial} line {k} " + "x" * 50 for k in range(lines)])
        if i % 13 == 0:
            yield ev("trial_failed", t, trial=trial, error="boom", error_type="ValueError",
                     traceback="...", duration=0.5)
        else:
            yield ev("trial_finished", t, trial=trial, value=x, metrics={}, state="FINISHED",
                     duration=0.5)
    yield ev("run_finished", n_trials * 0.01, state="finished", best=None, error=None,
             counts={})


def test_ten_thousand_trials_stay_bounded():
    dash = Dashboard("big", on_stop=lambda: None, interval=0.05)
    biggest, writers = {}, []
    real_sync = dash._sync

    def measured_sync():
        real_sync()
        for part, size in sizes(dash.widget).items():
            biggest[part] = max(biggest.get(part, 0), size)

    dash._sync = measured_sync
    dash.widget.observe(lambda change: writers.append(threading.current_thread()),
                        names=list(PARTS))
    events = list(synthetic_run(10_000))
    start = time.monotonic()
    for event in events:
        dash(event)
    # the count first, then the clock: every sync counted began inside the time measured
    # (the other way round, a sync could begin and end between the two, on a busy machine)
    fed_syncs, fed_writers = dash.syncs, list(writers)
    feeding = time.monotonic() - start
    dash.close()
    print(f"\n{len(events)} events in {feeding:.2f} s, {dash.syncs} syncs, "
          f"largest parts {biggest}")

    # the listener folds events in and nothing else: the widget is written by the
    # flusher thread only, never on the thread that delivers events (the driver's)
    assert all(t.name == "maggy-dashboard" for t in fed_writers), fed_writers
    assert sum(biggest.values()) < 400_000, biggest     # bytes, whatever the trial count
    state: DashboardState = dash.state
    assert len(state.curves) <= 8 + state.top_curves + state.recent_curves
    assert all(len(c.points()) <= state.max_points + 1 for c in state.curves.values())
    w = dash.widget
    assert w.trials["total"] == 10_000 and len(w.trials["rows"]) == state.max_rows
    assert w.status["counts"]["failed"] == len(range(0, 10_000, 13))
    assert w.status["counts"]["finished"] == 10_000 - w.status["counts"]["failed"]
    assert all(len(p["lines"]) <= state.log_tail for p in w.logs["workers"].values())
    assert w.logs["workers"]["0"]["total"] == 2 * 1250
    # the best curves are kept: the best trial's curve is among those synced
    best = w.status["best"]["trial"]
    assert best in {c["trial"] for c in w.curves["curves"]}
    # at most one sync per interval while feeding (however long feeding took), plus the
    # first (on creation) and the last
    assert fed_syncs <= feeding / dash.interval + 2
    assert dash.syncs == fed_syncs + 1


def test_the_listener_never_waits_for_a_widget_write():
    """While the flusher is inside a widget write (held there by the test), events still
    go in: the listener shares only the view state's lock with a sync, not the write."""
    dash = Dashboard("held", on_stop=lambda: None, interval=0)
    inside, release, held = threading.Event(), threading.Event(), {}

    def hold_the_first_write(change):
        if not held:
            held["thread"] = threading.current_thread()
            inside.set()
            # the test releases it once its events are in; if the listener waited for
            # this write it never would, and the wait ends here, failing the test
            held["released"] = release.wait(TIMEOUT)

    dash.widget.observe(hold_the_first_write, names=["status"])
    events = list(synthetic_run(200, workers=4, steps=5))
    dash(events[0])                      # the flusher starts and syncs: it is held
    assert inside.wait(TIMEOUT), "the flusher never synced"
    for event in events[1:]:
        dash(event)
    fed_while_held = not release.is_set()
    release.set()
    dash.close()
    assert held["thread"].name == "maggy-dashboard"
    assert fed_while_held and held["released"], "the listener waited for a widget write"
    assert dash.widget.status["counts"]["finished"] + \
        dash.widget.status["counts"]["failed"] == 200


def test_sorting_selects_rows_over_all_trials():
    dash = Dashboard("big", on_stop=lambda: None, interval=60, max_rows=50)
    for event in synthetic_run(2_000, steps=2, lines=0):
        dash(event)
    dash.close()
    dash.widget.table_sort = {"key": "metric", "desc": True}   # as the front-end sets it
    rows = dash.widget.trials["rows"]
    finished = sorted((r for r in dash.state.rows.values() if r["state"] == "FINISHED"),
                      key=lambda r: -r["metric"])
    assert [r["trial"] for r in rows] == [r["trial"] for r in finished[:50]]
    assert rows[0]["trial"] == dash.widget.status["best"]["trial"]
    dash.widget.table_sort = {"key": "metric", "desc": False}
    rows = dash.widget.trials["rows"]
    assert rows[0]["metric"] == min(r["metric"] for r in finished)
    dash.widget.table_sort = {"key": "param:layers", "desc": False}
    assert {r["params"]["layers"] for r in dash.widget.trials["rows"]} == {0}


def test_a_burst_of_events_costs_few_syncs():
    # an hour between syncs: the burst is over long before one is due, however slow the
    # machine, so every event of it must wait for the same sync
    dash = Dashboard("burst", on_stop=lambda: None, interval=3600)
    first = dash.syncs
    events = list(synthetic_run(200, workers=4, steps=10))
    for event in events:
        dash(event)
    during = dash.syncs - first
    dash.close()
    assert len(events) > 2_000
    assert during <= 1
    assert dash.syncs - first <= 2          # at most one while feeding, one at close
    assert dash.widget.status["counts"]["finished"] + \
        dash.widget.status["counts"]["failed"] == 200


def test_curves_are_thinned_evenly():
    curve = Curve(cap=10)
    for step in range(1000):
        curve.add(step, float(step))
    points = curve.points()
    assert len(points) <= 11
    assert points[0] == [0, 0.0] and points[-1] == [999, 999.0]
    gaps = {b[0] - a[0] for a, b in zip(points[:-2], points[1:-1])}
    assert len(gaps) == 1                   # evenly spread


def test_log_lines_are_cut_and_counted():
    state = DashboardState(log_tail=3, max_line=20)
    state.apply({"type": "worker_joined", "worker": "0", "host": "h", "pid": 1})
    state.apply({"type": "log", "worker": "0", "trial": "0001",
                 "lines": ["a" * 100] + [f"line {i}" for i in range(5)]})
    logs = state.take()["logs"]["workers"]["0"]
    assert logs["total"] == 6
    assert logs["lines"] == [["0001", "line 2"], ["0001", "line 3"], ["0001", "line 4"]]
    state.apply({"type": "log", "worker": "0", "trial": None, "lines": ["b" * 100]})
    line = state.take()["logs"]["workers"]["0"]["lines"][-1][1]
    assert len(line) == 20 and line.endswith("…")


def test_in_a_distributed_run_the_chief_is_the_best_row():
    state = DashboardState()
    state.apply({"type": "run_started", "config": {"direction": "max"}, "t": 0})
    for rank, value in ((0, 0.5), (1, 0.9)):  # rank 1 happens to report more
        trial = f"000{rank}"
        state.apply({"type": "trial_started", "trial": trial, "params": {"lr": 0.1},
                     "worker": str(rank), "info": {"rank": rank, "world_size": 2}, "t": 1})
        state.apply({"type": "trial_finished", "trial": trial, "value": value,
                     "state": "FINISHED", "duration": 1.0, "t": 2})
    assert state.best["trial"] == "0000" and state.best["value"] == 0.5
    assert {row["trial"]: row["rank"] for row in state.rows.values()} == {"0000": 0,
                                                                            "0001": 1}


def test_widgets_are_not_available_outside_a_kernel():
    assert widgets_available() is False


def test_importing_the_package_does_not_import_the_dashboard():
    code = ("import sys, maggy_magic; "
            "bad = [m for m in ('maggy_magic.ui.dashboard', 'anywidget') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


# -- the front-end ----------------------------------------------------------------------
def node():
    path = shutil.which("node")
    assert path, "node (>= 18) is needed for the front-end's unit tests"
    return path


def test_front_end_unit_tests_pass():
    run = subprocess.run([node(), "--test", "js/test/"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout


def test_shipped_bundle_is_built_from_the_sources():
    run = subprocess.run([node(), "js/build.mjs", "--check"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr


def test_wheel_ships_the_front_end(tmp_path):
    """The built wheel contains the bundled module and stylesheet."""
    import setuptools

    # the project's setup installs setuptools>=77 (pyproject's build requirement); an
    # older one cannot read the metadata, so pip then builds in an isolated environment
    isolation = [] if int(setuptools.__version__.split(".")[0]) < 77 else \
        ["--no-build-isolation"]
    source = tmp_path / "src"        # a copy: building writes build/ and *.egg-info
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "build", "*.egg-info", "node_modules", "tests",
        "maggy_experiments"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                          *isolation, "-w", str(tmp_path), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    import zipfile

    wheel = next(tmp_path.glob("maggy_magic-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "maggy_magic/ui/static/dashboard.js" in names
    assert "maggy_magic/ui/static/dashboard.css" in names
    assert "maggy_magic/ui/dashboard.py" in names


# -- in a real kernel: %%maggy cells, the front-end's messages while they block ---------
#: trials of this cell report once, then run until the driver stops them (or, if it
#: never does, for 30 s: the test then fails on the trials that finished)
CELL = """%%maggy hpo --trials {trials} --workers 2 --es-policy none --seed 3 --metric score \
--hb-interval 0.1 --name {name} -o {output}
import time
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    reporter.broadcast(x, 0)
    deadline = time.monotonic() + {hold}
    while not reporter.early_stop and time.monotonic() < deadline:
        time.sleep(0.02)
    reporter.broadcast(x, 1)        # raises once the trial is stopped
    return {{"score": x}}
"""


def cell(name, output, trials=4, hold=30):
    return CELL.format(name=name, output=output, trials=trials, hold=hold)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    with running_kernel(tmp_path_factory.mktemp("kernel"), {}, TIMEOUT) as kernel:
        reply, _ = kernel.execute("%load_ext maggy_magic")
        assert reply["content"]["status"] == "ok", reply["content"]
        yield kernel


def synced(msg, part):
    """The value of the dashboard part ``part`` that a comm message syncs, or None."""
    if msg["msg_type"] != "comm_msg":
        return None
    data = msg["content"].get("data") or {}
    return (data.get("state") or {}).get(part) if data.get("method") == "update" else None


def is_dashboard(msg):
    return msg["msg_type"] == "comm_open" and \
        "_anywidget_id" in ((msg["content"].get("data") or {}).get("state") or {})


def a_trial_runs(msg):
    status = synced(msg, "status") or {}
    return status.get("state") == "running" and (status.get("counts") or {}).get("running")


def front_end(kernel, comm_id, content):
    """Send what the dashboard's front-end sends: a custom message or a state update."""
    data = {"method": "custom", "content": content} if "type" in content else \
        {"method": "update", "state": content, "buffer_paths": []}
    kernel.client.shell_channel.send(kernel.client.session.msg(
        "comm_msg", {"comm_id": comm_id, "data": data}))


def finish(kernel, msg_id):
    """(reply, stream text) of a cell sent with ``client.execute``, once it has run."""
    texts = []
    while True:
        msg = kernel.client.get_iopub_msg(timeout=kernel.timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            texts.append(f"ERROR {msg['content']['ename']}")
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kernel.client.get_shell_msg(timeout=kernel.timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply, "".join(texts)


@pytest.mark.slow
def test_widgets_off_in_a_kernel_gives_text_progress(tmp_path):
    """MAGGY_MAGIC_WIDGETS=0 in a kernel that could show widgets: no widget is opened,
    the text progress is printed instead."""
    with running_kernel(tmp_path, {ENV_WIDGETS: "0"}, TIMEOUT) as kernel:
        reply, _ = kernel.execute("%load_ext maggy_magic")
        assert reply["content"]["status"] == "ok", reply["content"]
        available = "__import__('maggy_magic.ui').ui.widgets_available()"
        assert kernel.value(available) is False
        reply, messages = kernel.execute(cell("off", "off", trials=2, hold=0))
        assert reply["content"]["status"] == "ok", reply["content"]
        kinds = {m["msg_type"] for m in messages}
        assert not {"comm_open", "comm_msg"} & kinds, kinds
        printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
        assert re.search(r"maggy-magic off: run \S+ on 2 local worker\(s\), 2 trials", printed), \
            printed
        assert re.search(r"off \[finished\] 2 trials: 2 finished", printed), printed
        # the variable is the reason: without it this kernel shows the dashboard
        kernel.execute("import os; del os.environ['MAGGY_MAGIC_WIDGETS']")
        assert kernel.value(available) is True
        reply, messages = kernel.execute(cell("on", "on", trials=1, hold=0))
        assert reply["content"]["status"] == "ok", reply["content"]
        assert any(is_dashboard(m) for m in messages)


@pytest.mark.slow
def test_stop_is_served_while_the_cell_blocks_and_queued_cells_wait(kernel):
    """The Stop click reaches the kernel while the %%maggy cell blocks (its trials run
    until stopped); a cell queued behind it runs after it, and sees its result."""
    comm, queued = [], []

    def act(msg):
        if is_dashboard(msg) and not comm:
            comm.append(msg["content"]["comm_id"])
            # the next cell is queued now, while this one runs
            queued.append(kernel.client.execute("print('queued cell:', stopped.state)"))
        elif comm and len(comm) == 1 and a_trial_runs(msg):
            comm.append("stop")
            front_end(kernel, comm[0], {"type": "stop"})

    reply, _ = kernel.execute(cell("stop", "stopped"), act)
    assert comm[-1] == "stop", "never saw a running trial in the dashboard"
    assert reply["content"]["status"] == "ok", reply["content"]
    queued_reply, printed = finish(kernel, queued[0])
    assert queued_reply["content"]["status"] == "ok", printed
    assert printed == "queued cell: stopped\n"
    state, records = kernel.value("[stopped.state, stopped.trial_records]")
    assert state == "stopped"
    assert len(records) < 4 and not [r for r in records if r["state"] == "FINISHED"]


@pytest.mark.slow
def test_interrupt_propagates_out_of_the_blocking_cell(kernel):
    """Interrupt while the cell serves the front-end (it has answered a sort change): the
    run ends as interrupted, the cell with ExperimentInterrupted, the kernel lives on."""
    comm, interrupted = [], []
    ascending = {"key": "trial", "desc": False}

    def act(msg):
        if is_dashboard(msg) and not comm:
            comm.append(msg["content"]["comm_id"])
        elif len(comm) == 1 and a_trial_runs(msg):
            comm.append("sorted")
            front_end(kernel, comm[0], {"table_sort": ascending})
        elif not interrupted and (synced(msg, "trials") or {}).get("sort") == ascending:
            interrupted.append(True)        # the cell is serving widget messages
            kernel.manager.interrupt_kernel()

    reply, _ = kernel.execute(cell("intr", "intr"), act)
    assert interrupted, "the sort change was never answered while the cell ran"
    content = reply["content"]
    assert content["status"] == "error" and content["ename"] == "ExperimentInterrupted", \
        content
    assert kernel.value("intr.state") == "interrupted"
    reply, messages = kernel.execute("print('kernel alive')")
    assert reply["content"]["status"] == "ok"
    assert any(m["msg_type"] == "stream" and m["content"]["text"] == "kernel alive\n"
               for m in messages)


def test_the_default_sort_by_trial_is_the_general_order():
    import random

    from maggy_magic.ui.table_order import first_rows

    ids = [f"{i:04d}" for i in range(300)]
    random.Random(1).shuffle(ids)
    rows = [{"trial": t, "params": {"same": t}} for t in ids]
    for desc in (True, False):
        fast = [r["trial"] for r in first_rows(rows, "trial", desc, 20)]
        general = [r["trial"] for r in first_rows(rows, "param:same", desc, 20)]
        assert fast == general == sorted(ids, reverse=desc)[:20]


def test_the_count_of_trials_with_metrics_follows_retries():
    from maggy_magic.ui.state import DashboardState

    state = DashboardState()
    for kind, fields in [("trial_started", {"trial": "0", "params": {}}),
                         ("metric", {"trial": "0", "step": 0, "value": 1.0}),
                         ("metric", {"trial": "0", "step": 1, "value": 2.0}),
                         ("trial_started", {"trial": "1", "params": {}}),
                         ("trial_started", {"trial": "0", "params": {}})]:  # retried
        state.apply(dict(type=kind, run="r", seq=0, t=0.0, **fields))
    assert state.curves_payload(0.0)["total"] == 0
    state.apply({"type": "metric", "run": "r", "seq": 0, "t": 0.0, "trial": "1", "step": 0,
                 "value": 3.0})
    assert state.with_metrics == 1
