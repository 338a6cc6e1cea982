"""The package contract: ``import maggy_magic`` (and what a worker process imports) loads
the standard library and nothing else, so no heavy framework is paid for at import.

How fast that import is on a given machine is a benchmark's question
(``bench/import_time.py`` prints it as a ratio to ``python -c pass``), not a test's.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Frameworks that must never load with the package (each is imported inside the
#: function that uses it).
HEAVY = ("tensorflow", "torch", "pyspark", "optuna", "ipywidgets", "anywidget", "IPython",
         "pandas", "numpy", "keras", "sklearn", "cloudpickle", "papermill", "nbformat")

PROBE = """
import json, sys
before = set(sys.modules)
{statement}
loaded = sorted({{m.split(".")[0] for m in set(sys.modules) - before}})
print(json.dumps([loaded, sorted(sys.stdlib_module_names)]))
"""


def loaded_by(statement):
    """Top-level modules that ``statement`` loads in a fresh interpreter, and which of
    them are not in the standard library."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", PROBE.format(statement=statement)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded, stdlib = json.loads(out.stdout)
    return loaded, sorted(set(loaded) - set(stdlib) - {"maggy_magic"})


@pytest.mark.parametrize("statement", [
    "import maggy_magic",
    # a local worker process starts with exactly this
    "from maggy_magic.worker import main",
    # the Python API's names, as a notebook or script imports them
    "from maggy_magic import experiment, Searchspace, HyperparameterOptConfig, "
    "AblationStudy, AblationConfig, MaggyError, EarlyStopException",
])
def test_import_loads_only_the_standard_library(statement):
    loaded, foreign = loaded_by(statement)
    assert "maggy_magic" in loaded
    assert foreign == [], f"{statement} loads {foreign}"
    assert not set(HEAVY) & set(loaded)


def test_the_probe_sees_a_heavy_import():
    """The check above would notice: a statement that loads a framework is caught."""
    loaded, foreign = loaded_by("import maggy_magic, numpy")
    assert "numpy" in foreign and "numpy" in loaded


def test_public_names_of_the_maggy_api():
    import maggy_magic

    for name in ("experiment", "Searchspace", "HyperparameterOptConfig", "AbstractOptimizer",
                 "AbstractEarlyStop", "MaggyError", "EarlyStopException"):
        assert hasattr(maggy_magic, name), name
    assert callable(maggy_magic.experiment.lagom)
    assert issubclass(maggy_magic.ExperimentInterrupted, KeyboardInterrupt)
