"""Asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020).

Rung ``k`` runs with budget ``resource_min * reduction_factor**k`` capped at
``resource_max``; the top rung is the first whose budget reaches ``resource_max``. A trial
of rung ``k`` is promoted (re-run with the same params at rung ``k + 1``) once it ranks in
the top ``floor(n_k / reduction_factor)`` of the ``n_k`` finished trials of its rung.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Set

from ..errors import ConfigError
from ..trial import Trial
from .base import AbstractOptimizer, Suggestion
from .randomsearch import (
    reject_options,
    require_num_trials,
    require_params,
    resolve_seed,
    sample_config,
)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _metric(trial: Trial) -> Optional[float]:
    """The trial's final metric, or None if it has none usable (missing or NaN)."""
    value = trial.final_metric
    return None if value is None or value != value else value


class Asha(AbstractOptimizer):
    """ASHA over ``num_trials`` base-rung configurations.

    Options (Maggy's names): ``reduction_factor`` (int >= 2, default 2), ``resource_min``
    and ``resource_max`` (``0 < resource_min < resource_max``, defaults 1 and 4).

    ``get_suggestion`` answers, in order of preference:

    1. a promotion, searched from the highest promotable rung down: the best trial of rung
       ``k`` that ranks in the top ``floor(n_k / reduction_factor)`` of rung ``k``'s
       finished trials (``n_k`` counts every finished trial; early-stopped and failed ones
       rank by their ``final_metric``; a trial without one is never promoted) and has no
       promoted child yet;
    2. a new random configuration at rung 0 while fewer than ``num_trials`` exist;
    3. :data:`IDLE` while any trial is still running (its end may allow a promotion);
    4. ``None``.

    Every trial's ``info_dict`` holds ``{"rung": k, "parent": trial_id_or_None}`` and its
    ``budget`` is the rung's resource. All state is derived from ``trial_store`` (a trial is
    "already promoted" when some trial names it as parent), so resume needs nothing else.
    Assumes the driver stores every suggested trial before asking again.
    """

    uses_budget = True
    #: The name error messages use (subclasses with their own name override it).
    name = "asha"

    def __init__(self, reduction_factor: int = 2, resource_min: float = 1,
                 resource_max: float = 4, **kwargs: Any):
        reject_options(self.name, kwargs, ["reduction_factor", "resource_min", "resource_max"])
        eta = reduction_factor
        if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
            raise ConfigError(f"{self.name}: reduction_factor must be an integer >= 2, "
                              f"got {eta!r}; set reduction_factor=2 or more")
        for name, value in (("resource_min", resource_min), ("resource_max", resource_max)):
            if not _is_number(value) or value <= 0:
                raise ConfigError(f"{self.name}: {name} must be a number above 0, got {value!r}")
        if not resource_min < resource_max:
            raise ConfigError(f"{self.name}: resource_min ({resource_min!r}) must be below "
                              f"resource_max ({resource_max!r}); lower resource_min or raise "
                              "resource_max")
        super().__init__(reduction_factor=eta, resource_min=resource_min,
                         resource_max=resource_max)
        self.reduction_factor = eta
        self.resource_min = resource_min
        self.resource_max = resource_max
        #: Index of the top rung: the first whose budget reaches resource_max.
        self.max_rung = 0
        while resource_min * eta ** self.max_rung < resource_max:
            self.max_rung += 1

    def budget(self, rung: int) -> float:
        """The resource a trial of ``rung`` runs with."""
        return min(self.resource_min * self.reduction_factor ** rung, self.resource_max)

    def validate(self, searchspace: Any) -> None:
        require_params(self.name, searchspace)

    def initialize(self) -> None:
        require_params(self.name, self.searchspace)
        self.num_trials = require_num_trials(self.name, self.num_trials)
        self.seed = resolve_seed(self.seed, self.trial_store)

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        rungs: List[List[Trial]] = [[] for _ in range(self.max_rung + 1)]
        promoted: Set[str] = set()
        for t in self.trial_store.values():
            rung = min(int(t.info_dict.get("rung", 0)), self.max_rung)
            rungs[rung].append(t)
            if t.info_dict.get("parent") is not None:
                promoted.add(t.info_dict["parent"])

        for rung in range(self.max_rung - 1, -1, -1):
            parent = self._promotable(rungs[rung], promoted)
            if parent is not None:
                return self.create_trial(parent.params, sample_type="promoted",
                                         run_budget=self.budget(rung + 1), rung=rung + 1,
                                         parent=parent.trial_id, seed=self.seed)

        base = len(rungs[0])
        if base < self.num_trials:
            params = sample_config(self.searchspace, self.seed, base)
            return self.create_trial(params, sample_type="random", run_budget=self.budget(0),
                                     rung=0, parent=None, seed=self.seed)

        if any(not t.done for t in self.trial_store.values()):
            return self.IDLE
        return None

    def _promotable(self, rung_trials: List[Trial], promoted: Set[str]) -> Optional[Trial]:
        """The best not-yet-promoted trial in the top 1/eta of this rung's finished ones."""
        finished = [t for t in rung_trials if t.done]
        top = len(finished) // self.reduction_factor
        scored = [t for t in finished if _metric(t) is not None]
        # Stable sort: ties keep trial_store order, so the choice is reproducible.
        scored.sort(key=_metric, reverse=self.direction == "max")
        for t in scored[:top]:
            if t.trial_id not in promoted:
                return t
        return None
