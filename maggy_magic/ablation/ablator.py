"""The ablator contract: an optimizer whose trials each leave components out.

An ablator is an :class:`~maggy_magic.optimizers.base.AbstractOptimizer`, so the one
driver runs it like any search. Its trials carry small JSON parameters that name what
the trial leaves out; the experiment's trial function (:mod:`.runner`) turns them into
the trial's model and dataset on the worker:

- ``{}``: the base trial, every component kept;
- ``{"ablated_feature": "f"}`` (or a list of names): the dataset without those features;
- ``{"ablated_layer": "l"}`` (or a list): the base model without those layers;
- ``{"ablated_group": "label"}``: the base model without a layer group of the study
  (``a+b`` or ``prefix*``, see :class:`~.study.LayerGroup`), or a list of layer names;
- ``{"custom_model": "name"}``: a custom model generator of the study instead of the base.

Keys combine (a feature and a layer left out in one trial). Other keys reach the training
function by name, like hyperparameters.
"""

from __future__ import annotations

import abc
from typing import Any, Dict, List, Optional, Tuple

from ..errors import AblationError
from ..optimizers.base import AbstractOptimizer, Suggestion
from ..trial import Trial

FEATURE, LAYER, GROUP, MODEL = "ablated_feature", "ablated_layer", "ablated_group", \
    "custom_model"
#: Trial parameter → the kind of component it leaves out.
KINDS: Dict[str, str] = {FEATURE: "feature", LAYER: "layer", GROUP: "layer group",
                         MODEL: "custom model"}
BASE = "base"


def describe(params: Dict[str, Any]) -> Tuple[str, str]:
    """``(kind, label)`` of what a trial with ``params`` leaves out; ``("base", "base")``
    for the base trial, ``("combination", "a & b")`` when several keys are set."""
    parts = []
    for key, kind in KINDS.items():
        if key in params and params[key] not in (None, [], ""):
            value = params[key]
            many = isinstance(value, (list, tuple))
            label = "+".join(map(str, value)) if many else str(value)
            parts.append((kind, label))
    if not parts:
        return BASE, BASE
    if len(parts) == 1:
        return parts[0]
    return "combination", " & ".join(label for _, label in parts)


class AbstractAblator(AbstractOptimizer):
    """Decides which ablation trials run (Maggy's ``AbstractAblator``).

    Contract, on top of :class:`AbstractOptimizer`'s (one thread, stores read-only,
    progress derived from ``trial_store`` so resume works):

    - ``ablation_study`` is the :class:`~.study.AblationStudy` (set before ``initialize``).
    - ``get_trials()`` returns every trial's parameters (see the module docstring), in the
      order they should run, the base trial ``{}`` first. The default ``initialize`` and
      ``get_suggestion`` hand them out in that order, each once, recording its position
      in ``info_dict["ablation_index"]`` and what it leaves out in
      ``info_dict["component"]`` / ``info_dict["component_kind"]`` (results and displays
      read those). Override ``get_suggestion`` (and set ``prefetch = False``) for an
      ablator that decides from results.
    """

    #: The trial list does not depend on results: workers may queue their next trial.
    prefetch = True

    def __init__(self, ablation_study: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.ablation_study = ablation_study
        self._plan: List[Dict[str, Any]] = []
        self._taken: set = set()
        self._cursor = 0

    @abc.abstractmethod
    def get_trials(self) -> List[Dict[str, Any]]:
        """The parameters of every trial, base first."""

    def get_number_of_trials(self) -> int:
        """How many trials the study gives (Maggy's name)."""
        return len(self.get_trials())

    def initialize(self) -> None:
        plan = self.get_trials()
        if not isinstance(plan, (list, tuple)) or not all(isinstance(p, dict) for p in plan):
            raise AblationError(f"{type(self).__name__}.get_trials() must return a list of "
                                "parameter dicts (base first: {})")
        self._plan = [dict(p) for p in plan]
        self.num_trials = len(self._plan)
        self._taken = {t.info_dict.get("ablation_index") for t in self.trial_store.values()}
        self._cursor = 0

    def get_suggestion(self, trial: Optional[Trial] = None) -> Suggestion:
        while self._cursor < len(self._plan):
            index = self._cursor
            self._cursor += 1
            if index not in self._taken:
                return self.create_ablation_trial(self._plan[index], index)
        return None

    def create_ablation_trial(self, params: Dict[str, Any], index: int) -> Trial:
        """A trial for ``params`` with the info results and displays read."""
        kind, label = describe(params)
        created = self.create_trial(params, sample_type="ablation", ablation_index=index,
                                    component=label, component_kind=kind)
        created.trial_type = "ablation"
        return created
