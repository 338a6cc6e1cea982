"""Differential evolution (Storn & Price, 1997), strategy rand/1/bin, one generation at a time.

Every configuration is a vector in the unit cube, one coordinate per parameter:
DOUBLE and INTEGER map linearly (or logarithmically with ``"log"``) onto [0, 1];
DISCRETE and CATEGORICAL use ``floor(u * len(values))`` as the value's index. A trial
keeps its full vector in ``info_dict["vector"]``, including coordinates of conditional
parameters that are inactive in it, so they can come back in its offspring.
"""

from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional

from ..errors import ConfigError
from ..trial import Trial
from . import optuna_bridge
from .base import AbstractOptimizer, Suggestion
from .bayes import DEDUPE_TRIES, check_fraction, config_key
from .randomsearch import reject_options, require_num_trials, require_params, resolve_seed


def decode(searchspace: Any, vector: List[float]) -> Dict[str, Any]:
    """The configuration a unit-cube vector stands for (inactive parameters dropped)."""
    config: Dict[str, Any] = {}
    for p, u in zip(searchspace.params(), vector):
        u = min(1.0, max(0.0, u))
        if p.type == "DOUBLE":
            low, high = p.values
            value = math.exp(math.log(low) + u * math.log(high / low)) if p.log \
                else low + u * (high - low)
            config[p.name] = min(high, max(low, value))
        elif p.type == "INTEGER":
            low, high = p.values  # each integer gets an equal share (log: of log space)
            value = math.floor(math.exp(math.log(low) + u * math.log((high + 1) / low))) \
                if p.log else math.floor(low + u * (high + 1 - low))
            config[p.name] = min(high, max(low, int(value)))
        else:
            config[p.name] = p.values[min(len(p.values) - 1, int(u * len(p.values)))]
    return searchspace.prune(config) if searchspace.is_conditional else config


class DifferentialEvolution(AbstractOptimizer):
    """Differential evolution over ``num_trials`` trials in generations of ``population``.

    Options: ``population`` (int >= 4, default 10), ``mutation`` (F, 0 < F <= 2, default
    0.5), ``crossover`` (CR, 0..1, default 0.7). Generation 0 is ``population`` random
    vectors. In generation ``g > 0`` member ``i``'s trial is ``a + F * (b - c)`` (``a, b,
    c`` three other members of the current population), crossed with member ``i``
    coordinate-wise with probability CR (one coordinate always from the mutant); the
    member is replaced when its trial is at least as good under ``direction``. A trial
    without a usable metric never replaces its member; a member without one is replaced by
    any trial that has one. All trials of a generation may run in parallel; the next
    generation starts when all of them ended (``IDLE`` meanwhile). ``None`` once
    ``num_trials`` trials exist (the last generation may be partial).

    Each trial's ``info_dict`` holds ``generation``, ``member``, ``vector`` and ``seed``;
    the population is rebuilt from ``trial_store`` at each call, so resume needs nothing
    else. A trial whose params equal an earlier trial's is redrawn (mutation, then at
    random) up to a number of times before it is accepted.
    """

    name = "de"

    def __init__(self, population: int = 10, mutation: float = 0.5, crossover: float = 0.7,
                 **kwargs: Any):
        reject_options("de", kwargs, ["population", "mutation", "crossover"])
        if isinstance(population, bool) or not isinstance(population, int) or population < 4:
            raise ConfigError(f"de: population must be an integer >= 4 (rand/1 needs three "
                              f"other members), got {population!r}")
        ok = isinstance(mutation, (int, float)) and not isinstance(mutation, bool) \
            and 0 < mutation <= 2
        if not ok:
            raise ConfigError(f"de: mutation must be a number with 0 < F <= 2, got "
                              f"{mutation!r}")
        self.crossover = check_fraction("de", "crossover", crossover)
        super().__init__(population=population, mutation=mutation, crossover=crossover)
        self.population, self.mutation = population, float(mutation)

    def validate(self, searchspace: Any) -> None:
        require_params("de", searchspace)

    def initialize(self) -> None:
        require_params("de", self.searchspace)
        self.num_trials = require_num_trials("de", self.num_trials)
        self.seed = resolve_seed(self.seed, self.trial_store)

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        index = self.created
        if index >= self.num_trials:
            return None
        generations: Dict[int, Dict[int, Trial]] = {}
        for t in self.trial_store.values():
            generations.setdefault(int(t.info_dict["generation"]), {})[
                int(t.info_dict["member"])] = t
        gen = max(generations) if generations else 0
        current = generations.get(gen, {})
        if len(current) >= self.population:
            if not all(t.done for t in current.values()):
                return self.IDLE
            gen, current = gen + 1, {}
        elif gen > 0 and not all(t.done for t in generations[gen - 1].values()):
            return self.IDLE
        member = min(set(range(self.population)) - set(current))
        seen = {config_key(t.params) for t in self.trial_store.values()}
        rng = random.Random(f"{self.seed}:{gen}:{member}")
        dims = len(self.searchspace)
        if gen == 0:
            vector = [rng.random() for _ in range(dims)]
        else:
            members = self._population(generations, gen)
            vector = self._offspring(members, member, rng)
        params = decode(self.searchspace, vector)
        for _ in range(DEDUPE_TRIES):
            if config_key(params) not in seen:
                break
            vector = self._offspring(self._population(generations, gen), member, rng) \
                if gen > 0 and rng.random() < 0.5 else [rng.random() for _ in range(dims)]
            params = decode(self.searchspace, vector)
        return self.create_trial(params, sample_type="de", generation=gen, member=member,
                                 vector=vector, seed=self.seed)

    def _population(self, generations: Dict[int, Dict[int, Trial]], gen: int) -> List[Trial]:
        """Member i's survivor after generations ``0 .. gen - 1``."""
        members = list(generations[0][i] for i in range(self.population))
        for g in range(1, gen):
            for i, challenger in generations.get(g, {}).items():
                if self._replaces(challenger, members[i]):
                    members[i] = challenger
        return members

    def _replaces(self, challenger: Trial, incumbent: Trial) -> bool:
        new, old = challenger.final_metric, incumbent.final_metric
        if not optuna_bridge.usable(new):
            return False
        if not optuna_bridge.usable(old):
            return True
        return new == old or self.better(new, old)

    def _offspring(self, members: List[Trial], i: int, rng: random.Random) -> List[float]:
        others = [j for j in range(self.population) if j != i]
        a, b, c = (members[j].info_dict["vector"] for j in rng.sample(others, 3))
        target = members[i].info_dict["vector"]
        forced = rng.randrange(len(target))
        child = []
        for k, x in enumerate(target):
            if k == forced or rng.random() < self.crossover:
                value = a[k] + self.mutation * (b[k] - c[k])
                # bounce back into the cube instead of piling up on its faces
                if value < 0:
                    value = rng.uniform(0, a[k])
                elif value > 1:
                    value = rng.uniform(a[k], 1)
                child.append(value)
            else:
                child.append(x)
        return child
