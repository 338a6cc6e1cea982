"""Layer removal for Keras 3 models: the base model rebuilt without some layers.

:func:`remove_layers` returns a new model; the base model is left as it was. Every kept
layer is re-created from its config (fresh, unbuilt), the graph is rebuilt without the
removed layers, and then:

- **Sequential**: the remaining layers in order, on the same input;
- **Functional**: each removed layer's consumers are wired to the removed layer's input
  (a removed layer must have exactly one input tensor);
- kept layers whose weights keep their shapes get the base model's weights (so
  pretrained or specially initialised layers stay so); the others start fresh;
- a compiled base model gives an ablated model compiled the same way.

When no valid model results, an :class:`~maggy_magic.errors.AblationError` names the
layer and why, in one line: an unknown name, the input layer, a layer that produces a
model output, a layer with several inputs, a shape mismatch downstream, or an output
shape that differs from the base model's. Keras is imported inside the functions.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Set

from ..errors import AblationError, closest


class _Unwirable(Exception):
    def __init__(self, name: str, count: int):
        super().__init__(name, count)
        self.name, self.count = name, count


def check_model(model: Any, what: str = "the base model generator") -> None:
    """Raise an AblationError unless ``model`` is a Keras 3 Sequential/Functional model."""
    import keras

    if not isinstance(model, keras.Model):
        raise AblationError(f"{what} returned an object of type {type(model).__name__}, not a "
                            "Keras model; return a keras.Model (Sequential or Functional)")
    if not _is_sequential(model) and not _is_functional(model):
        raise AblationError(f"{what} returned a subclassed Keras model "
                            f"({type(model).__name__}), whose layers cannot be rewired; build "
                            "it with keras.Sequential or the functional API, or ablate it "
                            "with custom model generators")


def layer_names(model: Any) -> List[str]:
    """Names of the model's layers (its input layers included), in order."""
    return input_names(model) + [layer.name for layer in model.layers
                                 if layer.name not in input_names(model)]


def input_names(model: Any) -> List[str]:
    """Names of the model's input layers (none for a Sequential model without input)."""
    config = model.get_config()
    if _is_sequential(model):
        return [entry["config"]["name"] for entry in config.get("layers", [])[:1]
                if entry.get("class_name") == "InputLayer"]
    return _history_names(config.get("input_layers"))


def output_names(model: Any) -> List[str]:
    """Names of the layers that produce the model's outputs."""
    if _is_sequential(model):
        return [model.layers[-1].name] if model.layers else []
    return _history_names(model.get_config().get("output_layers"))


def prefixed(model: Any, prefix: str) -> List[str]:
    """Layers whose name starts with ``prefix`` (case-insensitive), input and output
    layers left out (Maggy's prefix groups)."""
    fixed = set(input_names(model)) | set(output_names(model))
    return [name for name in layer_names(model)
            if name.lower().startswith(prefix.lower()) and name not in fixed]


def remove_layers(model: Any, names: Iterable[str], *, what: Optional[str] = None) -> Any:
    """``model`` rebuilt without the layers ``names`` (see the module docstring).

    ``what`` names the removal in errors (default: the layers, e.g. ``layer 'hidden'``).
    """
    import keras

    names = list(dict.fromkeys(names))
    check_model(model)
    what = what or _what(names)
    inputs, outputs = input_names(model), output_names(model)
    present = layer_names(model)
    for name in names:
        if name in inputs:
            raise AblationError(f"cannot ablate layer {name!r}: it is the model's input "
                                "layer; leave it out of the study")
        if name not in present:
            hint = closest(name, present)
            raise AblationError(f"cannot ablate layer {name!r}: the base model has no such "
                                "layer" + (f"; did you mean {hint!r}?" if hint else "")
                                + f" (its layers: {', '.join(present)})")
        if name in outputs:
            raise AblationError(f"cannot ablate layer {name!r}: it produces the model's "
                                "output; leave it out of the study (or compare a custom "
                                "model generator)")
    removed = set(names)
    try:
        if _is_sequential(model):
            new = _without_sequential(keras, model, removed)
        else:
            new = _without_functional(keras, model, removed)
    except _Unwirable as exc:
        raise AblationError(f"cannot ablate layer {exc.name!r}: it takes {exc.count} inputs, "
                            "so its consumers cannot be wired to a single one; leave it out "
                            "of the study") from None
    except AblationError:
        raise
    except Exception as exc:  # noqa: BLE001 - Keras reports shape errors in many types
        raise AblationError(f"removing {what} leaves no valid model ({_first_line(exc)}); "
                            "leave it out of the study") from None
    base_shapes, new_shapes = _output_shapes(model), _output_shapes(new)
    if base_shapes is not None and new_shapes is not None and base_shapes != new_shapes:
        raise AblationError(f"removing {what} changes the model's output shape from "
                            f"{_shapes(base_shapes)} to {_shapes(new_shapes)}; leave it out "
                            "of the study")
    _copy_weights(model, new)
    if getattr(model, "compiled", False) and not getattr(new, "compiled", False):
        new.compile_from_config(model.get_compile_config())
    return new


# -- rebuilding -----------------------------------------------------------------------
def _fresh(layer: Any) -> Any:
    return layer.__class__.from_config(layer.get_config())


def _without_sequential(keras: Any, model: Any, removed: Set[str]) -> Any:
    kept = [_fresh(layer) for layer in model.layers if layer.name not in removed]
    inputs = input_names(model)
    if inputs:
        spec = model.inputs[0]
        kept.insert(0, keras.Input(batch_shape=spec.shape, dtype=spec.dtype, name=inputs[0]))
    return keras.Sequential(kept, name=model.name)


def _without_functional(keras: Any, model: Any, removed: Set[str]) -> Any:
    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer.name not in removed:
            return layer(*args, **kwargs)
        tensors = [a for a in _flatten(args) if _is_tensor(keras, a)]
        if len(tensors) != 1:
            raise _Unwirable(layer.name, len(tensors))
        return tensors[0]

    return keras.models.clone_model(model, clone_function=_fresh, call_function=call)


# -- helpers --------------------------------------------------------------------------
def _is_sequential(model: Any) -> bool:
    import keras

    return isinstance(model, keras.Sequential)


def _is_functional(model: Any) -> bool:
    """A graph of layers (functional API): its config lists its input and output layers."""
    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001 - subclassed models may not implement get_config
        return False
    return isinstance(config, dict) and "input_layers" in config and "output_layers" in config


def _is_tensor(keras: Any, value: Any) -> bool:
    return isinstance(value, keras.KerasTensor)


def _flatten(value: Any) -> List[Any]:
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _flatten(item)]
    if isinstance(value, dict):
        return [x for item in value.values() for x in _flatten(item)]
    return [value]


def _history_names(spec: Any) -> List[str]:
    """Layer names in a config's ``input_layers``/``output_layers`` (``[name, node,
    tensor]`` or nested lists / dicts of them)."""
    if isinstance(spec, (list, tuple)) and len(spec) == 3 and isinstance(spec[0], str) \
            and all(isinstance(i, int) for i in spec[1:]):
        return [spec[0]]
    items = spec.values() if isinstance(spec, dict) else spec or []
    return [name for item in items for name in _history_names(item)]


def _output_shapes(model: Any) -> Optional[List[tuple]]:
    try:
        return [tuple(t.shape) for t in model.outputs]
    except (AttributeError, ValueError):
        return None  # a Sequential model without an input: built later, by its data


def _copy_weights(base: Any, new: Any) -> None:
    by_name = {layer.name: layer for layer in base.layers}
    for layer in new.layers:
        old = by_name.get(layer.name)
        if old is None or not layer.weights or len(old.weights) != len(layer.weights):
            continue
        if all(tuple(a.shape) == tuple(b.shape) for a, b in zip(old.weights, layer.weights)):
            layer.set_weights(old.get_weights())


def _what(names: Sequence[str]) -> str:
    listed = ", ".join(repr(n) for n in names)
    return f"layer {listed}" if len(names) == 1 else f"layers {listed}"


def _shapes(shapes: List[tuple]) -> str:
    return ", ".join(str(s) for s in shapes)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."
