"""Random search: ``num_trials`` independent draws from the search space.

The i-th trial is drawn from its own ``random.Random(f"{seed}:{i}")``, so a run is
reproducible from its seed and a resumed run creates exactly the missing trials, with the
parameters the uninterrupted run would have had.

The module also holds the few helpers the other optimizers share (seed resolution, the
per-index draw, option and ``num_trials`` checks).
"""

from __future__ import annotations

import random
from typing import Any, Dict, Iterable, Optional

from ..errors import ConfigError, SearchspaceError, did_you_mean
from ..trial import Trial
from .base import AbstractOptimizer, Suggestion


def reject_options(optimizer: str, options: Dict[str, Any], valid: Iterable[str]) -> None:
    """Raise :class:`ConfigError` naming the first option ``optimizer`` does not take."""
    if not options:
        return
    name = next(iter(options))
    valid = list(valid)
    hint = did_you_mean(name, valid) if valid else "it takes no options"
    raise ConfigError(f"optimizer {optimizer!r} has no option {name!r}; {hint}")


def require_num_trials(optimizer: str, num_trials: Any) -> int:
    """``num_trials`` as a positive int, or a :class:`ConfigError` saying what to set."""
    if isinstance(num_trials, bool) or not isinstance(num_trials, int) or num_trials < 1:
        raise ConfigError(f"optimizer {optimizer!r} needs num_trials set to a positive "
                          f"integer, got {num_trials!r}")
    return num_trials


def require_params(optimizer: str, searchspace: Any) -> None:
    """Raise :class:`SearchspaceError` if there is nothing to search."""
    if searchspace is None or len(searchspace) == 0:
        raise SearchspaceError(f"optimizer {optimizer!r} needs a non-empty search space; add "
                               "parameters or use optimizer='none' for a single run")


def resolve_seed(seed: Any, trial_store: Dict[str, Trial]) -> Any:
    """The seed to draw with: the configured one; else the one an earlier run recorded in
    its trials' ``info_dict["seed"]`` (so resume repeats it); else a fresh random one."""
    if seed is not None:
        return seed
    for trial in trial_store.values():
        if trial.info_dict.get("seed") is not None:
            return trial.info_dict["seed"]
    return random.SystemRandom().randrange(2 ** 31)


def sample_config(searchspace: Any, seed: Any, index: int) -> Dict[str, Any]:
    """The ``index``-th configuration of the reproducible stream named by ``seed``."""
    return searchspace.sample(random.Random(f"{seed}:{index}"))


class RandomSearch(AbstractOptimizer):
    """Suggests random configurations until ``num_trials`` trials exist, then ``None``.

    Progress is ``len(trial_store)``; each trial's ``info_dict`` holds ``{"index": i,
    "seed": seed}``, and the next trial takes the lowest index no trial in ``trial_store``
    has: a resumed run may have gaps (a trial queued on a worker that never started it is
    not in the journal). Assumes the driver stores every suggested trial before asking
    again. Takes no options.
    """

    prefetch = True

    def __init__(self, **kwargs: Any):
        reject_options("randomsearch", kwargs, [])
        super().__init__()
        self._taken: set = set()
        self._cursor = 0

    def validate(self, searchspace: Any) -> None:
        require_params("randomsearch", searchspace)

    def initialize(self) -> None:
        require_params("randomsearch", self.searchspace)
        self.num_trials = require_num_trials("randomsearch", self.num_trials)
        self.seed = resolve_seed(self.seed, self.trial_store)
        # indices below the cursor were suggested by this run; _taken by an earlier one
        self._taken = {t.info_dict.get("index") for t in self.trial_store.values()}
        self._cursor = 0

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        if len(self.trial_store) >= self.num_trials:
            return None
        while self._cursor in self._taken:
            self._cursor += 1
        index, self._cursor = self._cursor, self._cursor + 1
        params = sample_config(self.searchspace, self.seed, index)
        return self.create_trial(params, sample_type="random", index=index, seed=self.seed)
