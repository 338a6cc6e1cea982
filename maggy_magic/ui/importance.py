"""How much each parameter matters to the metric: Optuna's fANOVA over the finished trials.

:func:`param_importances` hands the run's finished trials to Optuna as
``optuna.trial.create_trial`` objects in an in-memory study and asks
``optuna.importance.get_param_importances`` with its ``FanovaImportanceEvaluator`` (a
random forest from scikit-learn, then the share of the metric's variance each parameter
explains). The answer is a JSON-ready dict::

    {"importances": [[name, share], ...],   # most important first; shares sum to 1
     "trials": 40, "of": 40,                 # trials used, finished trials seen
     "method": "fANOVA", "note": None}       # or a one-line reason there are none

Only ``FINISHED`` trials count (as in Optuna, where pruned trials are left out): an
early-stopped trial's metric is that of a shorter training. At least ``MIN_TRIALS`` are
needed; past ``MAX_TRIALS`` an even spread of them (by trial number) is used, which keeps
one computation to a second or two. A parameter that exists only under a condition is
left out (fANOVA needs it in every trial). Without Optuna or scikit-learn the answer has
no importances and a note saying what to install; a computation that fails says why in
the note. Nothing here raises.

Results are remembered for the last few inputs, so the dashboard's final computation and
the static summary's of the same trials cost one.

:class:`ImportanceLoop` runs the computation for the live dashboard on its own thread,
never on the driver's or the cell's: asked with :meth:`~ImportanceLoop.poke` (cheap),
it recomputes at most every ``interval`` seconds, and starts at least five times
its last computation's duration apart (so it takes at most a fifth of a core).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

#: Fewer finished trials than this give no importances.
MIN_TRIALS = 4
#: At most this many finished trials are handed to fANOVA.
MAX_TRIALS = 256
METHOD = "fANOVA"
INSTALL = "pip install 'maggy-magic[importance]'"

_CACHE: "collections.OrderedDict[str, Dict[str, Any]]" = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def param_importances(searchspace: Optional[Dict[str, Any]],
                      records: Iterable[Dict[str, Any]], *,
                      max_trials: int = MAX_TRIALS) -> Dict[str, Any]:
    """The importances of the search's parameters (see the module docstring).

    ``searchspace`` is the space's ``to_dict()`` (None: inferred from the trials);
    ``records`` are trial records with ``trial``, ``state``, ``params`` and ``value``."""
    finished = [r for r in records if r.get("state") == "FINISHED" and _finite(r.get("value"))]
    finished.sort(key=lambda r: _trial_key(r.get("trial")))
    answer: Dict[str, Any] = {"importances": [], "trials": 0, "of": len(finished),
                              "method": METHOD, "note": None}
    if len(finished) < MIN_TRIALS:
        answer["note"] = (f"importances need {MIN_TRIALS} finished trials "
                          f"({len(finished)} so far)")
        return answer
    used = _even(finished, max_trials)
    inputs = [[str(r.get("trial")), r.get("params") or {}, float(r["value"])] for r in used]
    key = hashlib.sha256(json.dumps([searchspace, inputs], sort_keys=True,
                                    default=str).encode()).hexdigest()
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return dict(_CACHE[key], of=len(finished))
    try:
        import optuna
        import sklearn  # noqa: F401 - fANOVA's random forest
    except ImportError as exc:
        answer["note"] = f"parameter importances need {exc.name}: {INSTALL}"
        return answer
    try:
        answer["importances"] = _fanova(optuna, searchspace, inputs)
    except Exception as exc:  # noqa: BLE001 - a display must not fail the run
        answer["note"] = f"importances could not be computed: {str(exc).splitlines()[0]}"
        return answer
    answer["trials"] = len(used)
    if not answer["importances"]:
        answer["note"] = "no parameter varies in every finished trial"
    with _CACHE_LOCK:
        _CACHE[key] = dict(answer)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return answer


def _fanova(optuna: Any, searchspace: Optional[Dict[str, Any]],
            inputs: List[List[Any]]) -> List[List[Any]]:
    from ..optimizers.optuna_bridge import quiet

    encoded = _encoder(optuna, searchspace, [params for _, params, _ in inputs])
    trials = []
    for _, params, value in inputs:
        pair = encoded(params)
        if pair is not None:
            trials.append(optuna.trial.create_trial(params=pair[0], distributions=pair[1],
                                                    value=value))
    if len(trials) < MIN_TRIALS:
        raise ValueError(f"only {len(trials)} trials fit the search space")
    with quiet():
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        study.add_trials(trials)
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    ranked = sorted(found.items(), key=lambda item: (-float(item[1]), item[0]))
    return [[name, round(float(share), 6)] for name, share in ranked]


def _encoder(optuna: Any, searchspace: Optional[Dict[str, Any]],
             configs: List[Dict[str, Any]]) -> Callable[[Dict[str, Any]], Any]:
    """params -> (optuna params, distributions) or None: through the search space when
    known (as the optimizers hand trials to Optuna), else from the values seen."""
    if searchspace:
        from ..optimizers.optuna_bridge import distributions, encode
        from ..searchspace import Searchspace

        space = Searchspace.from_dict(searchspace)
        dists = distributions(optuna, space)
        return lambda params: encode(space, dists, params)
    d = optuna.distributions
    seen: Dict[str, List[Any]] = {}
    for params in configs:
        for name, value in params.items():
            seen.setdefault(name, []).append(value)
    dists, labels = {}, {}
    for name, values in seen.items():
        if all(_finite(v) for v in values):
            dists[name] = d.FloatDistribution(float(min(values)), float(max(values)))
        else:
            labels[name] = list(dict.fromkeys(json.dumps(v, default=str) for v in values))
            dists[name] = d.CategoricalDistribution(list(range(len(labels[name]))))

    def encode_seen(params: Dict[str, Any]) -> Any:
        raw = {n: (labels[n].index(json.dumps(v, default=str)) if n in labels else float(v))
               for n, v in params.items()}
        return raw, {n: dists[n] for n in params}
    return encode_seen


class ImportanceLoop:
    """Recomputes importances on its own thread when poked (see the module docstring).

    ``snapshot()`` returns the ``(searchspace, records)`` to compute from, or None for
    nothing to do; it is called on this loop's thread and must take the caller's lock
    itself. ``deliver(answer)`` receives each result, on this loop's thread too.
    """

    def __init__(self, snapshot: Callable[[], Any], deliver: Callable[[Dict[str, Any]], None],
                 *, interval: float = 5.0):
        self.interval = interval
        self.computations = 0
        self._snapshot, self._deliver = snapshot, deliver
        self._cond = threading.Condition()
        self._poked = self._stopping = False
        self._not_before = 0.0
        self._thread: Optional[threading.Thread] = None

    def poke(self) -> None:
        """Ask for a new computation (cheap: no work on the caller's thread)."""
        with self._cond:
            if self._stopping:
                return
            self._poked = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="maggy-importance",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        """End the loop, letting a computation under way finish. Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (
                        not self._poked or time.monotonic() < self._not_before):
                    wait = self._not_before - time.monotonic() if self._poked else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                self._poked = False
            started = time.monotonic()
            job = self._snapshot()
            if job is None:
                continue
            answer = param_importances(*job)
            took = time.monotonic() - started
            self._not_before = started + max(self.interval, 5 * took)
            self.computations += 1
            self._deliver(answer)


def _even(items: List[Any], limit: int) -> List[Any]:
    if len(items) <= limit:
        return list(items)
    stride = len(items) / limit
    return [items[int(k * stride)] for k in range(limit)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _trial_key(trial: Any) -> Any:
    text = str(trial)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)
