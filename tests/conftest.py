"""Shared fixtures: every test runs in its own directory, experiments write there."""

import json
import os
import sys
import tempfile

import pytest
from livy_server import livy_server  # noqa: F401  (fixture: a Livy REST test server per module)


def pytest_configure(config):
    # sparkmagic reads (and creates) its config under ~/.sparkmagic unless told otherwise:
    # keep the tests away from the user's own, before any test module imports sparkmagic
    os.environ.setdefault("SPARKMAGIC_CONF_DIR", tempfile.mkdtemp(prefix="sparkmagic-conf-"))


# -- CI: nothing is skipped, no test waits longer than the global timeout ---------------
def skips_fail() -> bool:
    """In CI (``$CI`` set to anything but empty, 0 or false) a skip is a failure: a test
    that CI does not run guards nothing."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _as_failure(report, where: str) -> None:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 \
        else str(longrepr)
    report.outcome = "failed"
    report.longrepr = (f"{where} was skipped in CI (CI={os.environ.get('CI')!r}), and a "
                       f"skip in CI is a failure: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test (``pytest.skip``, a ``skip``/``skipif`` mark) fails in CI; an
    expected failure (xfail) stays what it is."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and skips_fail():
        _as_failure(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped at import (``pytest.importorskip``, ``allow_module_level``)
    fails to collect in CI."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and skips_fail():
        _as_failure(report, collector.nodeid or str(collector.path))


def pytest_collection_modifyitems(config, items):
    """A test's own ``timeout`` mark may only lower the global ``timeout``: the global
    one is the most any test may take."""
    limit = float(config.getini("timeout") or 0)
    if not limit:
        return
    for item in items:
        mark = item.get_closest_marker("timeout")
        seconds = (mark.args[0] if mark.args else mark.kwargs.get("timeout")) if mark else None
        if seconds is not None and (not seconds or float(seconds) > limit):
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.timeout({seconds}) is above the global "
                f"timeout = {limit:g} of pyproject.toml; lower it below {limit:g}")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """An in-process IPython shell with maggy_magic loaded (one per test module)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    ipython_dir = str(tmp_path_factory.mktemp("ipython"))
    main = sys.modules["__main__"]         # the shell puts its namespace there
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(config=config, ipython_dir=ipython_dir)
    sh.run_line_magic("load_ext", "maggy_magic")
    yield sh
    sh.run_line_magic("unload_ext", "maggy_magic")
    InteractiveShell.clear_instance()
    sys.modules["__main__"] = main


def no_spark_session():
    """Stop this process's SparkSession / SparkContext (another module's) and leave Connect
    mode: pyspark holds one SparkContext per process and no Connect session next to a
    classic one. Returns whether Connect mode was on before (to restore it)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkSession._instantiatedSession is not None:
        SparkSession._instantiatedSession.stop()
    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    return os.environ.get("SPARK_CONNECT_MODE_ENABLED") is not None


def journal(run_dir):
    """The events of a run directory's journal."""
    with open(os.path.join(run_dir, "journal.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def parent_pid(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def executor_jvm(pid):
    """The executor JVM (CoarseGrainedExecutorBackend) a Python worker descends from."""
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if b"CoarseGrainedExecutorBackend" in handle.read():
                return pid
        pid = parent_pid(pid)
    raise AssertionError("not a process of a Spark executor")


def hpo_config(**kwargs):
    """A small search for engine tests: one DOUBLE ``x`` in [0, 1], no early stopping,
    one worker, seed 1; every keyword overrides."""
    from maggy_magic import HyperparameterOptConfig, Searchspace

    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("seed", 1)
    return HyperparameterOptConfig(**kwargs)


@pytest.fixture(scope="session")
def netcluster():
    """A Spark standalone cluster of two namespaced hosts (``tests/netcluster.py``), shared
    by the session; a test that kills hosts calls ``ensure_hosts(2)`` before it ends."""
    from netcluster import NamespacedCluster

    with NamespacedCluster(hosts=2) as cluster:
        yield cluster
