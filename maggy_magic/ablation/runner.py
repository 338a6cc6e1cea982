"""What an ablation trial runs, and the checks made before any trial runs.

:func:`prepare` is called by the experiment in the kernel: it checks the training
function's arguments, builds the base model once and every layer / group ablation of it
once (so a removal that gives no valid model is refused before any trial), resolves the
prefix groups to layer names, and returns an :class:`AblationTrainFn`.

:class:`AblationTrainFn` is the callable the experiment serialises and every backend runs
unchanged through the ordinary worker loop: called with a trial's parameters (see
:mod:`.ablator`) and the reporter, it builds that trial's model and dataset generators
from the study and calls the user's training function with what it asks for by name:

- ``model_function`` / ``model``: a function returning the trial's Keras model (a new one
  per call) / one such model; ``None`` when the study has no model generator;
- ``dataset_function`` / ``dataset``: a function passing its arguments to the study's
  dataset generator after the features to leave out / its result called without
  arguments; ``None`` when the study has no dataset generator;
- ``component``: the label of what the trial leaves out (``"base"`` for the base trial);
- ``ablated_feature``, ``ablated_layer``, ``ablated_group``, ``custom_model``: the trial's
  parameters (``None`` when not set); ``reporter`` and ``hparams`` as in any experiment.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional

from ..errors import AblationError, TrainFunctionError
from .ablator import FEATURE, GROUP, LAYER, MODEL, describe
from .datasets import DatasetFunction

#: What an ablation training function can take by name, besides reporter and hparams.
INJECTED = ("model_function", "dataset_function", "model", "dataset", "component",
            FEATURE, LAYER, GROUP, MODEL)


class AblationTrainFn:
    """The user's training function ``func`` bound to ``study``; ``groups`` maps each
    layer-group label to its layer names (prefixes resolved in the kernel).

    Picklable (cloudpickle) as long as ``func`` and the study's generators are. ``func``
    is named like ``functools.partial.func``, so backends that look for the training
    function's module find the user's.
    """

    def __init__(self, func: Callable, study: Any, groups: Dict[str, List[str]]):
        self.func = func
        self.study = study
        self.groups = dict(groups)
        self.__name__ = getattr(func, "__name__", "train")
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self.__doc__ = getattr(func, "__doc__", None)

    def __call__(self, reporter: Any = None, **params: Any) -> Any:
        from ..trainfn import build_kwargs, call_plan

        plan = call_plan(self.func)
        named = plan[0] if plan else ()
        model_function = self.model_function(params)
        dataset_function = self.dataset_function(params)
        extras: Dict[str, Any] = {key: None for key in (FEATURE, LAYER, GROUP, MODEL)}
        extras.update(model_function=model_function, dataset_function=dataset_function,
                      component=describe(params)[1])
        if "model" in named:
            extras["model"] = model_function() if model_function is not None else None
        if "dataset" in named:
            extras["dataset"] = dataset_function() if dataset_function is not None else None
        return self.func(**build_kwargs(self.func, params, reporter, extras=extras,
                                        plan=plan))

    # -- the trial's generators ----------------------------------------------------------
    def layers_of(self, params: Dict[str, Any]) -> List[str]:
        """The layers a trial removes: its ``ablated_layer`` and ``ablated_group``."""
        layers = _as_list(params.get(LAYER))
        group = params.get(GROUP)
        if isinstance(group, str):
            if group not in self.groups:
                known = ", ".join(self.groups) or "none"
                raise AblationError(f"the study has no layer group {group!r} (its groups: "
                                    f"{known}); name a group of the study or list its layers")
            layers += self.groups[group]
        else:
            layers += _as_list(group)
        return list(dict.fromkeys(layers))

    def model_function(self, params: Dict[str, Any]) -> Optional[Callable[[], Any]]:
        """A function returning the trial's model, or None without a model generator."""
        model = self.study.model
        custom = params.get(MODEL)
        layers = self.layers_of(params)
        if custom:
            if layers:
                raise AblationError(f"a trial cannot remove layers {layers} from the custom "
                                    f"model {custom!r}; give it one of the two")
            return model.custom_model_generator(custom)
        generator = model.base_model_generator
        if not layers:
            return generator
        if generator is None:
            raise AblationError("the study ablates layers but has no base model; call "
                                "study.model.set_base_model_generator(fn)")
        return _WithoutLayers(generator, layers)

    def dataset_function(self, params: Dict[str, Any]) -> Optional[Callable[..., Any]]:
        """A function returning the trial's data, or None without a dataset generator."""
        features = _as_list(params.get(FEATURE))
        generator = self.study.custom_dataset_generator
        if generator is None:
            if features:
                raise AblationError("the study ablates features but has no dataset "
                                    "generator; call study.set_dataset_generator(fn)")
            return None
        return DatasetFunction(generator, features)


class _WithoutLayers:
    """``generator()`` rebuilt without ``layers``."""

    def __init__(self, generator: Callable[[], Any], layers: List[str]):
        self.generator, self.layers = generator, layers

    def __call__(self) -> Any:
        from .keras_layers import remove_layers

        return remove_layers(self.generator(), self.layers)


def _as_list(value: Any) -> List[str]:
    if value in (None, "", []):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


# -- before any trial runs ------------------------------------------------------------
def check_train_fn(fn: Callable, study: Any) -> None:
    """Raise :class:`TrainFunctionError` / :class:`AblationError` if the trials cannot
    call ``fn``: an argument nothing injects, or a model / dataset the study cannot make."""
    from ..trainfn import check_signature

    name = getattr(fn, "__name__", "the training function")
    if not callable(fn):
        raise TrainFunctionError(f"the training function must be callable, got "
                                 f"{type(fn).__name__}")
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    required = [p.name for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for arg in required:
        if arg not in INJECTED and arg not in ("reporter", "hparams"):
            raise TrainFunctionError(
                f"{name}() needs argument {arg!r}, which an ablation trial does not pass; it "
                "passes model_function, dataset_function, model, dataset, component, "
                "reporter, hparams and the trial's ablated_* parameters; rename it or give "
                "it a default")
    model = study.model
    if {"model", "model_function"} & set(required) and model.base_model_generator is None \
            and not model.custom_model_generators:
        raise AblationError(f"{name}() takes a model but the study has no model generator; "
                            "call study.model.set_base_model_generator(fn)")
    if {"dataset", "dataset_function"} & set(required) and \
            study.custom_dataset_generator is None:
        raise AblationError(f"{name}() takes a dataset but the study has no dataset "
                            "generator; call study.set_dataset_generator(fn)")
    check_signature(fn, (), extras=INJECTED)


def resolve_groups(study: Any) -> Dict[str, List[str]]:
    """Build the base model and each layer / group ablation of it once; return the layer
    names of every group. Raises the first removal's :class:`AblationError`."""
    layers = study.model.layers
    if not layers.included_layers and not layers.included_groups:
        return {}
    from . import keras_layers

    base = study.model.base_model_generator()
    keras_layers.check_model(base)
    for layer in layers.included_layers:
        keras_layers.remove_layers(base, [layer])
    groups: Dict[str, List[str]] = {}
    for group in layers.included_groups:
        if group.prefix is not None:
            names = keras_layers.prefixed(base, group.prefix)
            if not names:
                raise AblationError(
                    f"layer group {group.label!r} matches no layer of the base model besides "
                    f"its input and output (its layers: "
                    f"{', '.join(keras_layers.layer_names(base))}); fix the prefix")
        else:
            names = list(group.layers)
        keras_layers.remove_layers(base, names, what=f"layer group {group.label!r}")
        groups[group.label] = names
    return groups


def prepare(study: Any, train_fn: Callable) -> AblationTrainFn:
    """The trial function for ``study`` and ``train_fn``, after every check that can be
    made in the kernel (see the module docstring)."""
    from ..portable import serialize

    study.validate()
    check_train_fn(train_fn, study)
    for fn in (train_fn, *study.generators()):
        serialize(fn)  # what cannot travel is named before anything starts
    return AblationTrainFn(train_fn, study, resolve_groups(study))
