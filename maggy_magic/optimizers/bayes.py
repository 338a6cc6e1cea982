"""Asynchronous Bayesian optimization through Optuna's samplers: ``tpe`` and ``gp``.

Both keep a *ledger*: an in-memory Optuna study holding one Optuna trial per maggy trial,
COMPLETE (with its metric), FAIL (no usable metric) or RUNNING (not ended yet). The ledger
is derived from ``trial_store`` / ``final_store`` alone (rebuilt in ``initialize``, then
brought up to date from ``final_store`` at each call), so resume needs nothing else.

Trials that are still running are accounted for, so parallel workers do not all get the
model's current favourite point:

- ``tpe`` asks Optuna's ``TPESampler`` on the ledger itself with ``constant_liar=True``:
  the sampler treats every RUNNING trial as if it had the worst result.
- ``gp``: Optuna's ``GPSampler`` has no constant-liar option (before Optuna 4.8 it ignores
  RUNNING trials; later ones model them their own way, not by ``impute_strategy``), so
  each model suggestion is asked on a fresh study holding the ledger's COMPLETE trials
  plus every RUNNING one told a stand-in ("lie") value (worst observed by default). This
  copy costs O(n) per suggestion, well below the sampler's own O(n^3) model fit. The GP
  may answer a point already tried: its acquisition search starts from the best trial's
  params and returns them unchanged when it finds nothing better (Optuna >= 4.6 returns
  them exactly). Such a repeat is told the worst observed result in the copy and the GP
  asked again, so the suggestion stays the model's own (see :data:`REPEAT_ASKS`).

Optuna is imported lazily, on first use; ``validate`` reports a missing installation.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import statistics
import zlib
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError
from ..trial import Trial
from . import optuna_bridge
from .base import AbstractOptimizer, Suggestion
from .randomsearch import (
    reject_options,
    require_num_trials,
    require_params,
    resolve_seed,
    sample_config,
)

#: How many fresh random draws replace a duplicate suggestion before accepting it.
DEDUPE_TRIES = 64
#: How many times ``gp`` asks its GP in all for one suggestion while it answers points
#: already tried (each repeat is told the worst observed result before the next ask).
REPEAT_ASKS = 4


def sample_unseen(searchspace: Any, seed: Any, index: int, seen: Any) -> Dict[str, Any]:
    """The index-th random draw of ``seed``'s stream, or a later draw of that index's own
    stream if its :func:`config_key` is in ``seen`` (up to :data:`DEDUPE_TRIES` draws)."""
    params = sample_config(searchspace, seed, index)
    for attempt in range(1, DEDUPE_TRIES):
        if config_key(params) not in seen:
            break
        params = sample_config(searchspace, seed, f"{index}:{attempt}")
    return params


def config_key(params: Dict[str, Any]) -> str:
    """A canonical string for a configuration (equal configurations, equal keys)."""
    return json.dumps(params, sort_keys=True, default=repr)


def int_seed(seed: Any) -> int:
    """An integer seed for Optuna derived from any seed value."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed % 2 ** 32
    return zlib.crc32(str(seed).encode())


def check_fraction(optimizer: str, name: str, value: Any, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and (0 < value if low_open else 0 <= value) and value <= 1
    if not ok:
        bound = "0 < x <= 1" if low_open else "0 <= x <= 1"
        raise ConfigError(f"{optimizer}: {name} must be a number with {bound}, got {value!r}")
    return float(value)


def check_count(optimizer: str, name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{optimizer}: {name} must be an integer >= {minimum}, got "
                          f"{value!r}")
    return value


class ModelSearch(AbstractOptimizer):
    """Common part of ``tpe`` and ``gp``: ledger, warmup, random share, deduplication.

    Options (Maggy's names): ``num_warmup_trials`` (int >= 0, default 10): the first trials
    are random draws; ``random_fraction`` (0..1, default 0.1): the share of later trials
    drawn at random instead of from the model; ``impute_strategy``: how running trials are
    accounted for (see the subclasses).

    ``get_suggestion`` answers a random draw while warming up or while no trial has a
    usable result, else the model's suggestion; a suggestion equal to an existing trial's
    params is replaced by a random configuration not yet tried (if one is found in
    :data:`DEDUPE_TRIES` draws). It answers ``None`` once ``num_trials`` trials exist.
    Each trial's ``info_dict`` holds ``sample_type`` (``warmup``, ``random`` or ``model``)
    and ``seed``. Failed trials, and trials without a finite metric, count as failed for
    the model; early-stopped ones count with their last metric.
    """

    name = "model"
    impute_strategies: Tuple[str, ...] = ("cl_worst", "none")
    torch = False

    def __init__(self, num_warmup_trials: int = 10, random_fraction: float = 0.1,
                 impute_strategy: str = "cl_worst", **options: Any):
        self.num_warmup_trials = check_count(self.name, "num_warmup_trials",
                                             num_warmup_trials)
        self.random_fraction = check_fraction(self.name, "random_fraction", random_fraction)
        if impute_strategy not in self.impute_strategies:
            raise ConfigError(f"{self.name}: impute_strategy must be one of "
                              f"{', '.join(self.impute_strategies)}; got {impute_strategy!r}")
        self.impute_strategy = impute_strategy
        super().__init__(num_warmup_trials=num_warmup_trials,
                         random_fraction=random_fraction, impute_strategy=impute_strategy,
                         **options)
        self._study: Any = None
        self._optuna: Any = None
        self._dists: Dict[str, Any] = {}
        self._number: Dict[Trial, int] = {}  # maggy trial -> ledger trial number
        self._count = 0  # trials in the ledger
        self._cursor = 0  # final_store entries already told
        self._results = 0  # COMPLETE trials in the ledger
        self._seen: set = set()

    # -- to specialise ------------------------------------------------------------------
    def _ledger_sampler(self) -> Any:
        """The sampler the ledger study uses (for ``tpe`` the model itself)."""
        raise NotImplementedError

    def _ask_model(self) -> Tuple[Dict[str, Any], Optional[int]]:
        """The model's next configuration and its ledger number (None: not in it yet)."""
        raise NotImplementedError

    # -- contract -----------------------------------------------------------------------
    def validate(self, searchspace: Any) -> None:
        require_params(self.name, searchspace)
        optuna_bridge.load_optuna(self.name, torch=self.torch)

    def initialize(self) -> None:
        require_params(self.name, self.searchspace)
        self.num_trials = require_num_trials(self.name, self.num_trials)
        self.seed = resolve_seed(self.seed, self.trial_store)
        optuna = self._optuna = optuna_bridge.load_optuna(self.name, torch=self.torch)
        self._dists = optuna_bridge.distributions(optuna, self.searchspace)
        direction = "maximize" if self.direction == "max" else "minimize"
        with optuna_bridge.quiet():
            self._study = optuna.create_study(direction=direction,
                                              sampler=self._ledger_sampler())
        self._number, self._count, self._results = {}, 0, 0
        self._seen = set()
        for trial in self.trial_store.values():
            self._seen.add(config_key(trial.params))
            self._record(trial)
        self._cursor = len(self.final_store)

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        self._sync()
        index = self.created
        if index >= self.num_trials:
            return None
        draw = random.Random(f"{self.seed}:{index}:mode").random()
        if index < self.num_warmup_trials or self._results == 0:
            params, number, kind = self._random(index), None, "warmup"
        elif draw < self.random_fraction:
            params, number, kind = self._random(index), None, "random"
        else:
            with optuna_bridge.quiet():
                params, number = self._ask_model()
            kind = "model"
            if config_key(params) in self._seen:
                if number is not None:
                    self._tell(number, None)  # the duplicate never runs
                params, number, kind = self._random(index), None, "random"
        if number is None:
            number = self._add(params, self._optuna.trial.TrialState.RUNNING)
        new = self.create_trial(params, sample_type=kind, seed=self.seed)
        self._number[new] = number
        self._seen.add(config_key(params))
        return new

    # -- the ledger ---------------------------------------------------------------------
    def _random(self, index: int) -> Dict[str, Any]:
        return sample_unseen(self.searchspace, self.seed, index, self._seen)

    def _add(self, params: Dict[str, Any], state: Any, value: Optional[float] = None
             ) -> Optional[int]:
        """Put a trial into the ledger; its number, or None if it does not fit the space."""
        encoded = optuna_bridge.encode(self.searchspace, self._dists, params)
        if encoded is None:
            return None
        oparams, odists = encoded
        frozen = self._optuna.trial.create_trial(state=state, params=oparams,
                                                 distributions=odists, value=value)
        with optuna_bridge.quiet():
            self._study.add_trial(frozen)
        self._count += 1
        if value is not None:
            self._results += 1
        return self._count - 1

    def _record(self, trial: Trial) -> None:
        """Add a trial found in the stores (resume) to the ledger."""
        states = self._optuna.trial.TrialState
        if not trial.done:
            number = self._add(trial.params, states.RUNNING)
            if number is not None:
                self._number[trial] = number
        elif optuna_bridge.usable(trial.final_metric):
            self._add(trial.params, states.COMPLETE, float(trial.final_metric))
        else:
            self._add(trial.params, states.FAIL)

    def _sync(self) -> None:
        """Tell the ledger the results of the trials that ended since the last call."""
        for ended in self.final_store[self._cursor:]:
            number = self._number.pop(ended, None)
            if number is not None:
                value = ended.final_metric
                self._tell(number, float(value) if optuna_bridge.usable(value) else None)
        self._cursor = len(self.final_store)

    def _tell(self, number: int, value: Optional[float]) -> None:
        states = self._optuna.trial.TrialState
        with optuna_bridge.quiet():
            if value is None:
                self._study.tell(number, state=states.FAIL)
            else:
                self._study.tell(number, value)
                self._results += 1

    def _completed(self) -> List[Any]:
        states = self._optuna.trial.TrialState
        return self._study.get_trials(deepcopy=False, states=(states.COMPLETE,))

    def _running(self) -> List[Any]:
        states = self._optuna.trial.TrialState
        return self._study.get_trials(deepcopy=False, states=(states.RUNNING,))


class TPE(ModelSearch):
    """Tree-structured Parzen estimator (Optuna's ``TPESampler``), asynchronous-aware.

    Running trials are accounted for by Optuna's own constant liar (``impute_strategy``
    ``"cl_worst"``, the default: each running trial counts as a bad result) or ignored
    (``"none"``). Further options: ``gamma`` (0 < x <= 1, default Optuna's rule): the
    share of results modelled as good, capped at 25 trials; ``n_samples`` (int >= 1,
    default 24): candidates scored per suggestion (Optuna's ``n_ei_candidates``);
    ``multivariate`` (bool; default None: Optuna's default): model parameters jointly.
    Conditional parameters are modelled only on the trials where they exist.
    """

    name = "tpe"

    def __init__(self, num_warmup_trials: int = 10, random_fraction: float = 0.1,
                 impute_strategy: str = "cl_worst", gamma: Optional[float] = None,
                 n_samples: int = 24, multivariate: Optional[bool] = None, **kwargs: Any):
        reject_options("tpe", kwargs, ["num_warmup_trials", "random_fraction",
                                       "impute_strategy", "gamma", "n_samples",
                                       "multivariate"])
        if gamma is not None:
            gamma = check_fraction("tpe", "gamma", gamma, low_open=True)
        self.gamma = gamma
        self.n_samples = check_count("tpe", "n_samples", n_samples, minimum=1)
        if multivariate is not None and not isinstance(multivariate, bool):
            raise ConfigError(f"tpe: multivariate must be True or False, got {multivariate!r}")
        self.multivariate = multivariate
        super().__init__(num_warmup_trials, random_fraction, impute_strategy,
                         gamma=gamma, n_samples=n_samples, multivariate=multivariate)

    def _ledger_sampler(self) -> Any:
        options: Dict[str, Any] = dict(
            seed=int_seed(self.seed), n_startup_trials=0, n_ei_candidates=self.n_samples,
            constant_liar=self.impute_strategy == "cl_worst", warn_independent_sampling=False)
        if self.multivariate is not None:
            options["multivariate"] = self.multivariate
        if self.gamma is not None:
            share = self.gamma
            options["gamma"] = lambda n: min(int(math.ceil(share * n)), 25)
        return self._optuna.samplers.TPESampler(**options)

    def _ask_model(self) -> Tuple[Dict[str, Any], Optional[int]]:
        otrial = self._study.ask()
        self._count += 1
        return optuna_bridge.suggest(self.searchspace, self._dists, otrial), otrial.number


class GP(ModelSearch):
    """Gaussian-process Bayesian optimization (Optuna's ``GPSampler``; needs torch and
    scipy), asynchronous-aware through its own constant liar.

    ``impute_strategy`` picks the value each running trial is told in the study the model
    is fitted on: ``"cl_worst"`` (default: the worst observed result under
    ``direction``), ``"cl_best"``, ``"cl_mean"``, ``"cl_min"`` / ``"cl_max"`` (the
    smallest / largest observed result, Maggy's names), or ``"none"`` (running trials are
    ignored, so parallel workers may get near-identical points). An answer repeating a
    trial is told the worst observed result and the GP asked again, up to
    :data:`REPEAT_ASKS` asks in all, before a random draw replaces it (``sample_type``
    ``random``). Conditional parameters that are not always active are drawn at random by
    the sampler (a GP models a fixed set of dimensions).
    """

    name = "gp"
    impute_strategies = ("cl_worst", "cl_best", "cl_mean", "cl_min", "cl_max", "none")
    torch = True

    def __init__(self, num_warmup_trials: int = 10, random_fraction: float = 0.1,
                 impute_strategy: str = "cl_worst", **kwargs: Any):
        reject_options("gp", kwargs, ["num_warmup_trials", "random_fraction",
                                      "impute_strategy"])
        super().__init__(num_warmup_trials, random_fraction, impute_strategy)
        self._sampler: Any = None

    def _ledger_sampler(self) -> Any:
        # The ledger only records; the GP is asked on a copy (see _ask_model).
        gp_sampler = self._optuna.samplers.GPSampler
        options: Dict[str, Any] = dict(seed=int_seed(self.seed), n_startup_trials=0)
        if "warn_independent_sampling" in inspect.signature(gp_sampler).parameters:
            options["warn_independent_sampling"] = False  # Optuna >= 4.5; older never warn
        self._sampler = gp_sampler(**options)
        return self._optuna.samplers.RandomSampler(seed=int_seed(self.seed))

    def _lie(self, values: List[float]) -> float:
        worst, best = (min, max) if self.direction == "max" else (max, min)
        return {"cl_worst": worst, "cl_best": best, "cl_min": min, "cl_max": max,
                "cl_mean": statistics.fmean}[self.impute_strategy](values)

    def _ask_model(self) -> Tuple[Dict[str, Any], Optional[int]]:
        optuna = self._optuna
        completed = self._completed()
        values = [t.value for t in completed]
        trials = list(completed)
        if self.impute_strategy != "none":
            lie = self._lie(values)
            trials += [optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                 value=lie) for t in self._running()]
        study = optuna.create_study(direction=self._study.direction, sampler=self._sampler)
        study.add_trials(trials)
        worst = max(values) if self.direction != "max" else min(values)
        for _ in range(REPEAT_ASKS):
            otrial = study.ask()
            params = optuna_bridge.suggest(self.searchspace, self._dists, otrial)
            if config_key(params) not in self._seen:
                break
            study.tell(otrial, worst)  # a repeat: not worth proposing again
        return params, None
