"""What an ablation study leaves out, declared with Maggy's names.

An :class:`AblationStudy` is a declaration only: the features, layers, layer groups and
custom models to compare against the base, and the generators that build the base model
and the dataset. It imports nothing heavy and holds no state of a run, so it can be
pickled and shipped to workers with the training function.

Maggy's API::

    study = AblationStudy("digits", 1, label_name="label")
    study.features.include("pixel_3_4", ["pixel_4_4", "pixel_5_4"])
    study.model.layers.include("dropout")
    study.model.layers.include_groups(["hidden_1", "hidden_2"])   # removed together
    study.model.layers.include_groups(prefix="conv")              # every layer named conv*
    study.model.set_base_model_generator(build_model)             # () -> keras.Model
    study.model.add_custom_model_generator(build_small, "small")  # () -> keras.Model
    study.set_dataset_generator(make_dataset)  # (*args, **kwargs) -> data

maggy-magic has no feature store: a study that ablates features needs a dataset generator
with a parameter ``ablated_features`` (the list of features to leave out, empty for the
trials that keep every feature) or Maggy's ``ablated_feature`` (one name, or None); a
generator without one gets exactly what the training function passes
(:mod:`.datasets`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..errors import AblationError


def _names(method: str, args: Iterable[Any]) -> List[str]:
    """Strings and lists of strings, flattened; anything else is an AblationError."""
    found: List[str] = []
    for arg in args:
        items = arg if isinstance(arg, (list, tuple, set, frozenset)) else [arg]
        for item in items:
            if not isinstance(item, str) or not item:
                raise AblationError(f"{method}() takes names (strings or lists of strings), "
                                    f"got {item!r} ({type(item).__name__})")
            found.append(item)
    return found


class Features:
    """The features to leave out one at a time (``study.features``)."""

    def __init__(self) -> None:
        self._included: Dict[str, None] = {}  # ordered set

    @property
    def included_features(self) -> List[str]:
        """The included feature names, in the order they were included."""
        return list(self._included)

    def include(self, *args: Any) -> None:
        """Add features (names or lists of names); each gives one trial without it."""
        for name in _names("features.include", args):
            self._included[name] = None

    def exclude(self, *args: Any) -> None:
        """Take features out of the study again (names not included are ignored)."""
        for name in _names("features.exclude", args):
            self._included.pop(name, None)

    def list_all(self) -> None:
        for name in self._included:
            print(name)


class LayerGroup:
    """Layers removed together: an explicit list, or every layer whose name starts with
    ``prefix`` (case-insensitive; the model's input and output layers are never part of
    a prefix group, as in Maggy)."""

    __slots__ = ("layers", "prefix")

    def __init__(self, layers: Tuple[str, ...] = (), prefix: Optional[str] = None):
        self.layers = tuple(layers)
        self.prefix = prefix

    @property
    def label(self) -> str:
        """How trials, results and displays name the group: ``a+b`` or ``prefix*``."""
        return f"{self.prefix}*" if self.prefix is not None else "+".join(self.layers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerGroup) and (other.prefix, frozenset(other.layers)) == \
            (self.prefix, frozenset(self.layers))

    def __hash__(self) -> int:
        return hash((self.prefix, frozenset(self.layers)))

    def __repr__(self) -> str:
        return f"LayerGroup({self.label!r})"


class Layers:
    """The layers (``include``) and layer groups (``include_groups``) to leave out."""

    def __init__(self) -> None:
        self._layers: Dict[str, None] = {}
        self._groups: Dict[LayerGroup, None] = {}

    @property
    def included_layers(self) -> List[str]:
        return list(self._layers)

    @property
    def included_groups(self) -> List[LayerGroup]:
        return list(self._groups)

    def include(self, *args: Any) -> None:
        """Add layers by name; each gives one trial of the base model without it."""
        for name in _names("layers.include", args):
            self._layers[name] = None

    def exclude(self, *args: Any) -> None:
        for name in _names("layers.exclude", args):
            self._layers.pop(name, None)

    def include_groups(self, *args: Any, prefix: Optional[str] = None) -> None:
        """Add layer groups: each list of two or more names, and ``prefix``, gives one
        trial of the base model without all of those layers at once."""
        for group in self._parse_groups("include_groups", args, prefix):
            self._groups[group] = None

    def exclude_groups(self, *args: Any, prefix: Optional[str] = None) -> None:
        for group in self._parse_groups("exclude_groups", args, prefix):
            self._groups.pop(group, None)

    @staticmethod
    def _parse_groups(method: str, args: Tuple[Any, ...],
                      prefix: Optional[str]) -> List[LayerGroup]:
        groups = []
        if prefix is not None:
            if not isinstance(prefix, str) or not prefix:
                raise AblationError(f"layers.{method}(prefix=...) takes a non-empty string, "
                                    f"got {prefix!r}")
            groups.append(LayerGroup(prefix=prefix))
        for arg in args:
            if not isinstance(arg, (list, tuple, set, frozenset)):
                raise AblationError(f"layers.{method}() takes lists of layer names or "
                                    f"prefix='...', got {arg!r}; a single layer goes in "
                                    "layers.include()")
            names = list(dict.fromkeys(_names(f"layers.{method}", [arg])))
            if len(names) < 2:
                raise AblationError(f"layers.{method}() got the group {names!r} with one "
                                    "layer; use layers.include() for a single layer")
            groups.append(LayerGroup(tuple(names)))
        return groups

    def print_all(self) -> None:
        print("\n".join(self._layers) or "no single layers in this study")

    def print_all_groups(self) -> None:
        print("\n".join(g.label for g in self._groups) or "no layer groups in this study")


class Model:
    """The model side of a study (``study.model``): its layers and generators."""

    def __init__(self) -> None:
        self.layers = Layers()
        self.base_model_generator: Optional[Callable[[], Any]] = None
        #: ``(generator, name)`` pairs, Maggy's layout; each gives one trial.
        self.custom_model_generators: List[Tuple[Callable[[], Any], str]] = []

    def set_base_model_generator(self, base_model_generator: Callable[[], Any]) -> None:
        """``base_model_generator()`` returns the full Keras model (a new one per call)."""
        if not callable(base_model_generator):
            raise AblationError(f"set_base_model_generator() takes a function that returns "
                                f"a Keras model, got {type(base_model_generator).__name__}")
        self.base_model_generator = base_model_generator

    def add_custom_model_generator(self, custom_model_generator: Callable[[], Any],
                                   model_identifier: str) -> None:
        """One trial trains ``custom_model_generator()`` instead of the base model; results
        name it ``model_identifier``."""
        if not callable(custom_model_generator):
            raise AblationError(f"add_custom_model_generator() takes a function that returns "
                                f"a Keras model, got {type(custom_model_generator).__name__}")
        if not isinstance(model_identifier, str) or not model_identifier:
            raise AblationError(f"add_custom_model_generator() needs a non-empty name, got "
                                f"{model_identifier!r}")
        if model_identifier in self.custom_model_names:
            raise AblationError(f"a custom model called {model_identifier!r} is already in "
                                "the study; give each one its own name")
        self.custom_model_generators.append((custom_model_generator, model_identifier))

    @property
    def custom_model_names(self) -> List[str]:
        return [name for _, name in self.custom_model_generators]

    def custom_model_generator(self, name: str) -> Callable[[], Any]:
        """The generator registered as ``name``."""
        for generator, identifier in self.custom_model_generators:
            if identifier == name:
                return generator
        raise AblationError(f"the study has no custom model {name!r}; its custom models: "
                            f"{', '.join(self.custom_model_names) or 'none'}")


class AblationStudy:
    """An ablation study (Maggy's ``AblationStudy``); pass it to
    :class:`~maggy_magic.config.AblationConfig` or define it in a ``%%maggy ablation``
    cell. ``training_dataset_name``, ``training_dataset_version`` and ``label_name`` are
    kept as a description (there is no feature store here); the data comes from
    ``dataset_generator``.
    """

    def __init__(self, training_dataset_name: Any = None, training_dataset_version: Any = None,
                 label_name: Optional[str] = None,
                 dataset_generator: Optional[Callable[..., Any]] = None, **kwargs: Any):
        if kwargs:
            raise AblationError(f"AblationStudy() has no argument {next(iter(kwargs))!r}; it "
                                "takes training_dataset_name, training_dataset_version, "
                                "label_name and dataset_generator")
        self.training_dataset_name = training_dataset_name
        self.training_dataset_version = training_dataset_version
        self.label_name = label_name
        self.features = Features()
        self.model = Model()
        self.custom_dataset_generator: Optional[Callable[..., Any]] = None
        if dataset_generator is not None:
            self.set_dataset_generator(dataset_generator)

    # Maggy's attribute name for the dataset
    @property
    def hops_training_dataset_name(self) -> Any:
        return self.training_dataset_name

    @property
    def hops_training_dataset_version(self) -> Any:
        return self.training_dataset_version

    def set_dataset_generator(self, dataset_generator: Callable[..., Any]) -> None:
        """``dataset_generator(*args, **kwargs)`` returns a trial's data; ``*args`` /
        ``**kwargs`` are what the training function passes to ``dataset_function(...)``.
        A parameter named ``ablated_features`` (or Maggy's ``ablated_feature``) is told
        which features the trial leaves out (:mod:`.datasets`)."""
        if not callable(dataset_generator):
            raise AblationError(f"set_dataset_generator() takes a function, got "
                                f"{type(dataset_generator).__name__}")
        self.custom_dataset_generator = dataset_generator

    def generators(self) -> List[Callable[..., Any]]:
        """Every user function the study holds (base, custom models, dataset)."""
        found = [self.model.base_model_generator, self.custom_dataset_generator,
                 *(g for g, _ in self.model.custom_model_generators)]
        return [g for g in found if g is not None]

    @property
    def num_components(self) -> int:
        """How many components the study leaves out one at a time."""
        return (len(self.features.included_features) + len(self.model.layers.included_layers)
                + len(self.model.layers.included_groups)
                + len(self.model.custom_model_generators))

    def validate(self) -> None:
        """Raise an :class:`AblationError` when the declaration cannot give trials; the
        models themselves are checked when the experiment starts."""
        if self.num_components == 0:
            raise AblationError("the ablation study leaves nothing out; include features, "
                                "layers, layer groups or custom models")
        layers = self.model.layers
        if (layers.included_layers or layers.included_groups) and \
                self.model.base_model_generator is None:
            raise AblationError("the study ablates layers but has no base model; call "
                                "study.model.set_base_model_generator(fn) with a function "
                                "that returns the Keras model")
        if self.features.included_features and self.custom_dataset_generator is None:
            raise AblationError("the study ablates features but has no dataset generator; "
                                "call study.set_dataset_generator(fn), fn(ablated_features) "
                                "returning the data without them")
        if self.custom_dataset_generator is not None:
            from .datasets import check

            check(self.custom_dataset_generator, self.features.included_features)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON description (what the run's config records; resume compares it)."""
        def name(fn: Any) -> Optional[str]:
            return None if fn is None else getattr(fn, "__qualname__", type(fn).__name__)

        return {"training_dataset_name": _jsonable(self.training_dataset_name),
                "training_dataset_version": _jsonable(self.training_dataset_version),
                "label_name": self.label_name,
                "included_features": self.features.included_features,
                "included_layers": self.model.layers.included_layers,
                "included_groups": [g.label for g in self.model.layers.included_groups],
                "custom_models": self.model.custom_model_names,
                "base_model_generator": name(self.model.base_model_generator),
                "custom_dataset_generator": name(self.custom_dataset_generator)}

    def __repr__(self) -> str:
        d = self.to_dict()
        return (f"AblationStudy({self.training_dataset_name!r}, features="
                f"{d['included_features']}, layers={d['included_layers']}, groups="
                f"{d['included_groups']}, custom_models={d['custom_models']})")


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
