"""What ``import maggy_magic`` costs a fresh interpreter, next to its peers.

Each statement runs ``--repeat`` times in a fresh ``python -c``; printed per statement:
the median and best wall time of the whole process, and the ratio of its median to the
median of ``python -c pass`` (the theoretical minimum: an interpreter that imports
nothing). ``import json`` is a small stdlib peer. The package's claim is a fast import
that loads no framework: the test suite checks the second part
(``tests/test_package.py``), this prints the first. Target: ``import maggy_magic`` at most
1.5 x ``python -c pass``.

Usage::

    PYTHONPATH=. python bench/import_time.py              # 30 runs of each
    PYTHONPATH=. python bench/import_time.py --repeat 5   # smoke run
    PYTHONPATH=. python bench/import_time.py --strict     # exit 1 on a missed target

Run it on an otherwise idle machine: the statements are interleaved so that a busy
moment hurts every one of them alike, and the load average is printed first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = "pass"
STATEMENTS = [PEER, "import json", "import maggy_magic",
              "from maggy_magic import experiment, Searchspace, HyperparameterOptConfig"]
TARGET_RATIO = 1.5


def one_run(statement: str) -> float:
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], env=env, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if import maggy_magic misses the target ratio")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times = {s: [] for s in STATEMENTS}
    for statement in STATEMENTS:      # warm the file system cache once
        one_run(statement)
    for _ in range(args.repeat):
        for statement in STATEMENTS:  # interleaved: a busy moment hurts all alike
            times[statement].append(one_run(statement))
    peer = statistics.median(times[PEER])
    print(f"{'statement':<76} {'median':>8} {'best':>8} {'ratio':>6}")
    for statement, runs in times.items():
        median = statistics.median(runs)
        print(f"{statement:<76} {median * 1e3:6.1f}ms {min(runs) * 1e3:6.1f}ms "
              f"{median / peer:6.2f}")
    ratio = statistics.median(times["import maggy_magic"]) / peer
    met = ratio <= TARGET_RATIO
    print(f"import maggy_magic: {ratio:.2f} x `python -c pass` (target <= {TARGET_RATIO}); "
          f"{'met' if met else 'MISSED'}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
