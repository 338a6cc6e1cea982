"""The Spark backend on a real ``local-cluster`` (separate executor JVMs), no mocks.

One SparkSession, created by the backend itself from ``master=``, is shared by the module.
The training functions live in this module, which the executors cannot import: the
backend notices and pickles them by value, as it does for a notebook's functions.
"""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import executor_jvm, journal, pid_alive

from maggy_magic import (
    ConfigError,
    ExperimentFailed,
    ExperimentInterrupted,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
)
from maggy_magic.trial import Trial

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER = "local-cluster[2,1,1024]"
#: Hang guard, not a speed bound: how long a test waits for something that must happen
#: (a killed process to be gone, a gate file to appear) before it fails instead of hanging.
HANG_GUARD = 60.0


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from maggy_magic.backends.spark import SparkBackend

    backend = SparkBackend(master=MASTER)
    assert backend.sc.getConf().get("spark.task.maxFailures") == "8"
    assert backend.sc.getConf().get("spark.ui.showConsoleProgress") == "false"
    yield backend.session
    backend.session.stop()


def config(**kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("workers", 2)
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("backend", "spark")
    kwargs.setdefault("hb_interval", 0.1)
    return HyperparameterOptConfig(**kwargs)


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def active_jobs_of(sc, group):
    return set(sc.statusTracker().getActiveJobsIds()) & \
        set(sc.statusTracker().getJobIdsForGroup(group))


# -- training functions (this module is not importable on the executors) ----------------
def slow_curve(x, reporter):
    """Higher x is better at every step."""
    for step in range(15):
        reporter.broadcast(x * (step + 1), step)
        time.sleep(0.05)
    return x * 15


def stubborn(x):
    time.sleep(60)  # ignores stop requests: only cancelling the Spark job ends it
    return x


def crash(x):
    os._exit(3)


def where_from(x):
    """Where the shipped zip is on this task's path, and what a bare interpreter (no
    site-packages, so no installed copy) imports from it alone."""
    zips = [p for p in sys.path if os.path.basename(p).startswith("maggy_magic-")
            and p.endswith(".zip")]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import maggy_magic, maggy_magic.backends.spark.task; print(maggy_magic.__file__)")
    imported = subprocess.run([sys.executable, "-S", "-c", code, zips[0]], check=True,
                              capture_output=True, text=True).stdout.strip() if zips else ""
    return {"metric": x, "zip": zips[0] if zips else "", "imported": imported}


def together(x, rank=None, world_size=None, peers=None, barrier_context=None):
    gathered = barrier_context.allGather(str(rank))
    return {"metric": x, "rank": rank, "world": world_size, "peers": ",".join(peers),
            "gathered": ",".join(gathered), "pid": os.getpid()}


# -- tests ------------------------------------------------------------------------------
def test_hpo_with_median_early_stopping_on_separate_executor_jvms(spark):
    events = []
    result = experiment.lagom(slow_curve, config(
        num_trials=12, es_policy="median", es_min=4, es_interval=0.2, name="spark-hpo"),
        listeners=[events.append])
    assert result.state == "finished"
    records = result.trial_records
    assert len(records) == 12
    assert {t["state"] for t in records} <= {Trial.FINISHED, Trial.EARLY_STOPPED}
    stopped = [t for t in records if t["state"] == Trial.EARLY_STOPPED]
    assert stopped and all(len(t["steps"]) < 15 for t in stopped)
    best_x = max(t["params"]["x"] for t in records)
    assert result.best_params["x"] == best_x and result.best_metric == pytest.approx(best_x * 15)
    joined = [e for e in events if e["type"] == "worker_joined"]
    assert sorted(e["worker"] for e in joined) == ["0", "1"]
    jvms = {executor_jvm(e["pid"]) for e in joined}
    assert len(jvms) == 2 and os.getpid() not in jvms  # two executor JVMs, not the driver
    workers = {e["worker"] for e in events if e["type"] == "trial_started"}
    assert workers == {"0", "1"}
    kinds = [e["type"] for e in journal(result.run_dir)]
    assert kinds[-1] == "run_finished" and kinds.count("trial_started") == 12


def test_worker_prints_stream_before_the_trial_ends_and_streams_are_restored(spark, tmp_path):
    seen = str(tmp_path)

    def chatty(x, reporter):
        trial = reporter.get_trial_id()
        print(f"hello from trial {trial} pid={os.getpid()}")
        # the trial goes on until the driver has shown its line (a file the test makes)
        shown, step = os.path.join(seen, f"shown-{trial}"), 0
        deadline = time.time() + HANG_GUARD
        while not os.path.exists(shown) and time.time() < deadline:
            reporter.broadcast(x, step)
            step += 1
            time.sleep(0.05)
        return {"metric": x, "pid": os.getpid(), "stdout": type(sys.stdout).__name__,
                "streamed": "yes" if os.path.exists(shown) else "no"}

    events = []

    def show(event):
        events.append(event)
        if event["type"] == "log" and any("hello from trial" in line
                                          for line in event["lines"]):
            open(os.path.join(seen, f"shown-{event['trial']}"), "w").close()

    result = experiment.lagom(chatty, config(num_trials=4, name="spark-print"),
                              listeners=[show])
    assert result.num_finished == 4
    for record in result.trial_records:
        trial = record["trial"]
        logs = [e for e in events if e["type"] == "log" and e["trial"] == trial
                and any(f"hello from trial {trial}" in line for line in e["lines"])]
        finished = next(e for e in events if e["type"] == "trial_finished"
                        and e["trial"] == trial)
        assert logs, f"the print of trial {trial} never reached the driver"
        assert logs[0]["seq"] < finished["seq"]
        # streamed while the trial ran: the trial saw the driver show its line
        assert record["metrics"]["streamed"] == "yes", record
        assert record["metrics"]["stdout"] == "LineRouter"  # routed during the trial
    # the Python workers that ran the loop are reused by Spark: their streams are back
    trial_pids = {int(t["metrics"]["pid"]) for t in result.trial_records}
    seen = spark.sparkContext.parallelize(range(4), 4).map(
        lambda _: (os.getpid(), type(sys.stdout).__name__, type(sys.stderr).__name__)
    ).collect()
    reused = [row for row in seen if row[0] in trial_pids]
    assert reused, f"no Python worker was reused ({seen} vs {trial_pids})"
    assert all(out != "LineRouter" and err != "LineRouter" for _, out, err in reused)


def test_executor_killed_mid_trial_reruns_its_task_and_retries_the_trial(spark, tmp_path):
    gate = str(tmp_path / "hold")
    open(gate, "w").close()

    def held(x, reporter):
        # trials keep going while the gate file exists, so the run outlives the restart
        deadline, step = time.time() + 120, 0
        while step < 5 or (os.path.exists(gate) and time.time() < deadline):
            reporter.broadcast(x, step)
            step += 1
            time.sleep(0.1)
        return x

    pids, joins, killed, started = {}, {}, {}, []

    def killer(event):
        if event["type"] == "worker_joined":
            pids[event["worker"]] = event["pid"]
            joins[event["worker"]] = joins.get(event["worker"], 0) + 1
            if killed and joins.get(killed["worker"]) == 2 and os.path.exists(gate):
                os.unlink(gate)  # the killed worker is back: let the trials end
        elif event["type"] == "trial_started":
            started.append(event)
        elif event["type"] == "metric" and len(started) >= 2 and not killed \
                and event["trial"] == started[1]["trial"]:
            # the second trial to start is running on the other executor: kill that JVM
            worker = started[1]["worker"]
            killed.update(worker=worker, trial=event["trial"], pid=pids[worker],
                          jvm=executor_jvm(pids[worker]))
            os.kill(killed["jvm"], signal.SIGKILL)

    result = experiment.lagom(held, config(num_trials=6, name="spark-kill"),
                              listeners=[killer])
    assert killed and not pid_alive(killed["jvm"])
    assert not os.path.exists(gate), "the killed worker never registered again"
    assert result.state == "finished" and result.num_finished == 6
    trial = next(t for t in result.trial_records if t["trial"] == killed["trial"])
    assert trial["retries"] == 1 and trial["state"] == Trial.FINISHED
    events = journal(result.run_dir)
    kinds = [e["type"] for e in events]
    assert kinds.count("trial_retried") == 1 and kinds.count("trial_started") == 7
    lost = [e for e in events if e["type"] == "worker_lost"]
    assert [e["worker"] for e in lost] == [killed["worker"]]
    back = [e for e in events if e["type"] == "worker_joined"
            and e["worker"] == killed["worker"]][-1]
    assert back["pid"] != killed["pid"] and executor_jvm(back["pid"]) != killed["jvm"]


def test_hung_worker_has_its_task_killed_and_rerun(spark):
    pids, frozen, started = {}, {}, []

    def freezer(event):
        if event["type"] == "worker_joined":
            pids[event["worker"]] = event["pid"]
        elif event["type"] == "trial_started":
            started.append(event)
        elif event["type"] == "metric" and len(started) >= 2 and not frozen \
                and event["trial"] == started[1]["trial"]:
            frozen.update(worker=started[1]["worker"], pid=pids[started[1]["worker"]])
            os.kill(frozen["pid"], signal.SIGSTOP)

    def steady(x, reporter):
        for step in range(20):
            reporter.broadcast(x, step)
            time.sleep(0.1)
        return x

    result = experiment.lagom(steady, config(num_trials=5, hb_timeout=2.0, name="spark-hung"),
                              listeners=[freezer])
    assert result.num_finished == 5
    events = journal(result.run_dir)
    lost = [e for e in events if e["type"] == "worker_lost"]
    assert lost and "heartbeat" in lost[0]["reason"]
    rejoined = [e for e in events if e["type"] == "worker_joined"
                and e["worker"] == frozen["worker"]]
    assert len(rejoined) == 2, "Spark did not run the killed task again"
    assert wait_until(lambda: not pid_alive(frozen["pid"]), HANG_GUARD), \
        "the frozen worker lives on"


def cancelled(backend):
    """Whether the run's Spark job ended by cancellation: Spark marks it failed and the
    workers' tasks never returned their summaries (tasks that end by themselves do).
    Spark's status tracker hears of a job's end a little after its caller does."""
    tracker = backend.sc.statusTracker()

    def ended_cancelled():
        jobs = tracker.getJobIdsForGroup(backend.job_group)
        return bool(jobs) and not active_jobs_of(backend.sc, backend.job_group) and \
            all(tracker.getJobInfo(job).status == "FAILED" for job in jobs)

    return backend.task_results == [] and wait_until(ended_cancelled, HANG_GUARD)


def test_stop_cancels_the_spark_job(spark):
    handles, started = {}, []

    def stopper(event):
        if event["type"] == "trial_started":
            started.append(event)
            if len(started) == 2:
                handles["driver"].request_stop("test stops the run")
        elif event["type"] == "worker_joined":
            handles.setdefault("pids", []).append(event["pid"])

    result = experiment.run(stubborn, config(num_trials=4, stop_grace=1.0, name="spark-stop"),
                            listeners=[stopper],
                            on_driver=lambda d, b: handles.update(driver=d, backend=b))
    assert result.state == "stopped"
    # the stubborn trials (60 s each, deaf to stop requests) were cut short, not waited for
    assert cancelled(handles["backend"])
    assert not any(t["state"] == Trial.FINISHED for t in result.trial_records)
    assert wait_until(lambda: not any(pid_alive(p) for p in handles["pids"]), HANG_GUARD)


def test_interrupt_cancels_the_spark_job(spark):
    handles, two_running = {}, threading.Event()

    started = []

    def watch(event):
        if event["type"] == "trial_started":
            started.append(event)
            if len(started) == 2:
                two_running.set()

    def wait(driver):
        assert two_running.wait(HANG_GUARD)
        handles["interrupted"] = time.monotonic()
        raise KeyboardInterrupt

    with pytest.raises(ExperimentInterrupted) as info:
        experiment.run(stubborn, config(num_trials=4, name="spark-interrupt"),
                       listeners=[watch], wait=wait,
                       on_driver=lambda d, b: handles.update(backend=b))
    backend = handles["backend"]
    # the job is over long before the 60 s trials could end: cancelled, or its tasks left
    # on the driver's shutdown (which of the two comes first depends on timing)
    assert wait_until(lambda: not active_jobs_of(backend.sc, backend.job_group), HANG_GUARD)
    assert time.monotonic() - handles["interrupted"] < 30
    assert not any(t["state"] == Trial.FINISHED for t in info.value.result.trial_records)


def test_spark_giving_up_on_the_job_fails_the_run_in_one_line(spark):
    with pytest.raises(ExperimentFailed) as info:
        experiment.lagom(crash, config(num_trials=4, max_retries=100, max_failures=100,
                                       name="spark-crash"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("the Spark job running the workers")
    assert "failed 8 times" in message and "crashed" in message


def test_forced_shipping_imports_maggy_magic_from_the_zip(spark):
    from maggy_magic.backends.spark.ship import package_zip

    handles = {}
    zip_path = package_zip()
    assert package_zip() == zip_path  # cached: built once per version and content
    result = experiment.run(where_from, config(num_trials=2, name="spark-ship",
                                               backend_options={"ship": "always"}),
                            on_driver=lambda d, b: handles.update(backend=b))
    assert handles["backend"].shipped == zip_path
    for record in result.trial_records:
        shipped = record["metrics"]["zip"]
        # the executor's own copy, fetched through Spark, not the driver's cache file
        assert os.path.basename(shipped) == os.path.basename(zip_path) and shipped != zip_path
        assert record["metrics"]["imported"] == os.path.join(shipped, "maggy_magic",
                                                             "__init__.py")


def test_probe_finds_modules_without_importing_them(spark, tmp_path, monkeypatch):
    from maggy_magic.backends.spark.ship import probe_modules

    # a module on the driver's path only (this module may have travelled with earlier
    # runs' functions by now)
    (tmp_path / "driver_only_module.py").write_text("__version__ = '1.2'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = probe_modules(spark.sparkContext, ["json", "no_such_module_for_maggy",
                                               "driver_only_module"])
    import json as json_module

    assert found == {"json": (True, json_module.__version__),  # read from the source
                     "no_such_module_for_maggy": (False, None),
                     "driver_only_module": (False, None)}


def test_barrier_workers_start_together_and_see_each_other(spark):
    # every trial meets the other worker's trial in allGather: 4 trials, 2 per worker
    result = experiment.lagom(together, config(num_trials=4, name="spark-barrier",
                                               backend_options={"barrier": True}))
    assert result.num_finished == 4
    metrics = [t["metrics"] for t in result.trial_records]
    assert sorted(m["rank"] for m in metrics) == [0, 0, 1, 1]
    assert {m["world"] for m in metrics} == {2}
    assert {m["gathered"] for m in metrics} == {"0,1"}
    peers = {m["peers"] for m in metrics}
    assert len(peers) == 1 and len(peers.pop().split(",")) == 2
    assert len({m["pid"] for m in metrics}) == 2
    joined = [e for e in journal(result.run_dir) if e["type"] == "worker_joined"]
    assert sorted(e["worker"] for e in joined) == ["0", "1"]


def test_barrier_mode_with_more_workers_than_slots_is_a_config_error(spark):
    with pytest.raises(ConfigError) as info:
        experiment.lagom(together, config(num_trials=3, workers=3, name="spark-too-many",
                                          backend_options={"barrier": True}))
    message = str(info.value)
    assert "\n" not in message and "2 task slot(s)" in message and "workers <= 2" in message


def test_bad_backend_options_are_one_line_config_errors(spark):
    with pytest.raises(ConfigError, match=r"unknown spark backend option 'mastr'; did you "
                                          r"mean 'master'\?"):
        experiment.lagom(crash, config(backend_options={"mastr": "local[2]"}))
    with pytest.raises(ConfigError, match="ship must be one of auto, always, never"):
        experiment.lagom(crash, config(backend_options={"ship": "sometimes"}))
    with pytest.raises(ConfigError, match="already running"):
        experiment.lagom(crash, config(backend_options={"master": "local[2]"}))


def test_without_pyspark_the_error_says_what_to_install():
    code = ("import sys; sys.modules['pyspark'] = None\n"
            "from maggy_magic.backends import get_backend\n"
            "from maggy_magic import ConfigError\n"
            "try:\n    get_backend('spark')\n"
            "except ConfigError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), check=True).stdout
    assert "install maggy-magic[spark]" in out and out.count("\n") == 1


# -- benchmark smoke runs (the figures are printed; the CI only checks they run) --------
def load_bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                  os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_spark_overhead_quick(spark, tmp_path, capsys):
    figures_path = tmp_path / "overhead.json"
    bench = load_bench("spark_overhead")
    assert bench.main(["--quick", "--json", str(figures_path)], spark=spark) == 0
    out = capsys.readouterr().out
    assert "hyperopt SparkTrials" in out and "floor: one round trip per trial" in out
    figures = json.loads(figures_path.read_text())
    assert figures["maggy"]["n"] == 300 and figures["sparktrials"]["n"] == 6
    # that it measures both sides and prints the ratio; whether the target is met is the
    # benchmark's question (--strict), not the suite's on a shared machine
    assert math.isfinite(figures["ratio_e2e"]) and figures["ratio_e2e"] > 0, figures
    assert f"{figures['ratio_e2e']:.0f}x  target >= " in out


def test_bench_async_vs_sync_quick(spark, tmp_path, capsys):
    figures_path = tmp_path / "async.json"
    bench = load_bench("async_vs_sync")
    assert bench.main(["--quick", "--json", str(figures_path)], spark=spark) == 0
    out = capsys.readouterr().out
    assert "async (maggy spark backend)" in out and "sync (one Spark stage per batch)" in out
    figures = json.loads(figures_path.read_text())
    assert figures["async"]["trials"] == figures["sync"]["trials"] == 14
    # both sides measured; how they compare is the benchmark's question (--strict)
    for side in ("async", "sync"):
        assert 0 < figures[side]["busy"] <= 1 and figures[side]["wall"] > 0, figures
    assert math.isfinite(figures["less_wall"])


def test_a_gpu_request_on_executors_without_gpus_is_one_line(spark):
    with pytest.raises(ConfigError, match=r"^gpus_per_trial=1 but this Spark session's "
                                          r"executors have no GPUs \(spark.executor.resource"
                                          r".gpu.amount is not set\); set it") as info:
        experiment.lagom(slow_curve, config(num_trials=1, gpus_per_trial=1))
    assert "\n" not in str(info.value)
    assert not os.path.exists("maggy_experiments")  # refused before the run existed
