"""Many local workers and many results per second, against the ideal and Ray Tune.

The probe: W workers, each runs K trials of D seconds that broadcast R results per
second (``num_trials = W * K``); the ideal wall time is ``K * D``. Figures, one run:

1. the table for W = 2, 16, 64, 128 (``--workers``), K = 10, D = 1 s, R = 10/s, for
   maggy_magic with its workers forked from one template process (the default) and
   spawned one by one (``start="spawn"``, what earlier versions did), and for Ray Tune
   2.x (``reuse_actors=True``, W concurrent trials of ``1/W`` CPU) when ``ray`` is
   importable (``pip install 'ray[tune]'``; ``--no-ray`` skips it). Each: wall, wall /
   ideal, and for maggy the start-up of its workers (run start to each ``worker_joined``:
   median and last). Each row also has the machine's own floor for its shape: the same
   probe in W processes forked from a bare interpreter with a reporter that keeps only
   the last value (no driver, no sockets), so ``/floor`` is what maggy_magic adds to what
   the processes and their sleeps cost here (at 500 results/s a worker wakes from a sleep
   500 times a second, which on a slow virtual machine alone can take more than 2 cores).
2. Ray's release-test shapes scaled to this machine (``--shapes``): 96 trials x 2 s at
   10 and at 500 results/s (48,000 results/s of metrics for 96 workers at once), and the
   target's shape, 96 workers x 10 trials x 2 s at 500 results/s (960 trials, 960,000
   results in about 20 s).
3. ``--ingest``: the metric path at 48,000 results/s in all, spread over W = 2, 16, 64
   and 96 workers (one 5 s trial each at 48,000 / W results/s), with the dashboard's
   state folding every event as the widget's does: the points that reached the driver
   (a worker sends at most 200 per message, thinned evenly, always with the first, best,
   worst and last), per second, and the CPU per point taken in: the kernel process's
   (with the run's own start and end) and the driver thread's from the first point to
   the end (ingest, journal, the dashboard fold), which should not grow with W.
4. ``--noop N``: N no-op trials (default 100,000) on 2 workers in a child process, and
   5,000 for comparison: trials/s and the driver's peak RSS (the child's ru_maxrss).

Every case, peers included, starts once the machine is quiet (at most 10 % busy, waited
for up to 30 s): Ray's processes take seconds to go after its run returns, and the case
after it would pay for them. maggy_magic's bytecode is compiled first, as an installed
package has it.

Usage::

    PYTHONPATH=. python bench/scale.py                      # the table (~10 min)
    PYTHONPATH=. python bench/scale.py --workers 2 16 --no-ray --noop 0
    PYTHONPATH=. python bench/scale.py --shapes --noop 100000 --json out.json
    PYTHONPATH=. python bench/scale.py --workers --ingest --no-ray --noop 0

Targets (printed next to the figures): W = 128 within 5 % of the ideal, the 500/s shape
within 10 %, 100,000 no-op trials under 500 MB of driver RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_W128_PCT, TARGET_500_PCT, TARGET_RSS_MB = 5.0, 10.0, 500.0


def make_probe(duration: float, rate: float):
    """A trial of ``duration`` seconds broadcasting ``rate`` results per second."""

    def probe(x, reporter):
        import time as clock

        steps, start = max(1, int(duration * rate)), clock.monotonic()
        for step in range(steps):
            reporter.broadcast(x + step, step)
            wait = start + (step + 1) / rate - clock.monotonic()
            if wait > 0:
                clock.sleep(wait)
        return {"metric": x}

    return probe


def run_maggy(workers: int, per_worker: int, duration: float, rate: float, root: str,
              start: str) -> Dict[str, Any]:
    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
    from maggy_magic.hparams_summary import wait_for_writers

    # the previous case's HParams summary is still being written on a thread (about a
    # millisecond per trial): let it finish, so that it does not slow this run's start
    wait_for_writers()
    joined: List[float] = []
    began = time.monotonic()

    def listen(event: Dict[str, Any]) -> None:
        if event["type"] == "worker_joined":
            joined.append(time.monotonic() - began)

    config = HyperparameterOptConfig(
        num_trials=workers * per_worker, searchspace=Searchspace(x=("DOUBLE", [0, 1])),
        es_policy="none", workers=workers, root=root, name=f"scale-{start}-{workers}",
        hb_timeout=120, backend_options={"start": start})
    result = experiment.lagom(make_probe(duration, rate), config, listeners=[listen])
    wall = time.monotonic() - began
    assert result.num_finished == workers * per_worker, result
    return {"wall": wall, "joined_median": statistics.median(joined) if joined else None,
            "joined_last": max(joined) if joined else None}


def run_ingest(workers: int, total_rate: float, duration: float, root: str) -> Dict[str, Any]:
    """One trial per worker, ``total_rate / workers`` results/s each, folded by a
    DashboardState: results taken in per second and the process's CPU per result."""
    import resource

    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
    from maggy_magic.ui.state import DashboardState

    state, counted, clock = DashboardState("ingest"), [0], {}

    def fold(event: Dict[str, Any]) -> None:
        # metric events and run_finished are emitted on the driver's thread: its own
        # CPU from the first point to the end is the ingest cost, listeners included
        if event["type"] == "metric":
            counted[0] += 1
            clock.setdefault("first", time.thread_time())
        elif event["type"] == "run_finished":
            clock["end"] = time.thread_time()
        state.apply(event)

    config = HyperparameterOptConfig(
        num_trials=workers, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
        workers=workers, root=root, name=f"ingest-{workers}", hb_timeout=120)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    began = time.monotonic()
    experiment.lagom(make_probe(duration, total_rate / workers), config, listeners=[fold])
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    driver = clock.get("end", 0.0) - clock.get("first", 0.0)
    return {"results": counted[0], "wall": wall, "per_s": counted[0] / wall,
            "cpu_us_per_result": 1e6 * cpu / max(1, counted[0]),
            "driver_us_per_result": 1e6 * driver / max(1, counted[0]),
            "driver_share": driver / wall,
            "expected": int(workers * max(1, int(duration * total_rate / workers)))}


def run_ray(workers: int, per_worker: int, duration: float, rate: float,
            timeout: float) -> Optional[Dict[str, Any]]:
    """Ray Tune on the same probe in a child process (its own ray.init), or None when
    ray is not installed; ``{"timeout": s}`` when it did not end within ``timeout``."""
    code = f"""
import json, time
import ray
from ray import tune
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
def probe(config):
    steps, start = max(1, int({duration} * {rate})), time.monotonic()
    for step in range(steps):
        tune.report({{"metric": config["x"] + step}})
        wait = start + (step + 1) / {rate} - time.monotonic()
        if wait > 0:
            time.sleep(wait)
began = time.monotonic()
tuner = tune.Tuner(tune.with_resources(probe, {{"cpu": 1.0 / {workers}}}),
                   param_space={{"x": tune.uniform(0, 1)}},
                   tune_config=tune.TuneConfig(num_samples={workers * per_worker},
                                               max_concurrent_trials={workers},
                                               reuse_actors=True),
                   run_config=tune.RunConfig(verbose=0))
results = tuner.fit()
print(json.dumps({{"wall": time.monotonic() - began, "trials": len(results)}}))
"""
    try:
        import ray  # noqa: F401
    except ImportError:
        return None
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
        return {"timeout": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


FLOOR_CHILD = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from scale import make_probe
workers, per_worker, duration, rate = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), \
    float(sys.argv[5])
probe = make_probe(duration, rate)
class Null:
    def broadcast(self, value, step):
        self.last = value
began = time.monotonic()
for index in range(workers):
    if os.fork() == 0:
        for trial in range(per_worker):
            probe(0.5, Null())
        os._exit(0)
for index in range(workers):
    os.wait()
print(time.monotonic() - began)
"""


def run_floor(workers: int, per_worker: int, duration: float, rate: float) -> Dict[str, Any]:
    """The machine's own floor for the probe: W processes forked from a bare interpreter,
    each running its K trials of the same loop with a reporter that keeps only the last
    value (no driver, no sockets); wall from the first fork to the last exit."""
    done = subprocess.run([sys.executable, "-c", FLOOR_CHILD, HERE, str(workers),
                           str(per_worker), str(duration), str(rate)],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"wall": float(done.stdout.strip().splitlines()[-1])}


NOOP_CHILD = """
import json, resource, sys, tempfile, time
from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
def noop(x):
    return x
n = int(sys.argv[1])
began = time.monotonic()
result = experiment.lagom(noop, HyperparameterOptConfig(
    num_trials=n, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
    workers=2, root=tempfile.mkdtemp(prefix="scale-noop-"), name="noop"))
wall = time.monotonic() - began
print(json.dumps({"trials": result.num_finished, "wall": wall, "per_s": n / wall,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_noop(trials: int) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    done = subprocess.run([sys.executable, "-c", NOOP_CHILD, str(trials)], env=env,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_busy(window: float = 0.5) -> float:
    """The machine's busy share of all its CPUs over ``window`` seconds (/proc/stat)."""
    def sample():
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total0, idle0 = sample()
    time.sleep(window)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(limit: float = 30.0, busy: float = 0.1) -> None:
    """Before each measured case: wait (at most ``limit`` s) until the machine is at most
    ``busy`` busy, so that no case pays for what the one before left running (Ray's
    processes take seconds to go after its run returns). Every case, peers included."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and os.path.exists("/proc/stat"):
        if cpu_busy() <= busy:
            return
    print(f"  (the machine was still busy after {limit:.0f} s; measuring anyway)")


def compile_package() -> None:
    """Byte-compile maggy_magic where it is imported from, as pip does for an installed
    package: an editable install leaves it to the first import, and with
    PYTHONDONTWRITEBYTECODE=1 every process a run starts (the template, each spawned
    worker) would compile the package's modules again (about 20 ms each here)."""
    import compileall

    import maggy_magic

    compileall.compile_dir(os.path.dirname(maggy_magic.__file__), quiet=1)


def pct_over(wall: float, ideal: float) -> float:
    return 100.0 * (wall - ideal) / ideal


def cell(fig: Optional[Dict[str, Any]], ideal: float) -> str:
    if fig is None:
        return "not installed"
    if "timeout" in fig:
        return f"> {fig['timeout']:.0f} s"
    if "error" in fig:
        return "failed"
    return f"{fig['wall']:6.1f} s {pct_over(fig['wall'], ideal):+6.1f}%"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 16, 64, 128])
    parser.add_argument("--per-worker", type=int, default=10, help="K: trials per worker")
    parser.add_argument("--duration", type=float, default=1.0, help="D: seconds per trial")
    parser.add_argument("--rate", type=float, default=10.0, help="R: results per second")
    parser.add_argument("--no-spawn", action="store_true", help="skip start=spawn")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--ray-timeout", type=float, default=900.0)
    parser.add_argument("--shapes", action="store_true", help="Ray's release-test shapes")
    parser.add_argument("--ingest", action="store_true", help="48,000 results/s, W workers")
    parser.add_argument("--noop", type=int, default=100000, help="0: skip")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    compile_package()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    root = tempfile.mkdtemp(prefix="scale-")
    figures: Dict[str, Any] = {"table": [], "shapes": [], "noop": {}}
    cases = [(w, args.per_worker, args.duration, args.rate) for w in args.workers]
    if args.shapes:
        shapes = [(96, 1, 2.0, 10.0), (96, 1, 2.0, 500.0), (96, 10, 2.0, 500.0)]
        cases += shapes
    print(f"{'W':>4} {'K':>3} {'D':>4} {'R/s':>5} | {'ideal':>6} | {'floor':>16} | "
          f"{'fork':>16} {'/floor':>7} {'start med/last':>15} | {'spawn':>16} | "
          f"{'ray tune':>18}")
    for workers, per_worker, duration, rate in cases:
        ideal = per_worker * duration
        row: Dict[str, Any] = {"W": workers, "K": per_worker, "D": duration, "R": rate,
                               "ideal": ideal}
        wait_for_quiet()
        row["floor"] = run_floor(workers, per_worker, duration, rate)
        wait_for_quiet()
        row["fork"] = run_maggy(workers, per_worker, duration, rate, root, "fork")
        if not args.no_spawn:
            wait_for_quiet()
            row["spawn"] = run_maggy(workers, per_worker, duration, rate, root, "spawn")
        if not args.no_ray:
            wait_for_quiet()
            row["ray"] = run_ray(workers, per_worker, duration, rate, args.ray_timeout)

        fork = row["fork"]
        start = f"{fork['joined_median']:.2f}/{fork['joined_last']:.2f} s"
        over_floor = f"{pct_over(fork['wall'], row['floor']['wall']):+6.1f}%"
        print(f"{workers:>4} {per_worker:>3} {duration:>4.1f} {rate:>5.0f} | {ideal:>5.1f}s | "
              f"{cell(row['floor'], ideal):>16} | {cell(fork, ideal):>16} {over_floor:>7} "
              f"{start:>15} | "
              f"{cell(row['spawn'], ideal) if 'spawn' in row else 'skipped':>16} | "
              f"{cell(row.get('ray'), ideal) if not args.no_ray else 'skipped':>18}")
        if "spawn" in row:
            spawn = row["spawn"]
            print(f"{'':>22}spawned workers joined: median {spawn['joined_median']:.2f} s, "
                  f"last {spawn['joined_last']:.2f} s")
        is_shape = args.shapes and (workers, per_worker, duration, rate) in shapes
        figures["shapes" if is_shape else "table"].append(row)
    if args.ingest:
        figures["ingest"] = []
        for workers in (2, 16, 64, 96):
            wait_for_quiet()
            fig = dict(run_ingest(workers, 48000.0, 5.0, root), W=workers)
            figures["ingest"].append(fig)
            print(f"ingest W={workers:>3}: {fig['results']:,} of {fig['expected']:,} points "
                  f"reached the driver in {fig['wall']:.1f} s (ideal 5 s), "
                  f"{fig['per_s']:,.0f} points/s; per point {fig['cpu_us_per_result']:.1f} us "
                  f"of kernel CPU, {fig['driver_us_per_result']:.1f} us of the driver thread's "
                  f"({fig['driver_share']:.0%} of a core)")
    if args.noop:
        wait_for_quiet()
        small = run_noop(5000)
        wait_for_quiet()
        big = run_noop(args.noop)
        figures["noop"] = {"5000": small, str(args.noop): big}
        print(f"no-op 5,000 trials: {small['per_s']:,.0f} trials/s, driver peak RSS "
              f"{small['rss_mb']:.0f} MB")
        print(f"no-op {args.noop:,} trials: {big['per_s']:,.0f} trials/s "
              f"({big['per_s'] / small['per_s']:.2f} of the 5,000-trial rate), driver peak "
              f"RSS {big['rss_mb']:.0f} MB (target <= {TARGET_RSS_MB:.0f} MB)")
    print(f"targets: W=128 <= +{TARGET_W128_PCT:.0f}% over the ideal; 96 x 10 x 2 s at 500/s <= "
          f"+{TARGET_500_PCT:.0f}%")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
