"""Hyperband (Li et al., JMLR 2018) and BOHB (Falkner et al., ICML 2018).

Budgets follow ASHA's options: rung ``k`` runs with ``resource_min * reduction_factor**k``
capped at ``resource_max``; ``s_max`` is the first rung whose budget reaches
``resource_max``. Bracket ``s`` (``s_max`` down to 0, then again) starts
``n = ceil((s_max + 1) / (s + 1) * eta**s)`` configurations at rung ``s_max - s`` and keeps
the best ``floor(n_i / eta)`` of each of its rungs for the next one (synchronous successive
halving), so its last rung runs at ``resource_max``. While a bracket waits for its rung to
finish, the next bracket starts, so workers stay busy.
"""

from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional, Tuple

from ..trial import Trial
from . import optuna_bridge
from .asha import Asha
from .base import Suggestion
from .bayes import check_count, check_fraction, config_key, int_seed, sample_unseen
from .randomsearch import reject_options

OPTIONS = ["reduction_factor", "resource_min", "resource_max"]


def _metric(trial: Trial) -> Optional[float]:
    value = trial.final_metric
    return float(value) if optuna_bridge.usable(value) else None


class Hyperband(Asha):
    """Hyperband over brackets of successive halving.

    Options (as ASHA's): ``reduction_factor`` (eta, int >= 2, default 2),
    ``resource_min`` and ``resource_max`` (defaults 1 and 4). Brackets are started (in
    order ``s_max .. 0``, cyclically) while fewer than ``num_trials`` configurations have
    been sampled; a started bracket always runs in full, so the total number of trials
    exceeds ``num_trials`` by the promotions (and the last bracket's extra configurations).

    Each trial's ``info_dict`` holds ``bracket`` (a running count), ``s``, ``rung`` (the
    absolute rung, as in ASHA) and ``parent``; its ``budget`` is its rung's resource. A
    rung's survivors are ranked by ``final_metric`` under ``direction``; a trial without
    a usable metric is never promoted, so a rung may keep fewer. All state is derived
    from ``trial_store``, so resume needs nothing else.
    """

    name = "hyperband"

    def __init__(self, reduction_factor: int = 2, resource_min: float = 1,
                 resource_max: float = 4, **kwargs: Any):
        reject_options(self.name, kwargs, self._option_names())
        super().__init__(reduction_factor, resource_min, resource_max)
        self.s_max = self.max_rung
        self._seen: set = set()

    def _option_names(self) -> List[str]:
        return list(OPTIONS)

    # -- the plan -----------------------------------------------------------------------
    def bracket_s(self, bracket: int) -> int:
        """The ``s`` of the bracket-th bracket (``s_max`` first)."""
        return self.s_max - bracket % (self.s_max + 1)

    def rung_sizes(self, s: int) -> List[int]:
        """How many trials each rung of bracket ``s`` runs, lowest rung first."""
        eta = self.reduction_factor
        sizes = [int(math.ceil((self.s_max + 1) / (s + 1) * eta ** s))]
        for _ in range(s):
            sizes.append(sizes[-1] // eta)
        return sizes

    def plan(self) -> List[Tuple[int, List[Tuple[int, float]]]]:
        """``[(s, [(trials, budget) per rung])]`` for one pass over the brackets."""
        return [(s, [(n, self.budget(self.s_max - s + i))
                     for i, n in enumerate(self.rung_sizes(s))])
                for s in range(self.s_max, -1, -1)]

    # -- the contract -------------------------------------------------------------------
    def initialize(self) -> None:
        super().initialize()
        self._seen = {config_key(t.params) for t in self.trial_store.values()}

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        brackets: Dict[int, List[List[Trial]]] = {}
        promoted = set()
        base = 0
        for t in self.trial_store.values():
            b = int(t.info_dict.get("bracket", 0))
            s = self.bracket_s(b)
            rungs = brackets.setdefault(b, [[] for _ in range(s + 1)])
            rungs[int(t.info_dict["rung"]) - (self.s_max - s)].append(t)
            if t.info_dict.get("parent") is not None:
                promoted.add(t.info_dict["parent"])
            else:
                base += 1
        for b in sorted(brackets):
            answer = self._advance(b, brackets[b], promoted, base)
            if answer is not None:
                return answer
        if base < self.num_trials:
            return self._new_trial(len(brackets), base)
        if any(not t.done for t in self.trial_store.values()):
            return self.IDLE
        return None

    def _advance(self, bracket: int, rungs: List[List[Trial]], promoted: set,
                 base: int) -> Optional[Trial]:
        """The next trial of this bracket, or None if it has none to run now."""
        s = self.bracket_s(bracket)
        sizes = self.rung_sizes(s)
        if len(rungs[0]) < sizes[0]:
            return self._new_trial(bracket, base)
        for i in range(s):
            below, above = rungs[i], rungs[i + 1]
            if len(above) >= sizes[i + 1] or not all(t.done for t in below):
                continue
            ranked = sorted((t for t in below if _metric(t) is not None), key=_metric,
                            reverse=self.direction == "max")
            for parent in ranked[:sizes[i + 1]]:
                if parent.trial_id not in promoted:
                    rung = self.s_max - s + i + 1
                    return self.create_trial(parent.params, sample_type="promoted",
                                             run_budget=self.budget(rung), bracket=bracket,
                                             s=s, rung=rung, parent=parent.trial_id,
                                             seed=self.seed)
        return None

    def _new_trial(self, bracket: int, base: int) -> Trial:
        s = self.bracket_s(bracket)
        rung = self.s_max - s
        params, kind = self._new_config(base, self.budget(rung))
        self._seen.add(config_key(params))
        return self.create_trial(params, sample_type=kind, run_budget=self.budget(rung),
                                 bracket=bracket, s=s, rung=rung, parent=None,
                                 seed=self.seed)

    def _new_config(self, index: int, budget: float) -> Tuple[Dict[str, Any], str]:
        """The index-th new configuration (index counts every bracket's first rung)."""
        return self._random(index), "random"

    def _random(self, index: int) -> Dict[str, Any]:
        return sample_unseen(self.searchspace, self.seed, index, self._seen)


class BOHB(Hyperband):
    """Hyperband whose new configurations come from a model (BOHB).

    A configuration is drawn at random with probability ``random_fraction`` (default
    1/3, as in the BOHB paper), or while no budget has ``min_points_in_model`` usable
    results (default: number of parameters + 1). Otherwise Optuna's multivariate TPE is
    fitted on the results of the largest such budget (trials still running at that budget
    count as bad results, a constant liar) and proposes it. The model is rebuilt from
    ``trial_store`` at each new configuration, so resume needs nothing else; each draw is
    seeded by the run's seed and the configuration's index.
    Options: Hyperband's plus ``random_fraction``, ``min_points_in_model``, ``n_samples``
    (candidates per proposal, default 24).
    """

    name = "bohb"

    def __init__(self, reduction_factor: int = 2, resource_min: float = 1,
                 resource_max: float = 4, random_fraction: float = 1 / 3,
                 min_points_in_model: Optional[int] = None, n_samples: int = 24,
                 **kwargs: Any):
        super().__init__(reduction_factor, resource_min, resource_max, **kwargs)
        self.random_fraction = check_fraction("bohb", "random_fraction", random_fraction)
        if min_points_in_model is not None:
            check_count("bohb", "min_points_in_model", min_points_in_model, minimum=1)
        self.min_points_in_model = min_points_in_model
        self.n_samples = check_count("bohb", "n_samples", n_samples, minimum=1)
        self.config_kwargs.update(random_fraction=random_fraction,
                                  min_points_in_model=min_points_in_model,
                                  n_samples=n_samples)
        self._optuna: Any = None

    def _option_names(self) -> List[str]:
        return OPTIONS + ["random_fraction", "min_points_in_model", "n_samples"]

    def validate(self, searchspace: Any) -> None:
        super().validate(searchspace)
        optuna_bridge.load_optuna(self.name)

    def initialize(self) -> None:
        super().initialize()
        self._optuna = optuna_bridge.load_optuna(self.name)

    def _new_config(self, index: int, budget: float) -> Tuple[Dict[str, Any], str]:
        if random.Random(f"{self.seed}:{index}:mode").random() < self.random_fraction:
            return self._random(index), "random"
        needed = self.min_points_in_model or len(self.searchspace) + 1
        by_budget: Dict[float, List[Trial]] = {}
        for t in self.trial_store.values():
            by_budget.setdefault(t.budget, []).append(t)
        usable = [b for b, ts in by_budget.items()
                  if sum(1 for t in ts if t.done and _metric(t) is not None) >= needed]
        if not usable:
            return self._random(index), "random"
        with optuna_bridge.quiet():
            params = self._propose(by_budget[max(usable)], index)
        if config_key(params) in self._seen:
            return self._random(index), "random"
        return params, "model"

    def _propose(self, trials: List[Trial], index: int) -> Dict[str, Any]:
        optuna = self._optuna
        states = optuna.trial.TrialState
        dists = optuna_bridge.distributions(optuna, self.searchspace)
        sampler = optuna.samplers.TPESampler(
            seed=int_seed(f"{self.seed}:{index}"), n_startup_trials=0, multivariate=True,
            constant_liar=True, n_ei_candidates=self.n_samples,
            warn_independent_sampling=False)
        study = optuna.create_study(direction="maximize" if self.direction == "max"
                                    else "minimize", sampler=sampler)
        frozen = []
        for t in trials:
            encoded = optuna_bridge.encode(self.searchspace, dists, t.params)
            if encoded is None:
                continue
            value = _metric(t)
            state = states.RUNNING if not t.done else \
                states.COMPLETE if value is not None else states.FAIL
            frozen.append(optuna.trial.create_trial(state=state, params=encoded[0],
                                                    distributions=encoded[1], value=value
                                                    if state == states.COMPLETE else None))
        study.add_trials(frozen)
        return optuna_bridge.suggest(self.searchspace, dists, study.ask())
