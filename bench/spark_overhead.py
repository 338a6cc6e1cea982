"""No-op trial throughput through Spark executors: maggy_magic's spark backend next to
Hyperopt's ``SparkTrials``, on the same cluster, in the same run, with two floors.

Figures (``W`` = the cluster's task slots, 2 on ``local-cluster[2,1,1024]``):

1. maggy: ``N`` trials of ``f(x) = x`` on ``W`` workers, each a long-running Spark task
   that connects back to the driver; end-to-end (the whole ``experiment.lagom`` call:
   probe job, task launch, Python workers) and steady state (first ``trial_started`` to
   ``run_finished`` in the run's journal).
2. Hyperopt ``SparkTrials(parallelism=W)``: ``fmin`` over the same no-op, one Spark job per
   trial, its dispatcher polling every second.
3. Floors (theoretical minimum for each design, measured on this cluster):
   one driver<->task round trip per trial (a raw TCP ping-pong from inside a Spark task:
   ``W / RTT`` trials/s) for a design with long-running tasks, and one no-op Spark job per
   trial (``W / job latency``) for a design that submits a job per trial.

Usage::

    PYTHONPATH=. python bench/spark_overhead.py            # full run (~2 min on 2 cores)
    PYTHONPATH=. python bench/spark_overhead.py --quick    # CI smoke run (< 60 s)
    PYTHONPATH=. python bench/spark_overhead.py --master local-cluster[2,1,1024] --json f.json

Target: maggy's throughput >= 50x SparkTrials'. Exit code 0 unless ``--strict`` and a miss.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusters  # noqa: E402  (this folder's helper: --master or --netcluster)

TARGET_RATIO = 50.0


def noop(x):
    return x


def noop_loss(params):
    return params["x"]


# -- sessions ---------------------------------------------------------------------------
def slots(sc) -> int:
    from maggy_magic.backends.spark.context import task_slots

    return task_slots(sc)


# -- maggy -------------------------------------------------------------------------------
def run_maggy(n: int, workers: int, root: str, spark: Any) -> Dict[str, Any]:
    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

    config = HyperparameterOptConfig(
        num_trials=n, optimizer="randomsearch", searchspace=Searchspace(x=("DOUBLE", [0, 1])),
        es_policy="none", workers=workers, backend="spark", name="spark-noop", root=root,
        seed=0, backend_options={"spark": spark})
    t0_unix, t0 = time.time(), time.perf_counter()
    result = experiment.lagom(noop, config)
    wall = time.perf_counter() - t0
    if result.state != "finished" or result.num_finished != n:
        raise RuntimeError(f"maggy run did not finish cleanly: {result!r}")
    with open(os.path.join(result.run_dir, "journal.jsonl"), encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle if line.strip()]
    first = min(e["t"] for e in events if e["type"] == "trial_started")
    last = next(e["t"] for e in events if e["type"] == "run_finished")
    return {"n": n, "wall": wall, "steady": last - first, "startup": first - t0_unix,
            "tput_e2e": n / wall, "tput_steady": n / (last - first)}


# -- hyperopt ----------------------------------------------------------------------------
def run_sparktrials(spark, n: int, workers: int) -> Dict[str, Any]:
    import numpy as np
    from hyperopt import SparkTrials, fmin, hp, rand

    for name in ("hyperopt", "hyperopt-spark", "py4j"):
        logging.getLogger(name).setLevel(logging.ERROR)
    trials = SparkTrials(parallelism=workers, spark_session=spark)
    t0 = time.perf_counter()
    fmin(noop_loss, {"x": hp.uniform("x", 0, 1)}, algo=rand.suggest, max_evals=n,
         trials=trials, show_progressbar=False, rstate=np.random.default_rng(0))
    wall = time.perf_counter() - t0
    done = sum(t["result"].get("status") == "ok" for t in trials.trials)
    if done != n:
        raise RuntimeError(f"SparkTrials completed {done} of {n} trials")
    return {"n": n, "wall": wall, "tput": n / wall}


# -- Spark Connect -----------------------------------------------------------------------
def run_connect(spark, n: int, workers: int, root: str) -> Dict[str, Any]:
    """maggy through a Spark Connect server started on the classic session's master (its
    own application: same executors shape, same machine), and what SparkTrials does
    there. The classic session stops first: pyspark holds no Connect session next to a
    classic one in a process (and on a standalone master its executors hold every core)."""
    server = clusters.connect_server(spark.sparkContext)
    spark.stop()
    with server:
        session = server.session()
        try:
            run_maggy(20, workers, root, session)  # warm-up: shipping, Python workers
            figures = run_maggy(n, workers, root, session)
            try:
                run_sparktrials(session, 2, workers)
                figures["sparktrials"] = "ran"
            except Exception as exc:  # noqa: BLE001 - recorded: what SparkTrials does there
                figures["sparktrials"] = f"fails: {type(exc).__name__}: " + \
                    str(exc).strip().splitlines()[0][:120]
        finally:
            session.stop()
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)  # pyspark's, left set
    figures["master"] = server.master
    return figures


# -- floors ------------------------------------------------------------------------------
def job_latency(sc, repeat: int) -> float:
    """Median wall time of a one-task no-op Spark job (submitted from the driver)."""
    sc.parallelize([0], 1).map(noop).collect()  # warm the Python workers
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        sc.parallelize([0], 1).map(noop).collect()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def round_trip(sc, host: str, repeat: int) -> float:
    """Median driver<->task round trip of a 100-byte message over TCP, timed in the task."""
    server = socket.create_server((host, 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(100)
                if not data:
                    return
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()

    def ping(_):
        import socket as s
        import time as t

        sock = s.create_connection((host, port))
        sock.setsockopt(s.IPPROTO_TCP, s.TCP_NODELAY, 1)
        rtts = []
        for _ in range(repeat):
            start = t.perf_counter()
            sock.sendall(b"x" * 100)
            got = 0
            while got < 100:
                got += len(sock.recv(100 - got))
            rtts.append(t.perf_counter() - start)
        sock.close()
        rtts.sort()
        yield rtts[len(rtts) // 2]

    try:
        return sc.parallelize([0], 1).mapPartitions(ping).collect()[0]
    finally:
        thread.join(10)
        server.close()


# -- the benchmark -------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None, spark=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (< 60 s)")
    clusters.add_arguments(parser)
    parser.add_argument("--maggy-trials", type=int, help="default 3000; quick 300")
    parser.add_argument("--hyperopt-trials", type=int, help="default 30; quick 6")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument("--connect", action="store_true",
                        help="add a Spark Connect row (starts a Connect server, ~30 s; "
                             "stops the classic session)")
    args = parser.parse_args(argv)
    n_maggy = args.maggy_trials or (300 if args.quick else 3000)
    n_hyper = args.hyperopt_trials or (6 if args.quick else 30)

    t_start = time.perf_counter()
    close = None
    if spark is None:
        spark, close = clusters.open_session(args)
    try:
        return _run(args, spark, n_maggy, n_hyper, t_start)
    finally:
        if close is not None:
            close()


def _run(args: argparse.Namespace, spark: Any, n_maggy: int, n_hyper: int,
         t_start: float) -> int:
    import hyperopt
    import pyspark

    import maggy_magic

    p = print
    sc = spark.sparkContext
    workers = slots(sc)
    root = tempfile.mkdtemp(prefix="maggy-spark-bench-")
    p(f"maggy_magic Spark overhead benchmark ({'quick' if args.quick else 'full'} mode)")
    p(f"Python {platform.python_version()} | pyspark {pyspark.__version__} | hyperopt "
      f"{hyperopt.__version__} | maggy_magic {maggy_magic.__version__} | CPUs "
      f"{os.cpu_count()} | master {sc.master} | {workers} task slots")
    load = os.getloadavg()
    p(f"load average before start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
      + ("  (other processes use the CPUs: figures are noisy)" if load[0] > 1.0 else ""))
    try:
        run_maggy(20, workers, root, spark)  # warm-up: zip shipping, Python workers
        m = run_maggy(n_maggy, workers, root, spark)
        h = run_sparktrials(spark, n_hyper, workers)
        rtt = round_trip(sc, sc.getConf().get("spark.driver.host", "127.0.0.1"), 2000)
        job = job_latency(sc, 10 if args.quick else 30)
        c = run_connect(spark, n_maggy, workers, root) if args.connect else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio_e2e, ratio_steady = m["tput_e2e"] / h["tput"], m["tput_steady"] / h["tput"]
    floor_rtt, floor_job = workers / rtt, workers / job

    def verdict(ratio: float) -> str:
        return "PASS" if ratio >= TARGET_RATIO else "MISS"

    p()
    p(f"No-op trial throughput, {workers} workers (figures of one run each)")
    p(f"  {'system':<62}{'trials':>7}{'wall s':>9}{'trials/s':>10}{'vs SparkTrials':>16}")
    p(f"  {'maggy spark backend, end-to-end (whole lagom call)':<62}{m['n']:>7}"
      f"{m['wall']:>9.2f}{m['tput_e2e']:>10.1f}{ratio_e2e:>15.0f}x  target >= "
      f"{TARGET_RATIO:.0f}x {verdict(ratio_e2e)}")
    p(f"  {'maggy spark backend, steady (1st trial_started→run_finished)':<62}{m['n']:>7}"
      f"{m['steady']:>9.2f}{m['tput_steady']:>10.1f}{ratio_steady:>15.0f}x  target >= "
      f"{TARGET_RATIO:.0f}x {verdict(ratio_steady)}")
    if c is not None:
        p(f"  {'maggy spark backend on Spark Connect, end-to-end':<62}{c['n']:>7}"
          f"{c['wall']:>9.2f}{c['tput_e2e']:>10.1f}{c['tput_e2e'] / h['tput']:>15.0f}x  "
          f"(Connect server on {c['master']})")
        p(f"  {'maggy spark backend on Spark Connect, steady':<62}{c['n']:>7}"
          f"{c['steady']:>9.2f}{c['tput_steady']:>10.1f}"
          f"{c['tput_steady'] / h['tput']:>15.0f}x")
        p(f"  {'hyperopt SparkTrials on Spark Connect':<62}  {c['sparktrials']}")
    p(f"  {f'hyperopt SparkTrials(parallelism={workers}), fmin':<62}{h['n']:>7}"
      f"{h['wall']:>9.2f}{h['tput']:>10.2f}{1:>15.0f}x  reference")
    p(f"  {'floor: one round trip per trial, W / RTT (RTT %.0f µs)' % (rtt * 1e6):<62}"
      f"{'':>7}{'':>9}{floor_rtt:>10.0f}{floor_rtt / h['tput']:>15.0f}x  theoretical max")
    p(f"  {'floor: one Spark job per trial, W / job (job %.0f ms)' % (job * 1e3):<62}"
      f"{'':>7}{'':>9}{floor_job:>10.1f}{floor_job / h['tput']:>15.0f}x  best job-per-trial")
    p(f"  maggy start-up (lagom call → 1st trial_started): {m['startup']:.2f} s; steady "
      f"state reaches {m['tput_steady'] / floor_rtt:.0%} of the round-trip floor; "
      f"SparkTrials reaches {h['tput'] / floor_job:.0%} of the job-per-trial floor")
    p(f"  total benchmark time {time.perf_counter() - t_start:.1f} s")
    figures = {"workers": workers, "maggy": m, "sparktrials": h, "rtt": rtt,
               "job_latency": job, "ratio_e2e": ratio_e2e, "ratio_steady": ratio_steady,
               "floor_rtt_tput": floor_rtt, "floor_job_tput": floor_job,
               "target_ratio": TARGET_RATIO, "connect": c}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return 1 if args.strict and ratio_e2e < TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
