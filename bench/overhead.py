"""Per-trial overhead of maggy_magic's local backend, next to Optuna and the ideal.

Three figures, each printed with its target or theoretical minimum:

1. no-op throughput: ``N`` trials of ``f(x) = x`` on 2 worker processes, end-to-end
   (the whole ``experiment.lagom`` call, worker start-up included) and steady state
   (first ``trial_started`` to ``run_finished`` in the run's journal), against Optuna's
   ``study.optimize(n_jobs=2)`` with a RandomSampler and in-memory storage.
2. per-trial dispatch latency: gaps between one trial and the next on the same worker,
   from the driver's journal and, in a separate instrumented run whose objective
   reports its own entry/exit times, from the worker's side; for Optuna the same gap
   per thread, plus the ``wall * jobs / N - objective time`` estimate for both.
3. a 20 ms workload: 1000 trials of ``time.sleep(0.02)`` on 2 workers against the
   ideal ``1000 * 0.02 / 2 = 10 s``.
4. the cost of TLS on the wire: the no-op run of [1] with TLS forced on (``tls=True``,
   although the driver binds loopback) and off, interleaved, as a ratio, and each next
   to the Optuna figure of [1].

Usage::

    PYTHONPATH=. python bench/overhead.py            # full run (~1 min on 2 idle cores)
    PYTHONPATH=. python bench/overhead.py --quick    # CI smoke run (< 30 s)
    PYTHONPATH=. python bench/overhead.py --json figures.json
    PYTHONPATH=. python bench/overhead.py --wait-idle 60   # shared machine: wait for quiet

Run directories go to a temporary folder that is removed afterwards (``--keep-runs``
keeps it). The exit code is 0 unless ``--strict`` is given and a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional

WORKERS = 2
SLEEP = 0.02
#: Targets printed next to the figures.
TARGET_THROUGHPUT_RATIO = 1.0   # maggy no-op trials/s >= optuna's
TARGET_OVER_IDEAL_PCT = 3.0     # 20 ms workload at most 3 % over the ideal wall time
#: With --wait-idle: wait up to this long for a quiet machine before each measured run.
IDLE_WAIT = 0.0


# -- objectives (defined in __main__, so cloudpickle ships them by value) --------------
def noop(x):
    return x


def noop_timed(x):
    """The no-op, reporting when the worker entered and left it (unix time)."""
    t_in = time.time()
    return {"metric": x, "t_in": t_in, "t_out": time.time()}


def sleep20(x):
    time.sleep(SLEEP)
    return x


# -- what else ran: CPU accounting and load ---------------------------------------------
def cpu_times() -> tuple:
    """(CPU s of this process, CPU s of its reaped children, busy CPU s of the whole
    machine or None); user+system each. The last one tells how much others ran."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, machine_busy()


def machine_busy() -> Optional[float]:
    """Busy CPU seconds of all CPUs since boot, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle/iowait/steal
    busy = sum(fields[:3]) + sum(fields[5:7])
    return busy / os.sysconf("SC_CLK_TCK")


def foreign_cores(cpu0: tuple, cpu1: tuple, wall: float) -> Optional[float]:
    """Average number of CPUs other processes kept busy during a measurement."""
    if cpu0[2] is None or cpu1[2] is None or wall <= 0:
        return None
    ours = (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])
    return max(0.0, (cpu1[2] - cpu0[2] - ours) / wall)


def wait_idle(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < ``threshold`` CPUs over a
    1 s window; returns the seconds waited."""
    start = time.monotonic()
    while True:
        before = machine_busy()
        time.sleep(1.0)
        after = machine_busy()
        if before is None or after is None or after - before < threshold or \
                time.monotonic() - start >= max_wait:
            return time.monotonic() - start


def load_average() -> Optional[tuple]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


# -- small statistics helpers -----------------------------------------------------------
def pct(values: List[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: List[float]) -> Dict[str, float]:
    """median / p95 / mean / n of ``values`` (seconds)."""
    return {"median": pct(values, 50), "p95": pct(values, 95),
            "mean": statistics.fmean(values) if values else float("nan"), "n": len(values)}


def per_key_gaps(rows: List[tuple]) -> List[float]:
    """``rows`` = (key, start, end) per call; gap = next start - previous end per key."""
    by_key: Dict[Any, List[tuple]] = defaultdict(list)
    for key, start, end in rows:
        by_key[key].append((start, end))
    gaps = []
    for calls in by_key.values():
        calls.sort()
        gaps += [calls[i + 1][0] - calls[i][1] for i in range(len(calls) - 1)]
    return gaps


# -- maggy -----------------------------------------------------------------------------
def run_maggy(fn: Callable, n: int, name: str, root: str, tls: Any = "auto") -> Dict[str, Any]:
    """Run ``fn`` as an n-trial random search on WORKERS local workers; figures + journal."""
    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

    config = HyperparameterOptConfig(
        num_trials=n, optimizer="randomsearch", searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])),
        es_policy="none", workers=WORKERS, name=name, root=root, seed=0, tls=tls)
    if IDLE_WAIT:
        wait_idle(IDLE_WAIT)
    gc.collect()
    cpu0 = cpu_times()
    t0_unix, t0 = time.time(), time.perf_counter()
    res = experiment.lagom(fn, config)
    wall = time.perf_counter() - t0
    t1_unix = time.time()
    cpu1 = cpu_times()
    if res.state != "finished" or res.num_finished != n:
        raise RuntimeError(f"maggy run {name} did not finish cleanly: {res!r}")
    with open(os.path.join(res.run_dir, "journal.jsonl"), encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle if line.strip()]
    events.sort(key=lambda e: e["seq"])
    first_start = min(e["t"] for e in events if e["type"] == "trial_started")
    finished_t = next(e["t"] for e in events if e["type"] == "run_finished")
    steady = finished_t - first_start
    return {"n": n, "wall": wall, "steady": steady, "startup": first_start - t0_unix,
            "teardown": t1_unix - finished_t, "tput_e2e": n / wall, "tput_steady": n / steady,
            # CPU seconds per trial: this process (driver thread + lagom's own work) and the
            # worker processes (reaped children; the only children this script has)
            "cpu_driver": (cpu1[0] - cpu0[0]) / n, "cpu_workers": (cpu1[1] - cpu0[1]) / n,
            "foreign": foreign_cores(cpu0, cpu1, wall),
            "events": events, "run_dir": res.run_dir}


def maggy_latency(events: List[dict]) -> Dict[str, Any]:
    """Per-worker gaps from the journal (and from the worker's own clock when the
    objective reported ``t_in``/``t_out``), all in seconds."""
    worker_of: Dict[str, str] = {}
    started: Dict[str, float] = {}
    finished: Dict[str, float] = {}
    fn_times: Dict[str, tuple] = {}
    seq_by_worker: Dict[str, List[tuple]] = defaultdict(list)  # (kind, t, trial)
    for e in events:
        if e["type"] == "trial_started":
            worker_of[e["trial"]] = e["worker"]
            started[e["trial"]] = e["t"]
            seq_by_worker[e["worker"]].append(("start", e["t"], e["trial"]))
        elif e["type"] == "trial_finished":
            finished[e["trial"]] = e["t"]
            seq_by_worker[worker_of[e["trial"]]].append(("finish", e["t"], e["trial"]))
            m = e.get("metrics") or {}
            if "t_in" in m and "t_out" in m:
                fn_times[e["trial"]] = (m["t_in"], m["t_out"])
    # driver: trial_finished -> next trial_started on the same worker, and start -> start
    fin_to_start, cycle = [], []
    for seq in seq_by_worker.values():
        last_finish = last_start = None
        for kind, t, _ in seq:
            if kind == "finish":
                last_finish = t
            else:
                if last_finish is not None:
                    fin_to_start.append(t - last_finish)
                if last_start is not None:
                    cycle.append(t - last_start)
                last_finish, last_start = None, t
    out: Dict[str, Any] = {"driver_finish_to_start": summary(fin_to_start),
                           "driver_cycle": summary(cycle),
                           "driver_trial_duration": summary(
                               [finished[t] - started[t] for t in finished])}
    if fn_times:
        # worker: fn returned -> next fn entered, on the same worker, split at the driver
        rows = [(worker_of[t], ti, to) for t, (ti, to) in fn_times.items()]
        by_worker: Dict[str, List[tuple]] = defaultdict(list)
        for trial, (ti, to) in fn_times.items():
            by_worker[worker_of[trial]].append((ti, to, trial))
        up, mid, down = [], [], []
        for calls in by_worker.values():
            calls.sort()
            for (_, to, trial), (ti_next, _, nxt) in zip(calls, calls[1:]):
                up.append(finished[trial] - to)           # reply travels to the driver
                mid.append(started[nxt] - finished[trial])  # driver bookkeeping
                down.append(ti_next - started[nxt])       # next trial travels to the worker
        out.update(worker_gap=summary(per_key_gaps(rows)), worker_up=summary(up),
                   worker_mid=summary(mid), worker_down=summary(down),
                   fn_time=summary([to - ti for ti, to in fn_times.values()]))
    return out


# -- optuna ----------------------------------------------------------------------------
def run_optuna(fn: Callable[[float], Any], n: int, timed: bool = False) -> Dict[str, Any]:
    """``study.optimize(n_trials=n, n_jobs=WORKERS)``; with ``timed``, per-call times."""
    import optuna

    calls: List[tuple] = []

    def objective(trial):
        if timed:
            t_in = time.perf_counter()
            value = fn(trial.suggest_float("x", 0.0, 1.0))
            calls.append((threading.get_ident(), t_in, time.perf_counter()))
            return value
        return fn(trial.suggest_float("x", 0.0, 1.0))

    if IDLE_WAIT:
        wait_idle(IDLE_WAIT)
    gc.collect()
    cpu0 = cpu_times()
    t0 = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=n, n_jobs=WORKERS)
    wall = time.perf_counter() - t0
    cpu1 = cpu_times()
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if done != n:
        raise RuntimeError(f"optuna completed {done} of {n} trials")
    out: Dict[str, Any] = {"n": n, "wall": wall, "tput": n / wall,
                           "cpu": (cpu1[0] - cpu0[0]) / n,
                           "foreign": foreign_cores(cpu0, cpu1, wall)}
    if timed:
        out["thread_gap"] = summary(per_key_gaps(calls))
        out["fn_time"] = summary([b - a for _, a, b in calls])
    return out


# -- the benchmark ---------------------------------------------------------------------
def measure_sleep(samples: int = 50) -> float:
    """Mean real duration of ``time.sleep(SLEEP)`` on this machine (seconds)."""
    durations = []
    for _ in range(samples):
        t = time.perf_counter()
        time.sleep(SLEEP)
        durations.append(time.perf_counter() - t)
    return statistics.fmean(durations)


def versions() -> Dict[str, Any]:
    import optuna

    import maggy_magic

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"python": platform.python_version(), "optuna": optuna.__version__,
            "maggy_magic": maggy_magic.__version__, "cpu_count": os.cpu_count(),
            "cpu_affinity": affinity, "platform": platform.platform()}


def median_run(runs: List[Dict[str, Any]], key: str) -> Dict[str, Any]:
    """The run whose ``key`` is the median (lower median for an even count)."""
    ordered = sorted(runs, key=lambda r: r[key])
    return ordered[(len(ordered) - 1) // 2]


def _fmt_foreign(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: 300 no-op trials, 100 x 20 ms, one repeat")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--noop-trials", type=int, help="no-op trials (default 5000; quick 300)")
    parser.add_argument("--sleep-trials", type=int,
                        help="20 ms trials (default 1000; quick 100)")
    parser.add_argument("--repeat", type=int,
                        help="no-op throughput repeats, median reported (default 3; quick 1)")
    parser.add_argument("--root", help="where run directories go (default: a temp dir)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run directories")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each measured run, wait up to SECONDS until other "
                             "processes leave the CPUs idle (shared machines)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    global IDLE_WAIT
    IDLE_WAIT = max(0.0, args.wait_idle)

    n_noop = args.noop_trials or (300 if args.quick else 5000)
    n_sleep = args.sleep_trials or (100 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)
    root = args.root or tempfile.mkdtemp(prefix="maggy-bench-")
    os.makedirs(root, exist_ok=True)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    info = versions()
    cpus = info["cpu_affinity"] or info["cpu_count"] or 1
    figures: Dict[str, Any] = {"mode": "quick" if args.quick else "full", "versions": info,
                               "workers": WORKERS}
    p = print
    p(f"maggy_magic overhead benchmark ({figures['mode']} mode)")
    p(f"Python {info['python']} | optuna {info['optuna']} | maggy_magic {info['maggy_magic']}"
      f" | CPUs {info['cpu_count']} (usable {info['cpu_affinity']}) | {info['platform']}")
    p(f"maggy: local backend, {WORKERS} worker processes, randomsearch, es_policy=none;  "
      f"optuna: RandomSampler(seed=0), in-memory, n_jobs={WORKERS} (threads)")
    load = load_average()
    figures["load_before"] = load
    if load is not None:
        p(f"load average before start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          + ("  WARNING: other processes are using the CPUs; figures will be noisy"
             if load[0] > 0.5 else ""))
    p("'others' = average number of CPUs that OTHER processes kept busy during that run "
      "(from /proc/stat); figures are trustworthy when it is ~0")
    p()

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    try:
        # warm-up (imports, page cache, first spawn); not reported
        run_maggy(noop, 20, "bench-warmup", root)
        run_optuna(noop, 20)

        # -- 1. no-op throughput -------------------------------------------------------
        m_runs, o_runs = [], []
        for _ in range(repeat):  # interleaved, so a noisy moment hits both systems
            m_runs.append(run_maggy(noop, n_noop, "bench-noop", root))
            o_runs.append(run_optuna(noop, n_noop))
        m_e2e = median_run(m_runs, "tput_e2e")
        m_st = median_run(m_runs, "tput_steady")
        o = median_run(o_runs, "tput")
        r_e2e, r_st = m_e2e["tput_e2e"] / o["tput"], m_st["tput_steady"] / o["tput"]
        target = f">= {TARGET_THROUGHPUT_RATIO:.2f}x"

        p(f"[1] No-op trial throughput: N={n_noop}, {WORKERS} workers, median of {repeat} "
          "run(s)")
        p(f"  {'figure':<47}{'wall s':>8}{'trials/s':>10}{'maggy/optuna':>14}{'others':>8}"
          "  target")
        p(f"  {'maggy end-to-end (whole lagom call)':<47}{m_e2e['wall']:>8.3f}"
          f"{m_e2e['tput_e2e']:>10.0f}{r_e2e:>13.2f}x{_fmt_foreign(m_e2e['foreign']):>8}"
          f"  {target} {verdict(r_e2e >= TARGET_THROUGHPUT_RATIO)}")
        p(f"  {'maggy steady (1st trial_started→run_finished)':<47}{m_st['steady']:>8.3f}"
          f"{m_st['tput_steady']:>10.0f}{r_st:>13.2f}x{_fmt_foreign(m_st['foreign']):>8}"
          f"  {target} {verdict(r_st >= TARGET_THROUGHPUT_RATIO)}")
        p(f"  {'optuna (create_study + optimize)':<47}{o['wall']:>8.3f}{o['tput']:>10.0f}"
          f"{'1.00x':>14}{_fmt_foreign(o['foreign']):>8}  reference")
        p(f"  maggy fixed costs: start-up (lagom call → 1st trial_started) "
          f"{m_e2e['startup']:.3f} s, tear-down (run_finished → lagom returns) "
          f"{m_e2e['teardown']:.3f} s")
        m_cpu = m_st["cpu_driver"] + m_st["cpu_workers"]
        p(f"  CPU per trial (user+sys, start-up included): maggy driver process "
          f"{m_st['cpu_driver'] * 1e6:.0f} µs + workers {m_st['cpu_workers'] * 1e6:.0f} µs = "
          f"{m_cpu * 1e6:.0f} µs (÷{cpus} CPUs = {m_cpu / cpus * 1e6:.0f} µs/trial floor); "
          f"optuna {o['cpu'] * 1e6:.0f} µs (one GIL)")
        if repeat > 1:
            best_e2e = max(r["tput_e2e"] for r in m_runs)
            best_st = max(r["tput_steady"] for r in m_runs)
            best_o = max(r["tput"] for r in o_runs)
            p("  every run, trials/s (others): maggy e2e/steady "
              + ", ".join(f"{r['tput_e2e']:.0f}/{r['tput_steady']:.0f} "
                          f"({_fmt_foreign(r['foreign'])})" for r in m_runs)
              + " | optuna " + ", ".join(f"{r['tput']:.0f} ({_fmt_foreign(r['foreign'])})"
                                         for r in o_runs))
            p(f"  best of {repeat}: maggy e2e {best_e2e:.0f}, steady {best_st:.0f}, optuna "
              f"{best_o:.0f} trials/s → maggy/optuna e2e {best_e2e / best_o:.2f}x, steady "
              f"{best_st / best_o:.2f}x")
        p()
        strip = ("events", "run_dir")
        figures["noop"] = {
            "n": n_noop, "repeat": repeat,
            "maggy_runs": [{k: v for k, v in r.items() if k not in strip} for r in m_runs],
            "optuna_runs": o_runs,
            "maggy_tput_e2e": m_e2e["tput_e2e"], "maggy_tput_steady": m_st["tput_steady"],
            "optuna_tput": o["tput"], "ratio_e2e": r_e2e, "ratio_steady": r_st,
            "target_ratio": TARGET_THROUGHPUT_RATIO,
            "pass_e2e": r_e2e >= TARGET_THROUGHPUT_RATIO,
            "pass_steady": r_st >= TARGET_THROUGHPUT_RATIO}

        # -- 2. dispatch latency -------------------------------------------------------
        lat_plain = maggy_latency(m_st["events"])
        timed = run_maggy(noop_timed, n_noop, "bench-noop-timed", root)
        lat = maggy_latency(timed["events"])
        ot = run_optuna(noop, n_noop, timed=True)
        m_formula = m_st["steady"] * WORKERS / n_noop - lat["fn_time"]["mean"]
        o_formula = ot["wall"] * WORKERS / n_noop - ot["fn_time"]["mean"]

        def row(label: str, s: Dict[str, float]) -> None:
            p(f"  {label:<72}{s['median'] * 1e6:>9.1f}{s['p95'] * 1e6:>9.1f}"
              f"{s['mean'] * 1e6:>9.1f}")

        p(f"[2] Per-trial dispatch latency, no-op, N={n_noop}, in µs; gaps are between "
          "consecutive trials on the SAME worker (maggy) / thread (optuna)")
        p(f"  {'figure':<72}{'median':>9}{'p95':>9}{'mean':>9}")
        p(f"  -- run of [1] (driver clock, journal 't'; others {_fmt_foreign(m_st['foreign'])})")
        row("maggy driver: trial_finished → next trial_started (driver bookkeeping)",
            lat_plain["driver_finish_to_start"])
        row("maggy driver: trial_started → next trial_started (cycle per worker)",
            lat_plain["driver_cycle"])
        row("maggy driver: trial_started → trial_finished (RPC + fn, driver clock)",
            lat_plain["driver_trial_duration"])
        p(f"  -- instrumented run: the objective returns its entry/exit time as metrics "
          f"(others {_fmt_foreign(timed['foreign'])})")
        row("maggy worker: fn returned → next fn entered (whole per-trial overhead)",
            lat["worker_gap"])
        row("   a) fn returned → driver trial_finished (reply, send, wake, verify)",
            lat["worker_up"])
        row("   b) trial_finished → trial_started (driver bookkeeping)", lat["worker_mid"])
        row("   c) trial_started → next fn entered (send, wake, recv, handoff)",
            lat["worker_down"])
        row("maggy fn time (inside the objective)", lat["fn_time"])
        p(f"  -- optuna, instrumented objective (others {_fmt_foreign(ot['foreign'])})")
        row("optuna thread: objective returned → next objective entered (tell+ask)",
            ot["thread_gap"])
        row("optuna fn time (inside the objective, incl. suggest_float)", ot["fn_time"])
        p(f"  estimate wall×{WORKERS}/N − mean fn time = overhead per trial per worker: "
          f"maggy (steady, run of [1]) {m_formula * 1e6:.1f} µs, optuna {o_formula * 1e6:.1f} µs")
        p("  (optuna's 2 jobs are threads sharing one GIL; maggy's workers are processes and "
          "its driver is a thread of this process)")
        p()
        figures["latency_s"] = {"maggy_plain": lat_plain, "maggy_instrumented": lat,
                                "maggy_instrumented_wall": timed["wall"],
                                "maggy_instrumented_foreign": timed["foreign"],
                                "optuna": dict(ot), "maggy_estimate": m_formula,
                                "optuna_estimate": o_formula}

        # -- 3. 20 ms workload ---------------------------------------------------------
        ideal = n_sleep * SLEEP / WORKERS
        real_sleep = measure_sleep()
        ideal_real = n_sleep * real_sleep / WORKERS
        ms = run_maggy(sleep20, n_sleep, "bench-sleep20", root)
        os_ = run_optuna(sleep20, n_sleep)
        lat20 = maggy_latency(ms["events"])
        m20 = ms["steady"] * WORKERS / n_sleep - real_sleep
        o20 = os_["wall"] * WORKERS / n_sleep - real_sleep

        def over(wall: float) -> float:
            return (wall / ideal - 1.0) * 100.0

        target = f"<= +{TARGET_OVER_IDEAL_PCT:.0f}%"
        p(f"[3] {SLEEP * 1000:.0f} ms workload: {n_sleep} × time.sleep({SLEEP}) on {WORKERS} "
          f"workers; theoretical minimum {n_sleep}×{SLEEP}/{WORKERS} = {ideal:.3f} s")
        p(f"  time.sleep({SLEEP}) really takes {real_sleep * 1e3:.3f} ms here: floor with real "
          f"sleeps {ideal_real:.3f} s (+{(ideal_real / ideal - 1) * 100:.2f}%)")
        p(f"  {'figure':<47}{'wall s':>8}{'over ideal':>12}{'others':>8}  target")
        for label, wall in (("maggy end-to-end (whole lagom call)", ms["wall"]),
                            ("maggy steady (1st trial_started→run_finished)", ms["steady"])):
            p(f"  {label:<47}{wall:>8.3f}{over(wall):>+11.2f}%{_fmt_foreign(ms['foreign']):>8}"
              f"  {target} {verdict(over(wall) <= TARGET_OVER_IDEAL_PCT)}")
        p(f"  {'optuna (create_study + optimize)':<47}{os_['wall']:>8.3f}"
          f"{over(os_['wall']):>+11.2f}%{_fmt_foreign(os_['foreign']):>8}  reference")
        p(f"  overhead per trial beyond the real sleep (wall×{WORKERS}/N − "
          f"{real_sleep * 1e3:.3f} ms): maggy steady {m20 * 1e6:.0f} µs, optuna "
          f"{o20 * 1e6:.0f} µs; maggy driver cycle per worker median "
          f"{lat20['driver_cycle']['median'] * 1e3:.3f} ms, p95 "
          f"{lat20['driver_cycle']['p95'] * 1e3:.3f} ms")
        budget = ideal * (1 + TARGET_OVER_IDEAL_PCT / 100) * WORKERS / n_sleep - real_sleep
        p(f"  budget for +{TARGET_OVER_IDEAL_PCT:.0f}%: "
          + (f"{budget * 1e6:.0f} µs of overhead per trial" if budget > 0 else
             "none (the sleep overshoot alone exceeds it on this machine now)"))
        p()
        figures["sleep20"] = {
            "n": n_sleep, "ideal": ideal, "measured_sleep": real_sleep,
            "ideal_with_measured_sleep": ideal_real,
            "maggy_wall": ms["wall"], "maggy_steady": ms["steady"],
            "maggy_startup": ms["startup"], "maggy_teardown": ms["teardown"],
            "maggy_foreign": ms["foreign"], "optuna_foreign": os_["foreign"],
            "optuna_wall": os_["wall"], "maggy_overhead_per_trial": m20,
            "optuna_overhead_per_trial": o20, "maggy_driver_cycle": lat20["driver_cycle"],
            "maggy_over_pct_e2e": over(ms["wall"]),
            "maggy_over_pct_steady": over(ms["steady"]), "optuna_over_pct": over(os_["wall"]),
            "target_over_pct": TARGET_OVER_IDEAL_PCT,
            "pass_e2e": over(ms["wall"]) <= TARGET_OVER_IDEAL_PCT,
            "pass_steady": over(ms["steady"]) <= TARGET_OVER_IDEAL_PCT}

        # -- 4. TLS on the wire ----------------------------------------------------------
        t_runs: Dict[bool, List[Dict[str, Any]]] = {False: [], True: []}
        for _ in range(repeat):  # interleaved, so a noisy moment hits both
            for tls in (False, True):
                t_runs[tls].append(run_maggy(noop, n_noop, f"bench-tls-{tls}", root, tls=tls))
        t_st = {tls: median_run(runs, "tput_steady") for tls, runs in t_runs.items()}
        t_e2e = {tls: median_run(runs, "tput_e2e") for tls, runs in t_runs.items()}
        cyc = {tls: maggy_latency(t_st[tls]["events"])["driver_cycle"] for tls in t_st}
        r_tls_st = t_st[True]["tput_steady"] / t_st[False]["tput_steady"]
        r_tls_e2e = t_e2e[True]["tput_e2e"] / t_e2e[False]["tput_e2e"]
        p(f"[4] TLS on the wire: no-op, N={n_noop}, {WORKERS} workers, median of {repeat}; "
          "TLS forced on over loopback (tls=True) against off, interleaved")
        p(f"  {'figure':<47}{'trials/s':>10}{'cycle µs':>10}{'vs optuna':>11}{'others':>8}")
        for tls, label in ((False, "maggy TLS off, steady"), (True, "maggy TLS on, steady")):
            r = t_st[tls]
            p(f"  {label:<47}{r['tput_steady']:>10.0f}{cyc[tls]['median'] * 1e6:>10.1f}"
              f"{r['tput_steady'] / o['tput']:>10.2f}x{_fmt_foreign(r['foreign']):>8}")
        for tls, label in ((False, "maggy TLS off, end-to-end"),
                           (True, "maggy TLS on, end-to-end")):
            r = t_e2e[tls]
            p(f"  {label:<47}{r['tput_e2e']:>10.0f}{'':>10}{r['tput_e2e'] / o['tput']:>10.2f}x"
              f"{_fmt_foreign(r['foreign']):>8}")
        p(f"  TLS on / off: steady {r_tls_st:.3f}x, end-to-end {r_tls_e2e:.3f}x; start-up "
          f"(lagom call → 1st trial_started) {t_e2e[False]['startup']:.3f} s off, "
          f"{t_e2e[True]['startup']:.3f} s on (certificate + handshakes)")
        p()
        strip = ("events", "run_dir")
        figures["tls"] = {
            "runs_off": [{k: v for k, v in r.items() if k not in strip} for r in t_runs[False]],
            "runs_on": [{k: v for k, v in r.items() if k not in strip} for r in t_runs[True]],
            "ratio_steady": r_tls_st, "ratio_e2e": r_tls_e2e,
            "cycle_off": cyc[False], "cycle_on": cyc[True], "optuna_tput": o["tput"]}
    finally:
        if args.keep_runs or args.root:
            p(f"run directories kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    load = load_average()
    figures["load_after"] = load
    if load is not None:
        p(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          "(includes this benchmark)")
    checks = {"no-op throughput e2e": figures["noop"]["pass_e2e"],
              "no-op throughput steady": figures["noop"]["pass_steady"],
              "20 ms workload e2e": figures["sleep20"]["pass_e2e"],
              "20 ms workload steady": figures["sleep20"]["pass_steady"]}
    figures["targets"] = checks
    p("targets: " + ", ".join(f"{k} {verdict(v)}" for k, v in checks.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
        p(f"figures written to {args.json}")
    return 1 if args.strict and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
