"""How local workers start: forked from one template process per run that has imported
the training function's modules and loaded it once (never forked from this process), or
spawned one by one where a run needs fresh processes (dist ranks, GPU or CPU requests,
``start="spawn"``)."""

import os

import pytest

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.errors import ConfigError


@pytest.fixture
def counting_module(tmp_path, monkeypatch):
    """A module that notes each process that imports it (in ``imports.txt``) and prints
    half a line as it loads (the template's protocol must not suffer from it)."""
    (tmp_path / "heavy_module.py").write_text(
        "import os, sys\n"
        "sys.stdout.write('importing heavy_module, no newline ')\n"  # prints as it loads
        "sys.stdout.flush()\n"
        f"with open({str(tmp_path / 'imports.txt')!r}, 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "def work(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("heavy_module")
    yield module, tmp_path / "imports.txt"


def run(module, tmp_path, workers=4, trials=8, **backend_options):
    work = module.work

    def train(x, reporter):
        import os as system
        import time

        time.sleep(0.3)  # long enough for every worker to get trials
        return {"metric": work(x), "pid": system.getpid(), "parent": system.getppid()}

    return experiment.lagom(train, HyperparameterOptConfig(
        num_trials=trials, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
        workers=workers, root=str(tmp_path / "runs"), backend_options=backend_options))


def test_workers_fork_from_one_template_that_loaded_the_function_once(counting_module,
                                                                       tmp_path):
    module, imports = counting_module
    imports.write_text("")  # this process's own import is not the workers'
    result = run(module, tmp_path)
    assert result.state == "finished" and result.num_finished == 8
    metrics = [t["metrics"] for t in result.trial_records]
    parents = {m["parent"] for m in metrics}
    # every worker has the same parent, the template, which is not this process
    assert len(parents) == 1 and parents != {os.getpid()}
    assert len({m["pid"] for m in metrics}) == 4
    # the function's modules were imported once, by the template, for all 4 workers
    assert imports.read_text().split() == [str(int(parents.pop()))]


def test_spawned_workers_each_import_the_function_modules(counting_module, tmp_path):
    module, imports = counting_module
    imports.write_text("")
    result = run(module, tmp_path, start="spawn")
    assert result.state == "finished"
    pids = {t["metrics"]["pid"] for t in result.trial_records}
    assert sorted(imports.read_text().split()) == sorted(str(int(p)) for p in pids)
    assert {t["metrics"]["parent"] for t in result.trial_records} == {os.getpid()}


def test_a_run_with_cpus_per_trial_spawns_its_workers(counting_module, tmp_path):
    module, imports = counting_module
    work = module.work

    def train(x, reporter):
        import os as system

        return {"metric": work(x), "threads": system.environ.get("OMP_NUM_THREADS"),
                "parent": system.getppid()}

    result = experiment.lagom(train, HyperparameterOptConfig(
        num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
        workers=2, cpus_per_trial=1, root=str(tmp_path / "runs")))
    # the thread pools' size is in each worker's environment before anything loads
    assert {float(t["metrics"]["threads"]) for t in result.trial_records} == {1.0}
    assert {t["metrics"]["parent"] for t in result.trial_records} == {os.getpid()}


def test_a_killed_forked_worker_is_forked_again_and_its_trial_retried(tmp_path):
    def train(x, reporter):
        import os as system
        import signal

        marker = tmp_path / "killed-once"
        if x > 0.5 and not marker.exists():
            marker.write_text("")
            system.kill(system.getpid(), signal.SIGKILL)
        return {"metric": x, "pid": system.getpid(), "parent": system.getppid()}

    result = experiment.lagom(train, HyperparameterOptConfig(
        num_trials=6, searchspace=Searchspace(x=("DISCRETE", [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])),
        optimizer="gridsearch", es_policy="none", workers=2, hb_timeout=5,
        root=str(tmp_path / "runs")))
    assert result.state == "finished" and result.num_finished == 6
    assert len({t["metrics"]["parent"] for t in result.trial_records}) == 1
    assert (tmp_path / "killed-once").exists()


def test_an_unknown_start_method_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="local backend option start must be one of "
                                          "auto, fork, spawn, got 'forkserver'"):
        run(type("M", (), {"work": staticmethod(lambda x: x)}), tmp_path,
            start="forkserver")


def test_the_template_looks_again_soon_after_a_worker_closed_its_output():
    # a worker's output closes as it exits, a moment before it can be reaped: the
    # template looks again within milliseconds, not at its idle pace
    from maggy_magic.backends import template

    assert template.REAP_QUICK < template.REAP_EVERY
    assert template.next_look({}, 100.0) == template.REAP_EVERY
    assert template.next_look({"3": 99.9}, 100.0) == template.REAP_QUICK
    # output closed long ago and the process still there: back to the idle pace
    assert template.next_look({"3": 99.0}, 100.0) == template.REAP_EVERY


def test_how_to_call_the_function_is_worked_out_once_before_the_forks(monkeypatch):
    import subprocess
    import sys

    from maggy_magic import trainfn

    worked_out = []
    real = trainfn._plan
    monkeypatch.setattr(trainfn, "_plan", lambda fn: worked_out.append(fn) or real(fn))

    def train(x, reporter):
        return x

    assert trainfn.call_plan(train) == trainfn.call_plan(train) == (("x", "reporter"), False)
    assert worked_out == [train]
    # a callable without weak references is still planned, each time
    assert trainfn.call_plan(len) == trainfn.call_plan(len) == ((), False)
    # the template works it out (and keeps it) before its first fork
    code = ("from maggy_magic.backends.template import _settle\n"
            "from maggy_magic.trainfn import _PLANS\n"
            "def train(x, budget): return x\n"
            "_settle(train)\n"
            "print(_PLANS[train])\n")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert shown.strip() == "(('x', 'budget'), False)"


def test_workers_of_a_plain_run_do_without_ssl(tmp_path):
    """The worker's modules import ``ssl`` only for a TLS connection: the template every
    local worker is forked from loads less (each fork copies its mappings) and is ready
    sooner. A run with TLS on has the template load it, once for all its workers."""

    def train(x):
        import os
        import sys

        with open(f"/proc/{os.getppid()}/maps") as maps:  # the template's
            template_has_it = "/_ssl." in maps.read()
        return {"metric": x, "ssl": int("ssl" in sys.modules),
                "template": int(template_has_it), "parent": os.getppid()}

    def loaded(tls):
        result = experiment.lagom(train, HyperparameterOptConfig(
            num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
            workers=2, root=str(tmp_path / f"tls-{tls}"), tls=tls))
        assert result.num_finished == 2
        assert {t["metrics"]["parent"] for t in result.trial_records} != {os.getpid()}
        return {(t["metrics"]["ssl"], t["metrics"]["template"]) for t in result.trial_records}

    assert loaded(False) == {(0, 0)}
    assert loaded(True) == {(1, 1)}
