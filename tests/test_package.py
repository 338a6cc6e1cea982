"""The package contract: a fast import that loads no heavy framework."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "torch", "pyspark", "pandas", "numpy", "keras")


def test_import_is_fast_and_light():
    code = ("import json, sys, time; t = time.perf_counter(); import maggy_magic; "
            "elapsed = time.perf_counter() - t; "
            f"print(json.dumps([elapsed, [m for m in {HEAVY!r} if m in sys.modules]]))")
    env = dict(os.environ, PYTHONPATH=ROOT)
    runs = [json.loads(subprocess.check_output([sys.executable, "-c", code], env=env))
            for _ in range(3)]
    assert all(not loaded for _, loaded in runs), runs
    assert min(elapsed for elapsed, _ in runs) <= 0.3, runs


def test_public_names_of_the_maggy_api():
    import maggy_magic

    for name in ("experiment", "Searchspace", "HyperparameterOptConfig", "AbstractOptimizer",
                 "AbstractEarlyStop", "MaggyError", "EarlyStopException"):
        assert hasattr(maggy_magic, name), name
    assert callable(maggy_magic.experiment.lagom)
    assert issubclass(maggy_magic.ExperimentInterrupted, KeyboardInterrupt)
