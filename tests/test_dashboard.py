"""The live dashboard's kernel side: the state it syncs, its bounds and its batching.

Events come from real runs on the local backend (``experiment.run`` with the dashboard
as a listener); the 10,000-trial test generates events with the same schema.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("anywidget")

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment  # noqa: E402
from maggy_magic.ui.dashboard import Dashboard, widgets_available  # noqa: E402
from maggy_magic.ui.state import Curve, DashboardState  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- training functions (module level: workers import this module) ---------------------
def curve_fn(x, reporter):
    """Five steps of a rising curve; small x fails; every trial prints one line."""
    if x < 0.2:
        raise ValueError(f"x={x:.2f} is too small")
    for step in range(5):
        reporter.broadcast(x * (step + 1), step)
        time.sleep(0.01)
    print(f"trial says x={x:.3f}")
    return {"score": x * 5}


def slow_fn(x, reporter):
    for step in range(40):
        reporter.broadcast(x + step, step)
        time.sleep(0.05)
    return x + 40


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
    said = [line for lines in printed.values() for _, line in lines]
    assert sum("trial says" in line for line in said) == result.num_finished


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

    result = experiment.run(slow_fn, hpo(num_trials=10, name="stop"),
                            listeners=[dash, click_once_a_trial_runs],
                            on_driver=lambda d, _: holder.update(driver=d), wait=dash.wait)
    dash.close()
    assert result.state == "stopped"
    assert result.num_finished + result.num_early_stopped < 10
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


def test_ten_thousand_trials_stay_bounded_and_fast():
    dash = Dashboard("big", on_stop=lambda: None, interval=0.05)
    biggest = {}
    real_sync = dash._sync

    def measured_sync():
        real_sync()
        for part, size in sizes(dash.widget).items():
            biggest[part] = max(biggest.get(part, 0), size)

    dash._sync = measured_sync
    events = list(synthetic_run(10_000))
    slowest, start = 0.0, time.perf_counter()
    for event in events:
        t = time.perf_counter()
        dash(event)
        slowest = max(slowest, time.perf_counter() - t)
    feeding = time.perf_counter() - start
    dash.close()
    per_event = feeding / len(events)
    print(f"\n{len(events)} events in {feeding:.2f} s ({per_event * 1e6:.1f} us/event, "
          f"slowest {slowest * 1e3:.1f} ms), {dash.syncs} syncs, largest parts {biggest}")

    assert per_event < 50e-6, "the listener must stay cheap on the driver's thread"
    assert slowest < 1.0     # it waits at most for one payload build (~20 ms here)
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
    # at most one sync per interval while feeding, plus the first and the last
    assert dash.syncs <= feeding / dash.interval + 3


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
    dash = Dashboard("burst", on_stop=lambda: None, interval=0.25)
    first = dash.syncs
    events = list(synthetic_run(200, workers=4, steps=10))
    start = time.monotonic()
    for event in events:
        dash(event)
    burst = time.monotonic() - start
    during = dash.syncs - first
    dash.close()
    assert len(events) > 2_000
    assert burst < dash.interval, "the burst itself must be quick for this test to mean much"
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


def test_widgets_are_not_available_outside_a_kernel(monkeypatch):
    assert widgets_available() is False
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
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


# -- serving widget messages while a cell blocks (a real kernel) ------------------------
KERNEL_SETUP = '''
import threading
from maggy_magic.ui.dashboard import Dashboard

class FakeDriver:
    """What Dashboard.wait needs of a driver: wait() and done."""
    def __init__(self):
        self._done = threading.Event()
    def wait(self, timeout=None):
        return self._done.wait(timeout)
    @property
    def done(self):
        return self._done.is_set()
    def request_stop(self):
        self._done.set()

driver = FakeDriver()
dash = Dashboard("kernel", on_stop=driver.request_stop)
print("COMM", dash.widget.comm.comm_id)
'''


@pytest.fixture
def kernel():
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH",
                                                                            "")]))
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=ROOT)
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def outputs_of(client, msg_id, timeout=30):
    """Stream text and error names of one execution, until the kernel is idle again."""
    texts, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=1)
        except Exception:  # queue.Empty
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            texts.append(content["text"])
        elif kind == "error":
            texts.append(f"ERROR {content['ename']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(texts)
    raise AssertionError(f"no idle status for {msg_id} in {timeout} s: {texts}")


@pytest.mark.slow
def test_wait_serves_the_stop_button_while_the_cell_blocks(kernel):
    manager, client = kernel
    setup = client.execute(KERNEL_SETUP)
    comm_id = outputs_of(client, setup).split("COMM")[1].split()[0]

    blocking = client.execute("dash.wait(driver); print('waited', driver.done)")
    queued = client.execute("print('queued cell ran after, done =', driver.done)")
    # a click comes once the cell runs (the widget is on screen by then); a message sent
    # before the kernel started the cell would be queued by the kernel, not by the pump
    time.sleep(0.5)
    # what the front-end's Stop button sends (anywidget's custom message)
    client.shell_channel.send(client.session.msg("comm_msg", {
        "comm_id": comm_id, "data": {"method": "custom", "content": {"type": "stop"}}}))
    assert "waited True" in outputs_of(client, blocking)
    assert "queued cell ran after, done = True" in outputs_of(client, queued)


@pytest.mark.slow
def test_interrupt_propagates_out_of_wait(kernel):
    manager, client = kernel
    outputs_of(client, client.execute(KERNEL_SETUP))
    blocking = client.execute("dash.wait(driver)")
    time.sleep(1.0)
    manager.interrupt_kernel()
    assert "ERROR KeyboardInterrupt" in outputs_of(client, blocking)
    after = client.execute("print('kernel alive')")
    assert "kernel alive" in outputs_of(client, after)
