"""How the Spark backend fails, each on real Spark: every bad setup is a one-line error.

Two kinds of setup:

* one ``local-cluster[1,1,1024]`` session for the module, created by the backend, whose
  executor's Python sees a copy of maggy_magic with ANOTHER version (through
  ``spark.executorEnv.PYTHONPATH``), as a cluster with an older install would: shipping,
  a start that never gets a task slot, a probe job that fails;
* sessions that cannot be shared with anything (speculation on, an unbindable
  ``spark.driver.host``, no session at all) live in subprocesses that print what each
  case raised (``ISOLATED``); one test per case reads its outcome.

The subprocess imports maggy_magic from this checkout (``PYTHONPATH``), whatever the
environment's editable install points at.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import types
import uuid

import pytest

from maggy_magic import ExperimentFailed, HyperparameterOptConfig, Searchspace, experiment

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER = "local-cluster[1,1,1024]"
OTHER_VERSION = "0.0.9"
#: Hang guard, not a speed bound: a gate still closed after this long releases the held
#: task slot, so a broken start timeout ends in a failed assertion instead of a hang.
HANG_GUARD = 120.0


def other_version_copy(folder):
    """A copy of this package whose ``__version__`` is :data:`OTHER_VERSION`."""
    target = os.path.join(str(folder), "maggy_magic")
    shutil.copytree(os.path.join(ROOT, "maggy_magic"), target,
                    ignore=shutil.ignore_patterns("__pycache__", "static"))
    init = os.path.join(target, "__init__.py")
    with open(init) as handle:
        text = handle.read()
    text, count = re.subn(r'(?m)^__version__ = ".*"$', f'__version__ = "{OTHER_VERSION}"',
                          text)
    assert count == 1, "maggy_magic/__init__.py no longer says __version__ = '...'"
    with open(init, "w") as handle:
        handle.write(text)
    return str(folder)


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from maggy_magic.backends.spark import SparkBackend

    old = other_version_copy(tmp_path_factory.mktemp("old-install"))
    backend = SparkBackend(master=MASTER, conf={"spark.executorEnv.PYTHONPATH": old})
    yield backend.session
    backend.session.stop()


def config(**kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("num_trials", 1)
    kwargs.setdefault("backend", "spark")
    return HyperparameterOptConfig(**kwargs)


def eventually(predicate, timeout=HANG_GUARD):
    """Whether ``predicate()`` comes true (Spark's status tracker hears of job ends a little
    after the job's caller does); bounded only to catch a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- training functions (pickled by value: the executors cannot import this module) -----
def which_maggy(x):
    import maggy_magic

    return {"metric": x, "file": maggy_magic.__file__, "version": maggy_magic.__version__}


def quick(x):
    return x


def in_a_new_module(source="def train(x):\n    return x\n"):
    """A training function of a brand-new module: the backend has to probe for it."""
    name = f"maggy_fresh_{uuid.uuid4().hex[:10]}"
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 - our source
    sys.modules[name] = module
    return module.train


# -- tests on the module's session ------------------------------------------------------
def test_executors_with_another_version_get_the_package_shipped(spark):
    from maggy_magic import __version__
    from maggy_magic.backends.spark.ship import package_zip, probe_modules

    sc = spark.sparkContext
    # the cluster really has another maggy_magic: what the executor would import
    assert probe_modules(sc, ["maggy_magic"]) == {"maggy_magic": (True, OTHER_VERSION)}
    # without shipping, the workers refuse that copy, in one line that names both versions
    with pytest.raises(ExperimentFailed) as info:
        experiment.lagom(which_maggy, config(name="never", backend_options={"ship": "never"}))
    message = str(info.value)
    assert "\n" not in message and message.startswith("the Spark job running the workers")
    assert f"imports maggy_magic {OTHER_VERSION}" in message, message
    assert f"the driver runs {__version__}" in message, message
    # ship="auto" (the default) notices the other version and ships this one
    handles = {}
    result = experiment.run(which_maggy, config(name="auto", num_trials=2),
                            on_driver=lambda d, b: handles.update(backend=b))
    assert result.state == "finished" and result.num_finished == 2
    shipped = handles["backend"].shipped
    assert shipped == package_zip()
    for record in result.trial_records:
        assert record["metrics"]["version"] == __version__
        imported = record["metrics"]["file"]
        # imported from the executor's copy of the zip that was shipped
        assert os.path.basename(os.path.dirname(os.path.dirname(imported))) == \
            os.path.basename(shipped), imported


def test_workers_that_never_get_a_task_slot_fail_the_run_in_one_line(spark, tmp_path):
    sc = spark.sparkContext
    gate, holding = str(tmp_path / "gate"), str(tmp_path / "holding")
    open(gate, "w").close()

    def hold(_):
        open(holding, "w").close()
        deadline = time.time() + 2 * HANG_GUARD
        while os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.05)
        yield 0

    # a function whose module the executors were asked about already, and a new one
    known, fresh = in_a_new_module(), in_a_new_module()
    assert experiment.lagom(known, config(name="slot-free")).num_finished == 1
    # another job takes the cluster's only task slot and keeps it while the gate exists
    holder = threading.Thread(target=lambda: sc.parallelize([0], 1).mapPartitions(hold)
                              .collect(), daemon=True)
    holder.start()
    assert eventually(lambda: os.path.exists(holding))
    release = threading.Timer(HANG_GUARD, lambda: os.path.exists(gate) and os.unlink(gate))
    release.start()
    failures, handles = [], {}
    try:
        # the workers' job waits for the slot; for the new module, the probe job does
        for train in (known, fresh):
            with pytest.raises(ExperimentFailed) as info:
                experiment.run(train, config(name="no-slot",
                                             backend_options={"start_timeout": 2}),
                               on_driver=lambda d, b: handles.update(backend=b))
            failures.append(info.value)
            handles.setdefault("workers", handles["backend"])
        assert os.path.exists(gate), "the run ended only because the slot was released"
    finally:
        release.cancel()
        if os.path.exists(gate):
            os.unlink(gate)
        holder.join(HANG_GUARD)
    assert not holder.is_alive()
    workers, probe = (str(failure) for failure in failures)
    assert "\n" not in probe + workers
    assert probe.startswith("the Spark job probing the executors did not finish within 2 s "
                            "(the cluster has 1 task slot(s) now)"), probe
    assert workers.startswith("no Spark worker task started within 2 s (the cluster has 1 "
                              "task slot(s) now)"), workers
    assert "raise start_timeout" in probe and "raise start_timeout" in workers
    assert failures[0].result.num_finished == 0
    backend = handles["workers"]
    assert sc.statusTracker().getJobIdsForGroup(backend.job_group)  # it was submitted...
    # ...and cancelled, as is the probe job: nothing is left waiting for the slot
    assert eventually(lambda: not sc.statusTracker().getActiveJobsIds())
    assert sc.parallelize([1, 2], 1).sum() == 3


def test_a_failing_probe_job_fails_the_run_in_one_line(spark):
    sc = spark.sparkContext
    train = in_a_new_module()
    # the executors' Python cannot start: what PYSPARK_PYTHON=/no/such/python gives
    real_python, sc.pythonExec = sc.pythonExec, "/no/such/python"
    try:
        with pytest.raises(ExperimentFailed) as info:
            experiment.lagom(train, config(name="bad-probe"))
    finally:
        sc.pythonExec = real_python
    message = str(info.value)
    assert "\n" not in message and len(message) < 500
    assert message.startswith("the Spark job probing the executors failed: Task 0 in stage "),\
        message
    assert "failed 8 times" in message and "/no/such/python" in message, message
    # the session is fine again with its Python back
    assert experiment.lagom(train, config(name="good-probe")).num_finished == 1


# -- setups that need a process of their own ---------------------------------------------
ISOLATED = r'''
import json, os, sys
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
from IPython.core.interactiveshell import InteractiveShell
from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

def train(x):
    return x

def outcome(case, call):
    try:
        call()
        answer = {"raised": None}
    except BaseException as exc:
        answer = {"raised": type(exc).__name__, "message": str(exc),
                  "maggy": type(exc).__module__ == "maggy_magic.errors"}
    print("CASE " + json.dumps(dict(answer, case=case)), flush=True)

def lagom(**options):
    experiment.lagom(train, HyperparameterOptConfig(
        num_trials=1, workers=1, es_policy="none", backend="spark", backend_options=options,
        searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0]))))

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "maggy_magic")

def magic():
    cell = shell.run_cell("%%maggy hpo --backend spark --trials 1 --workers 1 --es-policy none\n"
                          "from maggy_magic import Searchspace\n"
                          "space = Searchspace(x=('DOUBLE', [0, 1]))\n"
                          "def train(x):\n    return x\n")
    if cell.error_in_exec is not None:
        raise cell.error_in_exec

CASES = {
    # nothing running and no master, through the magic as a notebook would
    "no-session": magic,
    # a session that may run a second copy of a task
    "speculation": lambda: lagom(master="local[1]", conf={"spark.speculation": "true"}),
    # spark.driver.host names an address that is not this machine's (TEST-NET-1); Spark
    # itself binds elsewhere (spark.driver.bindAddress) and runs: only maggy's driver fails
    "driver-host": lambda: lagom(master="local[1]", conf={
        "spark.driver.host": "192.0.2.1", "spark.driver.bindAddress": "127.0.0.1"}),
}
for case in sys.argv[1:]:
    outcome(case, CASES[case])
'''


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """``case -> {"raised", "message", "maggy"}`` from :data:`ISOLATED`: one process per
    Spark session, since a JVM keeps the settings of its first session for the next ones."""
    env = dict(os.environ, PYTHONPATH=ROOT, MAGGY_MAGIC_WIDGETS="0")
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    cases = {}
    for names in (["no-session", "speculation"], ["driver-host"]):
        done = subprocess.run([sys.executable, "-c", ISOLATED, *names], capture_output=True,
                              text=True, env=env, timeout=600,
                              cwd=str(tmp_path_factory.mktemp("isolated")))
        for line in done.stdout.splitlines():
            if line.startswith("CASE "):
                answer = json.loads(line[5:])
                cases[answer.pop("case")] = answer
        assert done.returncode == 0 and set(names) <= set(cases), (
            done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return cases


def one_line_maggy_error(answer, name):
    assert answer["raised"] == name, answer
    assert answer["maggy"] and "\n" not in answer["message"], answer
    return answer["message"]


def test_no_session_and_no_master_is_a_one_line_config_error(isolated):
    message = one_line_maggy_error(isolated["no-session"], "ConfigError")
    assert message.startswith("the spark backend found no active SparkSession"), message
    assert "--master local[2]" in message


def test_speculation_is_refused_in_one_line(isolated):
    message = one_line_maggy_error(isolated["speculation"], "ConfigError")
    assert "set spark.speculation=false" in message, message


def test_a_driver_host_that_is_not_this_machine_is_a_one_line_config_error(isolated):
    message = one_line_maggy_error(isolated["driver-host"], "ConfigError")
    assert "spark.driver.host" in message and "192.0.2.1" in message, message
