"""Leave One Component Out: the base trial, then one trial without each component."""

from __future__ import annotations

from typing import Any, Dict, List

from ..optimizers.randomsearch import reject_options
from .ablator import FEATURE, GROUP, LAYER, MODEL, AbstractAblator


class LOCO(AbstractAblator):
    """``n + 1`` trials for a study of ``n`` components: the base (``{}``), then each
    feature, layer, layer group and custom model in the order the study included them.
    Takes no options."""

    def __init__(self, ablation_study: Any = None, **kwargs: Any):
        reject_options("loco", kwargs, [])
        super().__init__(ablation_study)

    def get_trials(self) -> List[Dict[str, Any]]:
        study = self.ablation_study
        layers = study.model.layers
        return ([{}]
                + [{FEATURE: name} for name in study.features.included_features]
                + [{LAYER: name} for name in layers.included_layers]
                + [{GROUP: group.label} for group in layers.included_groups]
                + [{MODEL: name} for name in study.model.custom_model_names])
