"""Print-to-event latency through Livy: a line printed inside a trial on a Spark executor
until its ``log`` event reaches a listener in this process, at the default poll interval.

Figures, all in the same run:

1. livy: ``%%maggy hpo --backend livy`` (the Python API here) on a session of the Livy test
   server (``tests/livy_server.py``: real Spark, ``local-cluster[2,1,1024]``); each trial
   prints ``mark <time.time()>`` every ``--every`` seconds; the listener notes arrival
   minus print time (one machine, one clock). p50 / p95 / max.
2. peer: the same search with the spark backend run directly in this process on a Spark
   cluster of the same shape (no Livy: events reach the listener from the in-process
   driver). Its latency is what the worker's log flushing costs; the ratio livy/peer shows
   what Livy's polling adds.
3. floor: the poll interval itself (a line waits up to one interval for the next poll, so
   p95 cannot be much below ``0.95 x interval + peer p95``), and the median round trip of a
   no-op statement on the session (the cost of one poll).

Usage::

    PYTHONPATH=. python bench/livy_latency.py                 # ~3-5 min on 2 cores
    PYTHONPATH=. python bench/livy_latency.py --no-peer --trials 4 --json out.json

Target: livy p95 <= 1.5 s at the default poll interval. ``--strict`` exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
TARGET_P95 = 1.5
MASTER = "local-cluster[2,1,1024]"


def make_train(lines: int, every: float):
    def train(x, reporter):
        import time as clock

        for _ in range(lines):
            print(f"mark {clock.time()!r}", flush=True)
            clock.sleep(every)
        return {"metric": x}

    return train


class Latencies:
    """A listener that turns ``mark <t>`` log lines into arrival delays."""

    def __init__(self):
        self.values: List[float] = []

    def __call__(self, event: Dict[str, Any]) -> None:
        if event["type"] != "log":
            return
        now = time.time()
        for line in event["lines"]:
            if line.startswith("mark "):
                self.values.append(now - float(line.split()[1]))


def summary(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {"n": len(ordered), "p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1]}


def run_search(backend: str, options: Dict[str, Any], args, root: str) -> Latencies:
    from maggy_magic import Searchspace, experiment
    from maggy_magic.config import HyperparameterOptConfig

    listener = Latencies()
    config = HyperparameterOptConfig(
        num_trials=args.trials, searchspace=Searchspace(x=("DOUBLE", [0, 1])),
        es_policy="none", name=f"latency-{backend}", backend=backend, workers=2,
        root=root, backend_options=options)
    experiment.lagom(make_train(args.lines, args.every), config, listeners=[listener])
    return listener


def statement_rtt(target, count: int = 20) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        target.client.run(target.session_id, "pass", 60, "no-op")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--lines", type=int, default=20, help="marks per trial")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between marks")
    parser.add_argument("--no-peer", action="store_true", help="skip the direct spark run")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if p95 > target")
    args = parser.parse_args()

    import tempfile

    from livy_server import LivyServer

    from maggy_magic.backends.livy import session as livy_session
    from maggy_magic.backends.livy.settings import DEFAULT_POLL_INTERVAL, LivySettings

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    root = tempfile.mkdtemp(prefix="livy-latency-")
    figures: Dict[str, Any] = {"poll_interval": DEFAULT_POLL_INTERVAL}
    os.environ["SPARKMAGIC_CONF_DIR"] = root  # no user config
    with LivyServer(spark_master=MASTER) as server:
        options = {"url": server.url, "remote_root": os.path.join(root, "remote")}
        started = time.time()
        livy = run_search("livy", options, args, root)
        figures["livy_wall"] = time.time() - started
        target = livy_session.own_session(LivySettings(**options))
        figures["statement_rtt"] = statement_rtt(target)
        figures["livy"] = summary(livy.values)
        livy_session.close_owned()
    if not args.no_peer:
        figures["peer"] = summary(run_search("spark", {"master": MASTER}, args, root).values)
        from pyspark.sql import SparkSession

        SparkSession.getActiveSession().stop()  # before exit, so its executors end quietly

    interval, rtt = figures["poll_interval"], figures["statement_rtt"]
    lv = figures["livy"]
    print(f"poll interval (floor for the wait)  {interval:.3f} s")
    print(f"no-op statement round trip (median) {rtt:.3f} s")
    print(f"livy  print->event  n={lv['n']}  p50 {lv['p50']:.3f} s  p95 {lv['p95']:.3f} s  "
          f"max {lv['max']:.3f} s   (target p95 <= {TARGET_P95} s)")
    if "peer" in figures and figures["peer"]["n"]:
        peer = figures["peer"]
        print(f"spark print->event  n={peer['n']}  p50 {peer['p50']:.3f} s  "
              f"p95 {peer['p95']:.3f} s  max {peer['max']:.3f} s")
        print(f"ratio livy/spark p50 {lv['p50'] / peer['p50']:.2f}  "
              f"p95 {lv['p95'] / peer['p95']:.2f}; livy p95 - spark p95 = "
              f"{lv['p95'] - peer['p95']:.3f} s vs the interval {interval:.3f} s + one round "
              f"trip {rtt:.3f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 1 if args.strict and lv["p95"] > TARGET_P95 else 0


if __name__ == "__main__":
    sys.exit(main())
