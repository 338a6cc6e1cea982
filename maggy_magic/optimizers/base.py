"""The optimizer contract (Maggy-compatible ``AbstractOptimizer``)."""

from __future__ import annotations

import abc
from typing import Any, Dict, List, Optional, Union

from ..trial import Trial

#: What ``get_suggestion`` may answer.
Suggestion = Union[Trial, Dict[str, Any], str, None]


class AbstractOptimizer(abc.ABC):
    """Decides which trial runs next.

    Contract:

    - Every method is called from the driver's loop thread only; no locking is needed.
    - Before ``initialize`` the driver sets ``searchspace``, ``num_trials``, ``direction``
      (``"max"`` or ``"min"``), ``seed``, ``trial_store`` (trial id → :class:`Trial`, every
      trial created so far, running or done) and ``final_store`` (finished trials, in the
      order they ended). Both stores are read-only for the optimizer. On resume they already
      hold the trials of the earlier run, so an optimizer must derive its progress from
      them rather than from private counters.
    - ``get_suggestion(trial)`` receives the trial that just ended (or ``None``) and answers
      a new :class:`Trial` (or a plain params dict), :data:`IDLE` when it has nothing to run
      now but may have once more trials end, or ``None`` when the experiment needs no more
      trials.
    - Each trial's ``info_dict`` is persisted in the journal; put there whatever the
      optimizer needs to rebuild its state on resume (rung, parent trial, grid index).
    """

    #: Answer of ``get_suggestion`` meaning "nothing to run right now, ask me later".
    IDLE = "IDLE"
    #: Whether the training function receives a ``budget`` argument.
    uses_budget = False
    #: Whether suggestions do not depend on results, so the driver may queue the next
    #: trial on a worker before the current one ends (hides the round trip per trial).
    prefetch = False

    #: Trials that must run together (the ranks of data-parallel training): with N > 1
    #: the driver takes N suggestions at a time and starts them at once on N idle workers;
    #: when one fails, all end and ``gang_failed`` decides what follows.
    gang_size = 1

    def __init__(self, **kwargs: Any):
        self.searchspace = None
        self.num_trials: Optional[int] = None
        self.direction: str = "max"
        self.seed: Optional[int] = None
        self.trial_store: Dict[str, Trial] = {}
        self.final_store: List[Trial] = []
        #: The run directory (set by the experiment before ``initialize``), for files.
        self.run_dir: Optional[str] = None
        self.config_kwargs = kwargs

    @abc.abstractmethod
    def initialize(self) -> None:
        """Prepare to suggest trials; the stores and settings are set by now."""

    @abc.abstractmethod
    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        """The next trial to run, :data:`IDLE`, or ``None`` when done."""

    def gang_failed(self, trials: List[Trial], error: str) -> Optional[str]:
        """A gang (``gang_size > 1``) failed: ``trials`` are its members, all ended.
        Answer None to go on (``get_suggestion`` may start a new gang) or the one-line
        message the run fails with."""
        return error

    def finalize_experiment(self, trials: List[Trial]) -> None:
        """Called once with every trial when the experiment ends."""

    def validate(self, searchspace) -> None:
        """Raise a :class:`~maggy_magic.errors.ConfigError` or
        :class:`~maggy_magic.errors.SearchspaceError` if this optimizer cannot search
        ``searchspace``. Called before any worker starts."""

    # -- helpers for subclasses ---------------------------------------------------------
    def create_trial(self, hparams: Dict[str, Any], sample_type: str = "random",
                     run_budget: Optional[float] = None, **info: Any) -> Trial:
        """A new trial for ``hparams``; ``info`` is kept in its ``info_dict``."""
        info_dict = {"sample_type": sample_type, **info}
        return Trial(hparams, info_dict=info_dict, budget=run_budget)

    def better(self, a: float, b: float) -> bool:
        """Whether metric ``a`` is strictly better than ``b`` under ``direction``."""
        return a > b if self.direction == "max" else a < b

    @property
    def created(self) -> int:
        """How many trials exist so far (this run and any resumed one)."""
        return len(self.trial_store)
