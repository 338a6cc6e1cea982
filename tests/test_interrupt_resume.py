"""Ctrl-C, kernel death and resume, with the experiment in its own Python process.

The training function lives in ``__main__`` of that process, as in a notebook, so it
reaches the workers by value through cloudpickle.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import journal, pid_alive
from test_optimizers import Conductor, resume_checked, trial_table

from maggy_magic import ExperimentInterrupted, HyperparameterOptConfig, Searchspace, experiment

SCRIPT = textwrap.dedent("""
    import sys, time
    from maggy_magic import (experiment, ExperimentInterrupted, HyperparameterOptConfig,
                             Searchspace)

    def train(x, reporter):
        for step in range(10):
            reporter.broadcast(x, step)
            time.sleep(0.1)
        return x

    config = HyperparameterOptConfig(
        num_trials=8, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
        workers=2, name="intr", seed=5, resume=sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        result = experiment.lagom(train, config)
        print("RESULT", result.num_finished, result.run_dir, flush=True)
    except ExperimentInterrupted as exc:
        print("INTERRUPTED", exc.result.run_dir, flush=True)
        sys.exit(130)
""")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(*args):
    with open("exp.py", "w") as handle:
        handle.write(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "exp.py", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _run_dir():
    base = os.path.join("maggy_experiments", "intr")
    deadline = time.time() + 30
    while time.time() < deadline:
        runs = os.listdir(base) if os.path.isdir(base) else []
        if runs:
            return os.path.join(base, runs[0])
        time.sleep(0.05)
    raise AssertionError("no run directory appeared")


def _wait_for(run_dir, kind, count):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            events = journal(run_dir)
        except ValueError:  # a line being written
            events = []
        if sum(e["type"] == kind for e in events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} {kind} events")


def test_ctrl_c_stops_workers_and_resume_runs_only_the_missing_trials():
    proc = _start()
    run_dir = _run_dir()
    events = _wait_for(run_dir, "trial_finished", 2)
    pids = [e["pid"] for e in events if e["type"] == "worker_joined"]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert out.startswith("INTERRUPTED")
    while any(pid_alive(p) for p in pids) and time.time() - sent < 5:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids), "workers outlived the interrupt by 5 s"

    events = journal(run_dir)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "run_finished" and events[-1]["state"] == "interrupted"
    started = [e["trial"] for e in events if e["type"] == "trial_started"]
    finished = {e["trial"] for e in events if e["type"] == "trial_finished"}
    assert finished <= set(started) and 2 <= len(finished) < 8
    incomplete = set(started) - finished
    assert incomplete, "the interrupt left no trial running (too late to test resume)"

    proc = _start(os.path.basename(run_dir))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split()[:2] == ["RESULT", "8"]
    events = journal(run_dir)
    assert [e["seq"] for e in events] == list(range(len(events)))
    resumed = events[[e["type"] for e in events].index("run_started", 1):]
    rerun = [e["trial"] for e in resumed if e["type"] == "trial_started"]
    assert not set(rerun) & finished, "resume ran a trial that had already finished"
    assert incomplete <= set(rerun)
    assert len(rerun) == 8 - len(finished)
    all_finished = [e["trial"] for e in events if e["type"] == "trial_finished"]
    assert sorted(all_finished) == sorted(set(all_finished)) and len(all_finished) == 8


def test_workers_exit_when_the_kernel_dies():
    proc = _start()
    run_dir = _run_dir()
    events = _wait_for(run_dir, "trial_started", 2)
    pids = [e["pid"] for e in events if e["type"] == "worker_joined"]
    proc.kill()
    proc.wait()
    deadline = time.time() + 5
    while any(pid_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids), "orphaned workers kept running"


# -- ASHA and Hyperband: interrupted and resumed with real worker processes ------------------

GATES = "gates"


def gated_budget(x, budget, reporter):
    """Waits until the test creates gates/<trial id> (or the run ends), then trains for
    ``budget`` steps. The workers are processes: the gate is a file."""
    gate = os.path.join(GATES, reporter.trial_id)
    while not os.path.exists(gate) and not reporter.early_stop:
        time.sleep(0.01)
    for step in range(int(budget)):
        reporter.broadcast(x * (step + 1), step)
    return x * budget


def _release(trial_id):
    open(os.path.join(GATES, trial_id), "w").close()


def _local_run(optimizer, options, interrupt_after=None, resume=None):
    """One run on the local backend (2 worker processes); one trial ends at a time."""
    shutil.rmtree(GATES, ignore_errors=True)
    os.makedirs(GATES)
    conductor = Conductor(_release, 2, interrupt_after)
    config = HyperparameterOptConfig(
        num_trials=options.pop("num_trials"), optimizer=optimizer,
        optimizer_options=options, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])),
        es_policy="none", workers=2, seed=4, hb_interval=0.2, name=f"e2e-{optimizer}",
        resume=resume)
    try:
        result = experiment.run(gated_budget, config, listeners=[conductor.listen],
                                wait=conductor.wait)
    except ExperimentInterrupted as exc:
        assert conductor.interrupted
        return exc.result.run_dir
    assert result.state == "finished"
    return result.run_dir


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, options, interrupt_after", [
    # 8 configurations at budget 1, 4 at 2, 2 at 4
    ("asha", dict(num_trials=8, reduction_factor=2, resource_min=1, resource_max=4), 5),
    # brackets: s=2 runs 4 at budget 1, 2 at 2, 1 at 4; s=1 runs 3 at 2, 1 at 4
    ("hyperband", dict(num_trials=7, reduction_factor=2, resource_min=1, resource_max=4), 6),
])
def test_asha_and_hyperband_continue_their_rungs_after_an_interrupt(optimizer, options,
                                                                    interrupt_after):
    whole = trial_table(_local_run(optimizer, dict(options)))
    first = _local_run(optimizer, dict(options), interrupt_after=interrupt_after)
    before = trial_table(first)
    events = journal(first)
    ended = {e["trial"] for e in events if e["type"] == "trial_finished"}
    assert len(ended) == interrupt_after and set(before) - ended, "nothing was running"
    # finished trials keep their start times, interrupted ones start again, nothing else
    resumed = resume_checked(first, lambda: _local_run(optimizer, dict(options),
                                                       resume=os.path.basename(first)))
    # the optimizer continued: the same trials as the uninterrupted run (params, budgets,
    # rungs, brackets, parents), none of its rungs or brackets started over ...
    assert trial_table(resumed) == whole
    # ... and the resumed part promoted trials that had finished before the interrupt
    rerun_part = journal(resumed)[len(events):]
    parents = {e["info"]["parent"] for e in rerun_part if e["type"] == "trial_started"}
    assert parents & ended, "no promotion in the resumed part built on the first part"
    pids = {e["pid"] for e in rerun_part if e["type"] == "worker_joined"}
    assert len(pids) == 2 and os.getpid() not in pids  # real worker processes
