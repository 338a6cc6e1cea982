"""Finding and reading earlier runs: what ``%maggy list/show``, the command line and
``resume=`` share.

A run is a directory ``<root>/<experiment name>/<run id>/`` holding a journal (see
:mod:`maggy_magic.store`). A run can be named by its directory, ``NAME/RUN_ID``, its run
id alone, or ``latest``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from .errors import ConfigError, ResumeError, closest
from .store import JOURNAL, load_trials


class RunNotFoundError(ResumeError, ConfigError):
    """No run matches the given reference."""


def run_dirs(root: str, name: Optional[str] = None) -> List[str]:
    """Directories of the runs under ``root`` (of experiment ``name`` only, if given),
    in the order they started (each journal's first event)."""
    found = []
    names = [name] if name else (sorted(os.listdir(root)) if os.path.isdir(root) else [])
    for experiment in names:
        folder = os.path.join(root, experiment)
        if not os.path.isdir(folder):
            continue
        for run_id in os.listdir(folder):
            path = os.path.join(folder, run_id)
            if os.path.exists(os.path.join(path, JOURNAL)):
                found.append(path)
    return sorted(found, key=lambda path: (_started(path), os.path.basename(path)))


def _started(path: str) -> float:
    """When the run of ``path`` started (its journal's first event); run ids alone only
    order runs a second apart."""
    try:
        with open(os.path.join(path, JOURNAL), encoding="utf-8") as handle:
            return float(json.loads(handle.readline()).get("t") or 0.0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def find_run(root: str, ref: str, name: Optional[str] = None) -> str:
    """The absolute directory of run ``ref`` (see the module docstring)."""
    ref = str(ref)
    if os.path.exists(os.path.join(ref, JOURNAL)):
        return os.path.abspath(ref)
    if os.path.isdir(ref) and os.sep in ref:
        raise RunNotFoundError(f"{ref} has no {JOURNAL}, so it is not a run directory; pass "
                               "the directory of an earlier run (maggy-magic ls lists them)")
    if "/" in ref and name is None:
        name, ref = ref.rsplit("/", 1)
    runs = run_dirs(root, name)
    where = f"{root}" + (f" for experiment {name!r}" if name else "")
    if ref == "latest":
        if not runs:
            raise RunNotFoundError(f"no runs under {where}; run an experiment first")
        return os.path.abspath(runs[-1])
    matches = [p for p in runs if os.path.basename(p) == ref]
    if len(matches) == 1:
        return os.path.abspath(matches[0])
    if len(matches) > 1:
        names = ", ".join(os.path.basename(os.path.dirname(p)) for p in matches)
        raise RunNotFoundError(f"run {ref!r} exists in several experiments ({names}); "
                               "pass NAME/RUN_ID")
    hint = closest(ref, [os.path.basename(p) for p in runs])
    raise RunNotFoundError(f"no run {ref!r} under {where}"
                           + (f"; did you mean {hint!r}?" if hint else "")
                           + "; list the runs with %maggy list or maggy-magic ls")


def load_result(path: str, running: frozenset = frozenset()) -> Any:
    """The ExperimentResult of a run directory: its result.json, or (for a run that has
    not ended) what its journal holds, with state ``running`` or ``incomplete``."""
    from .result import ExperimentResult

    saved = os.path.join(path, "result.json")
    if os.path.exists(saved):
        with open(saved, encoding="utf-8") as handle:
            data = json.load(handle)
        result = ExperimentResult(
            name=data["name"], run_id=data["run_id"], run_dir=os.path.abspath(path),
            state=data["state"], direction=data["direction"],
            optimization_key=data["optimization_key"], trials=data["trials"],
            error=data.get("error"),
            rejected_frames=(data.get("counts") or {}).get("rejected_frames", 0),
            searchspace=data.get("searchspace"))
        result.mlflow = data.get("mlflow")
        return result
    trials, config, _ = load_trials(path)
    run_id = os.path.basename(os.path.abspath(path))
    return ExperimentResult.from_trials(
        list(trials.values()), name=config.get("name") or os.path.basename(
            os.path.dirname(os.path.abspath(path))),
        run_id=run_id, run_dir=os.path.abspath(path),
        state="running" if run_id in running else "incomplete",
        direction=config.get("direction", "max"),
        optimization_key=config.get("optimization_key", "metric"),
        searchspace=config.get("searchspace"))


def list_runs(root: str, name: Optional[str] = None,
              running: frozenset = frozenset()) -> List[Dict[str, Any]]:
    """One summary row per run (state, trial counts, best metric), oldest first."""
    rows = []
    for path in run_dirs(root, name):
        result = load_result(path, running)
        rows.append({"experiment": result.name, "run": result.run_id, "state": result.state,
                     "trials": len(result.trial_records), "finished": result.num_finished,
                     "early_stopped": result.num_early_stopped, "failed": result.num_failed,
                     "best": result.best_metric, "metric": result.optimization_key,
                     "direction": result.direction, "best_trial": result.best_id,
                     "path": result.run_dir})
    return rows


def runs_table(root: str, name: Optional[str] = None, running: frozenset = frozenset()):
    """:func:`list_runs` as a pandas DataFrame, or None when there is no run."""
    rows = list_runs(root, name, running)
    if not rows:
        return None
    import pandas as pd

    return pd.DataFrame(rows)
