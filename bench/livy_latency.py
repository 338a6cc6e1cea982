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
4. upload: a ``--upload-mb`` (100) MB payload (a training set captured as a global) sent to
   the session as the livy backend sends it (statements that grow from 1 to 8 MiB of
   base64 while the session takes them quickly), against the fixed 256 KiB statements of
   earlier versions and against the floor: the same bytes in one HTTP POST to a loopback
   server that only reads them (no Livy, no Python on the other side).

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


def upload_rate(target, data: bytes, chunk=None) -> Dict[str, float]:
    """Seconds, MB/s and statements of one upload of ``data`` (then dropped there)."""
    from maggy_magic.backends.livy import bootstrap

    key = f"bench-{chunk}"
    started = time.perf_counter()
    statements = bootstrap.upload(target, key, data, 600, "bench upload", chunk)
    took = time.perf_counter() - started
    target.client.run(target.session_id, f"_maggy_livy['uploads'].pop({key!r}, None)", 60,
                      "bench cleanup")
    return {"seconds": took, "mb_s": len(data) / 2**20 / took, "statements": statements}


def loopback_floor(size: int) -> float:
    """MB/s of one HTTP POST of ``size`` base64 bytes to a server that only reads them."""
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):
            left = int(self.headers["Content-Length"])
            while left:
                left -= len(self.rfile.read(min(left, 1 << 20)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.handle_request, daemon=True).start()
    body = b"A" * (size * 4 // 3)
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=600)
    connection.request("POST", "/", body=body)
    connection.getresponse().read()
    took = time.perf_counter() - started
    server.server_close()
    return size / 2**20 / took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--lines", type=int, default=20, help="marks per trial")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between marks")
    parser.add_argument("--no-peer", action="store_true", help="skip the direct spark run")
    parser.add_argument("--upload-mb", type=float, default=100.0,
                        help="payload size of the upload figures (0: skip them)")
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
        if args.upload_mb > 0:
            data = os.urandom(int(args.upload_mb * 2**20))
            figures["upload"] = {"sized": upload_rate(target, data),
                                 "fixed_256k": upload_rate(target, data, 256 * 1024),
                                 "floor_mb_s": loopback_floor(len(data))}
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
    if "upload" in figures:
        up, floor = figures["upload"], figures["upload"]["floor_mb_s"]
        for label, key in (("sized statements (1 -> 8 MiB)", "sized"),
                           ("fixed 256 KiB statements", "fixed_256k")):
            fig = up[key]
            print(f"upload {args.upload_mb:.0f} MB, {label:<30} {fig['seconds']:6.1f} s  "
                  f"{fig['mb_s']:6.1f} MB/s  {fig['statements']:4d} statements  "
                  f"{fig['mb_s'] / floor:.2f} of the floor")
        print(f"upload floor: one loopback HTTP POST, no Livy       {floor:6.1f} MB/s; sized "
              f"/ fixed {up['sized']['mb_s'] / up['fixed_256k']['mb_s']:.1f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 1 if args.strict and lv["p95"] > TARGET_P95 else 0


if __name__ == "__main__":
    sys.exit(main())
