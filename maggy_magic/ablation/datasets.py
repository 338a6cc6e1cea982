"""The dataset function a trial's training function calls: the study's dataset generator,
told which features the trial leaves out only when its signature asks for them.

The generator receives what it asks for:

- a parameter named ``ablated_features`` gets the list of features the trial leaves out
  (empty in the base trial);
- Maggy's ``ablated_feature`` gets the one feature left out (``None`` in the base trial;
  the list, should a trial leave out several);
- either one as the generator's first parameter is passed first, positionally, so
  ``generator(ablated_features, epochs)`` is called as ``dataset_function(epochs)``; named
  later (``generator(epochs, batch_size, ablated_feature=None)``) it is passed by keyword;
- a generator that names neither (Maggy's ``create_tf_dataset(num_epochs, batch_size)``)
  gets exactly the arguments the training function passes. Such a generator cannot leave
  features out, so a study that ablates features with it is refused (:func:`check`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, List, Optional, Tuple

from ..errors import AblationError

#: The parameter names through which a generator hears of the left-out features.
NAMES = ("ablated_features", "ablated_feature")


def feature_parameter(generator: Callable[..., Any]) -> Optional[Tuple[str, bool]]:
    """``(name, first)``: the parameter of ``generator`` that takes the left-out features
    and whether it is the first positional one; None when it has none (or its signature
    cannot be read, e.g. a builtin: then it is called as the training function calls it)."""
    try:
        parameters = list(inspect.signature(generator).parameters.values())
    except (TypeError, ValueError):
        return None
    for index, parameter in enumerate(parameters):
        if parameter.name in NAMES and parameter.kind in (
                parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD,
                parameter.KEYWORD_ONLY):
            first = index == 0 and parameter.kind != parameter.KEYWORD_ONLY
            return parameter.name, first
    return None


def check(generator: Callable[..., Any], features: List[str]) -> None:
    """Raise an :class:`AblationError` when the study leaves out ``features`` but the
    generator cannot be told which (every feature trial would train on the base data)."""
    if features and feature_parameter(generator) is None:
        name = getattr(generator, "__name__", "the dataset generator")
        raise AblationError(
            f"the study ablates features ({', '.join(features)}) but its dataset generator "
            f"{name}() takes no ablated_features parameter, so it cannot leave them out; "
            "add one (the list of features to leave out; Maggy's ablated_feature, one "
            "name or None, works too)")


class DatasetFunction:
    """``dataset_function(*args, **kwargs)`` of one trial: ``generator`` called with
    ``args``/``kwargs`` and, as the module docstring says, the left-out ``features``."""

    def __init__(self, generator: Callable[..., Any], features: List[str]):
        self.generator, self.features = generator, list(features)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        found = feature_parameter(self.generator)
        if found is None:
            return self.generator(*args, **kwargs)
        name, first = found
        value: Any = list(self.features)
        if name == "ablated_feature":
            value = None if not value else value[0] if len(value) == 1 else value
        if first:
            return self.generator(value, *args, **kwargs)
        return self.generator(*args, **{**kwargs, name: value})
