"""The engine end to end, with real worker processes on the local backend."""

import builtins
import glob
import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest
from conftest import hpo_config, journal, pid_alive

from maggy_magic import ExperimentFailed, Searchspace, experiment, rpc
from maggy_magic.trial import Trial


def config(**kwargs):
    kwargs.setdefault("workers", 2)
    return hpo_config(**kwargs)


# -- training functions (module level: workers import this module) ---------------------
def quadratic(x, y, reporter):
    original_print = builtins.print
    time.sleep(0.25)  # long enough for both workers to join before the trials run out
    for step in range(3):
        reporter.broadcast(-(x - 0.3) ** 2 + step * 0.001, step)
    print(f"trial with x={x:.3f}")
    os.write(1, b"native output line\n")
    reporter.log("a reporter line")
    assert builtins.print is original_print
    return {"score": -(x - 0.3) ** 2 + y, "pid": os.getpid()}


def slow_curve(x, reporter):
    """Higher x is better at every step; each step takes 0.1 s."""
    for step in range(20):
        reporter.broadcast(x * (step + 1), step)
        time.sleep(0.05)
    return x * 20


def budgeted(x, budget, reporter):
    for step in range(int(budget)):
        reporter.broadcast(x * (step + 1), step)
    return x * budget


def sleepy(x, reporter):
    for step in range(10):
        reporter.broadcast(x, step)
        time.sleep(0.1)
    return x


def fails_sometimes(x):
    if x < 0.5:
        raise ValueError(f"x={x:.3f} is too small for this model")
    return x


def floods_fd_1(x):
    """Writes 4,000 numbered lines (about 200 KiB, three times what a pipe holds) to fd
    1 while it runs; non-blocking, so nobody reading the pipe fails the trial within
    10 s instead of hanging it."""
    import fcntl

    flags = fcntl.fcntl(1, fcntl.F_GETFL)
    fcntl.fcntl(1, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    data = b"".join(b"native flood line %05d %s\n" % (i, b"x" * 24) for i in range(4000))
    deadline = time.monotonic() + 10
    try:
        while data:
            try:
                data = data[os.write(1, data):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nothing read the worker's native output for 10 s") from None
                time.sleep(0.01)
    finally:
        fcntl.fcntl(1, fcntl.F_SETFL, flags)
    return x


def test_native_output_beyond_what_a_pipe_holds_is_read_while_the_trial_runs(tmp_path):
    result = experiment.lagom(floods_fd_1, config(num_trials=1, workers=1,
                                                  root=str(tmp_path), name="flood"))
    assert result.state == "finished" and result.num_finished == 1, result.trials
    log = open(os.path.join(result.run_dir, "trials", result.best_id, "log.txt")).read()
    numbers = [int(line.split()[3]) for line in log.splitlines()
               if line.startswith("native flood line")]
    assert numbers == list(range(4000))


def test_hpo_run_records_everything():
    space = Searchspace(x=("DOUBLE", [0.0, 1.0]), y=("DISCRETE", [0, 1]))
    seen = {}
    result = experiment.run(quadratic, config(num_trials=8, searchspace=space,
                                              optimization_key="score", name="basic"),
                            on_driver=lambda driver, _: seen.update(secret=driver.secret))
    assert result.state == "finished" and result.num_finished == 8
    values = [t["value"] for t in result.trial_records]
    assert result.best_metric == max(values)
    best = result.best_params
    assert result.best_metric == pytest.approx(-(best["x"] - 0.3) ** 2 + best["y"])
    pids = {t["metrics"]["pid"] for t in result.trial_records}
    joined = {e["pid"] for e in journal(result.run_dir) if e["type"] == "worker_joined"}
    assert len(joined) == 2 and pids <= joined  # trials ran in the two worker processes
    assert os.getpid() not in pids
    frame = result.trials
    assert list(frame["trial"]) == sorted(frame["trial"]) and len(frame) == 8
    assert set(frame["state"]) == {"FINISHED"} and "x" in frame and "score" in frame
    assert result["best_val"] == result.best_metric and result["num_trials"] == 8

    run = result.run_dir
    assert run.startswith(os.path.join(os.getcwd(), "maggy_experiments", "basic"))
    for name in ("config.json", "train.py", "journal.jsonl", "result.json"):
        assert os.path.exists(os.path.join(run, name)), name
    assert "def quadratic" in open(os.path.join(run, "train.py")).read()
    trial_id = result.best_id
    log = open(os.path.join(run, "trials", trial_id, "log.txt")).read()
    assert f"trial with x={best['x']:.3f}" in log
    assert "native output line" in log and "a reporter line" in log
    events = journal(run)
    assert [e["seq"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("trial_started") == kinds.count("trial_finished") == 8
    metrics = [e for e in events if e["type"] == "metric" and e["trial"] == trial_id]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    for root, _, files in os.walk(run):  # the secret never reaches the run directory
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            assert seen["secret"].hex().encode() not in data and seen["secret"] not in data


def test_duplicate_params_get_distinct_trial_ids():
    space = Searchspace(x=("CATEGORICAL", ["only"]))
    result = experiment.lagom(lambda x: 1.0, config(num_trials=5, searchspace=space))
    ids = [t["trial"] for t in result.trial_records]
    assert len(set(ids)) == 5 and {t["params"]["x"] for t in result.trial_records} == {"only"}


def test_median_rule_stops_only_provably_worse_trials():
    # 12 trials, higher x always better at every step; after 4 finish, any running trial
    # whose x is below the median of its peers at the same step must be stopped.
    result = experiment.lagom(slow_curve, config(
        num_trials=12, es_policy="median", es_min=4, es_interval=0.2, hb_interval=0.1,
        name="median"))
    trials = {t["trial"]: t for t in result.trial_records}
    stopped = [t for t in trials.values() if t["state"] == Trial.EARLY_STOPPED]
    assert stopped, "the median rule stopped nothing"
    events = journal(result.run_dir)
    for trial in stopped:
        x = trial["params"]["x"]
        assert len(trial["steps"]) < 20
        # at the moment it was stopped, it lagged the median of peers at its step
        stop_event = next(e for e in events if e["type"] == "early_stopped"
                          and e["trial"] == trial["trial"])
        step = stop_event["step"]
        peers = [t["params"]["x"] * (step + 1) for t in trials.values()
                 if t["trial"] != trial["trial"] and len(t["steps"]) > step
                 and t["start"] < stop_event["t"]]
        peers.sort()
        median = (peers[(len(peers) - 1) // 2] + peers[len(peers) // 2]) / 2
        assert x * (step + 1) < median
    finished_x = sorted(t["params"]["x"] for t in trials.values()
                        if t["state"] == Trial.FINISHED)
    assert max(t["params"]["x"] for t in trials.values()) in finished_x


def test_asha_promotes_only_the_best_and_injects_the_budget():
    result = experiment.lagom(budgeted, config(
        num_trials=8, optimizer="asha", name="asha",
        optimizer_options={"reduction_factor": 2, "resource_min": 1, "resource_max": 4}))
    records = result.trial_records
    base = [t for t in records if t["info"]["rung"] == 0]
    assert len(base) == 8 and {t["budget"] for t in base} == {1}
    # when each trial started (ASHA creates a trial just before it starts: no trial can
    # end in between) and when each ended
    started, ended = {}, {}
    for e in journal(result.run_dir):
        if e["type"] == "trial_started":
            started.setdefault(e["trial"], e["seq"])
        elif e["type"] in ("trial_finished", "trial_failed"):
            ended[e["trial"]] = e["seq"]
    by_id = {t["trial"]: t for t in records}
    for t in records:
        assert len(t["steps"]) == int(t["budget"])  # the budget reached the function
        if t["info"]["rung"] > 0:
            parent = by_id[t["info"]["parent"]]
            assert t["params"] == parent["params"]
            # at promotion time the parent ranked in the top floor(k / eta) of the k
            # trials of its rung that had ended by then
            done = [p for p in records if p["info"]["rung"] == parent["info"]["rung"]
                    and ended.get(p["trial"], started[t["trial"]]) < started[t["trial"]]]
            ranked = sorted(done, key=lambda p: p["value"], reverse=True)
            top = [p["trial"] for p in ranked[:len(done) // 2]]
            assert parent["trial"] in top, (t["trial"], parent["trial"], top)
    promoted = [t for t in records if t["info"]["rung"] > 0]
    assert promoted and max(t["budget"] for t in records) == 4
    best_x = max(t["params"]["x"] for t in base)
    assert result.best_params["x"] == best_x and result.best_metric == best_x * 4


def test_asha_direction_min_promotes_the_lowest():
    result = experiment.lagom(budgeted, config(
        num_trials=8, optimizer="asha", direction="min", name="asha-min",
        optimizer_options={"reduction_factor": 2, "resource_min": 1, "resource_max": 2}))
    base = [t for t in result.trial_records if t["info"]["rung"] == 0]
    smallest = min(t["params"]["x"] for t in base)
    assert result.best_params["x"] == smallest
    promoted = [t["params"]["x"] for t in result.trial_records if t["info"]["rung"] == 1]
    assert smallest in promoted and max(t["params"]["x"] for t in base) not in promoted


def test_kill_9_of_a_worker_mid_trial_retries_that_trial():
    pids, killed = {}, {}

    def killer(event):
        if event["type"] == "worker_joined":
            pids[event["worker"]] = event["pid"]
        elif event["type"] == "metric" and event["trial"] == "0002" and not killed:
            worker = next(e for e in seen if e["type"] == "trial_started"
                          and e["trial"] == "0002")["worker"]
            killed["pid"] = pids[worker]
            os.kill(pids[worker], signal.SIGKILL)

    seen = []
    result = experiment.lagom(sleepy, config(num_trials=6, hb_interval=0.1, name="kill"),
                              listeners=[seen.append, killer])
    assert killed and not pid_alive(killed["pid"])
    assert result.num_finished == 6 and result.state == "finished"
    trial = next(t for t in result.trial_records if t["trial"] == "0002")
    assert trial["retries"] == 1 and trial["state"] == Trial.FINISHED
    kinds = [e["type"] for e in journal(result.run_dir)]
    assert "worker_lost" in kinds and kinds.count("trial_retried") == 1
    assert kinds.count("trial_started") == 7


def test_a_hung_worker_is_lost_after_the_heartbeat_timeout():
    pids, stopped = {}, {}

    def freezer(event):
        if event["type"] == "worker_joined":
            pids[event["worker"]] = event["pid"]
        elif event["type"] == "metric" and event["trial"] == "0001" and not stopped:
            stopped["pid"] = pids[[e for e in seen if e["type"] == "trial_started"
                                   and e["trial"] == "0001"][0]["worker"]]
            os.kill(stopped["pid"], signal.SIGSTOP)

    seen = []
    result = experiment.lagom(sleepy, config(num_trials=4, hb_interval=0.1, hb_timeout=1.5,
                                             name="hung"), listeners=[seen.append, freezer])
    assert result.num_finished == 4
    lost = [e for e in journal(result.run_dir) if e["type"] == "worker_lost"]
    assert lost and "heartbeat" in lost[0]["reason"]
    assert not pid_alive(stopped["pid"]), "the frozen worker outlived the run"


def test_errors_are_recorded_with_tracebacks_and_the_rest_finish():
    result = experiment.lagom(fails_sometimes, config(num_trials=10, max_failures=10,
                                                      name="errors"))
    failed = [t for t in result.trial_records if t["state"] == Trial.FAILED]
    ok = [t for t in result.trial_records if t["state"] == Trial.FINISHED]
    assert failed and ok and len(failed) + len(ok) == 10
    assert all(t["params"]["x"] < 0.5 for t in failed)
    assert all(t["params"]["x"] >= 0.5 for t in ok)
    for t in failed:
        assert "too small for this model" in t["error"]
        assert "ValueError" in t["traceback"] and "fails_sometimes" in t["traceback"]
        assert 'raise ValueError' in t["traceback"]


def test_too_many_failures_fail_the_experiment_with_the_first_error():
    with pytest.raises(ExperimentFailed) as info:
        experiment.lagom(fails_sometimes, config(num_trials=10, max_failures=0, seed=3,
                                                 name="fail"))
    message = str(info.value)
    assert "\n" not in message and "too small for this model" in message
    assert "max_failures=0" in message
    assert 1 <= info.value.result.num_failed <= 2  # the other worker's trial may fail too


def test_forged_garbage_and_oversize_frames_do_not_disturb_a_run():
    attacks = {}

    def attack(driver, backend):
        thread = threading.Thread(target=run_attacks, args=driver.address)
        thread.start()
        attacks["thread"] = thread

    def run_attacks(host, port):

        def send(data):
            with socket.create_connection((host, port)) as sock:
                sock.sendall(data)
                sock.settimeout(5)
                try:
                    return sock.recv(1)  # the driver closes: b"" (or a reset)
                except OSError:
                    return b""

        forged = rpc.encode(rpc.new_secret(), b"C", b"", {
            "type": "register", "worker": "evil", "nonce": "f" * 32, "n": 0})
        attacks["forged"] = send(forged)
        attacks["garbage"] = send(b"\x00\x00\x00\x10" + os.urandom(200))
        attacks["oversize"] = send(struct.pack(">I", 1 << 30) + b"\0" * 40)

    result = experiment.run(sleepy, config(num_trials=4, name="attack"), on_driver=attack)
    attacks.pop("thread").join()
    assert attacks == {"forged": b"", "garbage": b"", "oversize": b""}
    assert result.state == "finished" and result.num_finished == 4
    assert result.rejected_frames == 3
    rejected = [e for e in journal(result.run_dir) if e["type"] == "frame_rejected"]
    assert sorted(e["reason"].split(" ")[0] for e in rejected) == ["bad", "bad", "oversize"]
    assert not any(e["type"] == "worker_joined" and e["worker"] == "evil"
                   for e in journal(result.run_dir))


def test_kernel_output_streams_are_untouched():
    before = sys.stdout, sys.stderr, builtins.print
    experiment.lagom(quadratic, config(num_trials=2, optimization_key="score",
                                       searchspace=Searchspace(x=("DOUBLE", [0, 1]),
                                                               y=("DISCRETE", [0])),
                                       name="streams"))
    assert (sys.stdout, sys.stderr, builtins.print) == before


def test_graceful_stop_ends_running_trials_and_starts_no_more():
    handle = {}

    def stopper(event):
        if event["type"] == "trial_finished" and event["trial"] == "0001":
            handle["driver"].request_stop("enough")

    result = experiment.run(sleepy, config(num_trials=12, hb_interval=0.1, name="stop"),
                            listeners=[stopper],
                            on_driver=lambda driver, _: handle.update(driver=driver))
    assert result.state == "stopped"
    events = journal(result.run_dir)
    kinds = [e["type"] for e in events]
    stop_at = kinds.index("stop_requested")
    assert "trial_started" not in kinds[stop_at:], "a trial started after the stop"
    started = {e["trial"] for e in events if e["type"] == "trial_started"}
    ended = {e["trial"] for e in events if e["type"] in ("trial_finished", "trial_failed")}
    assert started == ended and len(started) < 12
    assert result.num_early_stopped >= 1  # the trial(s) running at the stop ended early
    assert len(result.trial_records) == len(started) or all(
        t["state"] == "PENDING" for t in result.trial_records if t["trial"] not in started)


def meets_the_other(x):
    """Marks that it started, then waits (a bounded while) for the other trial to start."""
    open(f"started-{x!r}", "w").close()
    deadline = time.monotonic() + 60  # a bound for a broken engine, not a timing claim
    while len(glob.glob("started-*")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def test_queued_trials_go_to_idle_workers():
    # random search queues a trial ahead on each worker; with as many trials as workers
    # the second worker must still get one instead of waiting behind the first (which
    # only ends once the second has started)
    result = experiment.lagom(meets_the_other, config(num_trials=2, name="tail"))
    assert result.num_finished == 2
    assert {t["worker"] for t in result.trial_records} == {"0", "1"}
    kinds = [e["type"] for e in journal(result.run_dir)
             if e["type"] in ("trial_started", "trial_finished")]
    assert kinds == ["trial_started"] * 2 + ["trial_finished"] * 2  # both ran at once
