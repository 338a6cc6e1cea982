"""Grid search: every combination of the search space's discrete parameters, once each."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..trial import Trial
from .base import AbstractOptimizer, Suggestion
from .randomsearch import reject_options, require_params


class GridSearch(AbstractOptimizer):
    """Enumerates ``searchspace.grid()`` in its (stable) order, then answers ``None``.

    ``num_trials`` is ignored: the grid's size decides, and ``initialize`` overwrites
    ``num_trials`` with it so progress displays show the right total. DOUBLE parameters
    cannot be enumerated; ``validate`` raises the :class:`SearchspaceError` before any
    worker starts. Each trial's ``info_dict["grid_index"]`` is its position in the grid;
    on resume the next suggestion is the lowest index not yet in ``trial_store``.
    Takes no options.
    """

    prefetch = True

    def __init__(self, **kwargs: Any):
        reject_options("gridsearch", kwargs, [])
        super().__init__()
        self._grid: List[Dict[str, Any]] = []
        self._taken: set = set()
        self._cursor = 0

    def validate(self, searchspace: Any) -> None:
        require_params("gridsearch", searchspace)
        searchspace.grid()

    def initialize(self) -> None:
        self._grid = self.searchspace.grid()
        self.num_trials = len(self._grid)
        self._taken = {t.info_dict.get("grid_index") for t in self.trial_store.values()}
        self._cursor = 0

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        # indices below the cursor were suggested by this run; _taken by an earlier one
        while self._cursor < len(self._grid):
            index = self._cursor
            self._cursor += 1
            if index not in self._taken:
                return self.create_trial(self._grid[index], sample_type="grid",
                                         grid_index=index)
        return None
