"""The hyperparameter search space, compatible with Maggy's ``Searchspace``.

A search space maps parameter names to ``(TYPE, values)`` or ``(TYPE, values, "log")``:

- ``DOUBLE``: ``[low, high]`` floats, sampled uniformly (log-uniformly with ``"log"``);
- ``INTEGER``: ``[low, high]`` integers, both ends included (log-uniform with ``"log"``);
- ``DISCRETE``: a list of numbers; ``CATEGORICAL``: a list of any JSON values.

A parameter may be *conditional*: it exists only when other (CATEGORICAL or DISCRETE)
parameters take given values. The condition is a dict ``{parent: value}`` (a list or tuple
of values means "any of these") given as the spec's last element,
``momentum=("DOUBLE", [0.0, 0.99], {"optimizer": "sgd"})``, or as
``add("momentum", ("DOUBLE", [0.0, 0.99]), when={"optimizer": "sgd"})``. Several parents
must all match, and a conditional parent must itself be active. An inactive parameter is
absent from a configuration (the training function needs a default for it, or takes
``**kwargs`` / ``hparams``).

Names become keyword arguments of the training function, so they must be identifiers and
must not shadow the arguments the worker injects itself.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any, Dict, Iterator, List

from .errors import SearchspaceError, did_you_mean

TYPES = ("DOUBLE", "INTEGER", "DISCRETE", "CATEGORICAL")
#: Argument names the worker injects itself; a hyperparameter may not take them.
RESERVED = frozenset({"reporter", "hparams", "budget", "model", "dataset",
                      "model_function", "dataset_function", "ablated_feature",
                      "ablated_layer"})


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _condition(name: str, when: Any) -> Dict[str, list]:
    """``when`` as ``{parent: [allowed values]}``; parents are checked by the space."""
    if not isinstance(when, dict) or not when:
        raise SearchspaceError(
            f"parameter {name!r}: a condition must be a non-empty dict such as "
            f"{{'optimizer': 'sgd'}}, got {when!r}")
    out = {}
    for parent, allowed in when.items():
        allowed = list(allowed) if isinstance(allowed, (list, tuple)) else [allowed]
        if not allowed:
            raise SearchspaceError(
                f"parameter {name!r}: the condition on {parent!r} lists no value; name at "
                "least one")
        out[parent] = allowed
    return out


class Param:
    """One validated parameter: ``name``, ``type``, ``values``, ``log`` and ``when``
    (``{parent: [values]}``, empty for an unconditional parameter)."""

    __slots__ = ("name", "type", "values", "log", "when")

    def __init__(self, name: str, spec: Any, when: Any = None):
        if not isinstance(name, str) or not name.isidentifier():
            raise SearchspaceError(
                f"search space name {name!r} is not a Python identifier; rename it "
                "(it becomes a keyword argument of the training function)")
        if name in RESERVED:
            raise SearchspaceError(
                f"search space name {name!r} is reserved for an injected argument; rename it")
        if isinstance(spec, (tuple, list)) and len(spec) in (3, 4) \
                and isinstance(spec[-1], dict):
            if when is not None:
                raise SearchspaceError(
                    f"parameter {name!r}: give its condition once, in the spec or as when=")
            spec, when = spec[:-1], spec[-1]
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise SearchspaceError(
                f"parameter {name!r}: expected (TYPE, values) such as ('DOUBLE', [0.0, 1.0]), "
                f"got {spec!r}")
        ptype, values = spec[0], spec[1]
        scale = spec[2] if len(spec) == 3 else None
        ptype = str(ptype).upper()
        if ptype not in TYPES:
            raise SearchspaceError(
                f"parameter {name!r}: unknown type {spec[0]!r}; {did_you_mean(ptype, TYPES)}")
        if scale not in (None, "log", "linear"):
            raise SearchspaceError(
                f"parameter {name!r}: scale must be 'log' or 'linear', got {scale!r}")
        log = scale == "log"
        if not isinstance(values, (list, tuple)):
            raise SearchspaceError(
                f"parameter {name!r}: values must be a list, got {type(values).__name__}")
        values = list(values)
        if ptype in ("DOUBLE", "INTEGER"):
            if len(values) != 2 or not all(_is_number(v) for v in values):
                raise SearchspaceError(
                    f"parameter {name!r}: {ptype} needs [low, high] numbers, got {values!r}")
            if ptype == "INTEGER" and not all(float(v).is_integer() for v in values):
                raise SearchspaceError(
                    f"parameter {name!r}: INTEGER bounds must be whole numbers, got {values!r}")
            low, high = values
            if ptype == "INTEGER":
                low, high = int(low), int(high)
            if not low < high:
                raise SearchspaceError(
                    f"parameter {name!r}: lower bound {low} must be below upper bound {high}")
            if log and low <= 0:
                raise SearchspaceError(
                    f"parameter {name!r}: a log scale needs a lower bound above 0, got {low}")
            values = [float(low), float(high)] if ptype == "DOUBLE" else [low, high]
        else:
            if log:
                raise SearchspaceError(
                    f"parameter {name!r}: 'log' applies to DOUBLE and INTEGER only")
            if not values:
                raise SearchspaceError(f"parameter {name!r}: {ptype} needs at least one value")
            if ptype == "DISCRETE" and not all(_is_number(v) for v in values):
                raise SearchspaceError(
                    f"parameter {name!r}: DISCRETE values must be numbers; use CATEGORICAL "
                    f"for {values!r}")
        self.name, self.type, self.values, self.log = name, ptype, values, log
        self.when: Dict[str, list] = _condition(name, when) if when is not None else {}

    def active(self, config: Dict[str, Any]) -> bool:
        """Whether this parameter exists in ``config`` (which holds its active parents)."""
        return all(parent in config and config[parent] in allowed
                   for parent, allowed in self.when.items())

    def sample(self, rng: random.Random) -> Any:
        """One value drawn from this parameter's range."""
        if self.type == "DOUBLE":
            low, high = self.values
            if self.log:
                # exp(log(x)) may round an ulp past either bound (exp(log(0.1)) > 0.1).
                return min(high, max(low, math.exp(rng.uniform(math.log(low), math.log(high)))))
            return rng.uniform(low, high)
        if self.type == "INTEGER":
            low, high = self.values
            if self.log:
                value = math.exp(rng.uniform(math.log(low), math.log(high + 1)))
                return min(high, max(low, int(value)))
            return rng.randint(low, high)
        return rng.choice(self.values)

    def grid_values(self) -> List[Any]:
        """All values of a discrete parameter; continuous ones cannot be enumerated."""
        if self.type == "DOUBLE":
            raise SearchspaceError(
                f"grid search cannot enumerate DOUBLE parameter {self.name!r}; make it DISCRETE "
                "with explicit values or use optimizer='randomsearch'")
        if self.type == "INTEGER":
            return list(range(self.values[0], self.values[1] + 1))
        return list(self.values)

    def to_spec(self) -> list:
        spec: list = [self.type, list(self.values)]
        if self.log:
            spec.append("log")
        if self.when:
            spec.append({parent: list(allowed) for parent, allowed in self.when.items()})
        return spec


class Searchspace:
    """Named hyperparameters with their types and ranges (Maggy-compatible).

    ``Searchspace(kernel=("INTEGER", [2, 8]))`` or ``sp.add("kernel", ("INTEGER", [2, 8]))``.
    The constructor accepts conditional parameters in any order; ``add`` needs a
    condition's parents to be defined already. Instances are not thread-safe while being
    built; sampling only reads them.
    """

    DOUBLE, INTEGER, DISCRETE, CATEGORICAL = TYPES

    def __init__(self, **kwargs: Any):
        self._params: Dict[str, Param] = {}
        self._order: List[Param] = []
        for name, spec in kwargs.items():
            self._put(Param(name, spec))
        self._check_conditions()

    def add(self, name: str, value: Any, when: Any = None) -> "Searchspace":
        """Add one parameter; ``value`` is ``(TYPE, values)`` or ``(TYPE, values, "log")``,
        optionally ending with a condition dict; ``when`` is the same condition instead."""
        self._put(Param(name, value, when))
        try:
            self._check_conditions()
        except SearchspaceError:
            del self._params[name]
            self._check_conditions()
            raise
        return self

    def _put(self, param: Param) -> None:
        if param.name in self._params:
            raise SearchspaceError(f"parameter {param.name!r} is defined twice; remove one")
        self._params[param.name] = param

    def _check_conditions(self) -> None:
        """Validate every condition and compute the parents-first order."""
        for p in self._params.values():
            for parent, allowed in p.when.items():
                if parent not in self._params:
                    others = [n for n in self._params if n != p.name]
                    hint = did_you_mean(parent, others) if others else "define it first"
                    raise SearchspaceError(
                        f"parameter {p.name!r}: condition on unknown parameter {parent!r}; "
                        f"{hint}")
                ptype = self._params[parent].type
                if ptype not in ("CATEGORICAL", "DISCRETE"):
                    raise SearchspaceError(
                        f"parameter {p.name!r}: condition parent {parent!r} is {ptype}; a "
                        "condition needs a CATEGORICAL or DISCRETE parent")
                for value in allowed:
                    if value not in self._params[parent].values:
                        raise SearchspaceError(
                            f"parameter {p.name!r}: condition value {value!r} is not one of "
                            f"{parent!r}'s values {self._params[parent].values!r}")
        order: List[Param] = []
        state: Dict[str, int] = {}  # 1: being visited, 2: placed

        def visit(name: str, path: List[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = path[path.index(name):] + [name]
                raise SearchspaceError(
                    f"conditions form a cycle {' -> '.join(cycle)}; remove one of them")
            state[name] = 1
            for parent in self._params[name].when:
                visit(parent, path + [name])
            state[name] = 2
            order.append(self._params[name])

        for name in self._params:
            visit(name, [])
        self._order = order

    # -- reading ------------------------------------------------------------------------
    def names(self) -> Dict[str, str]:
        """Parameter name → type, as Maggy's ``names()``."""
        return {p.name: p.type for p in self._params.values()}

    def keys(self):
        return self._params.keys()

    def get(self, name: str, default: Any = None) -> Any:
        param = self._params.get(name)
        return param.to_spec() if param else default

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __contains__(self, name: str) -> bool:
        return name in self._params

    def __len__(self) -> int:
        return len(self._params)

    def __iter__(self) -> Iterator[dict]:
        for p in self._params.values():
            item = {"name": p.name, "type": p.type, "values": list(p.values)}
            if p.when:
                item["when"] = {k: list(v) for k, v in p.when.items()}
            yield item

    def params(self) -> List[Param]:
        return list(self._params.values())

    def ordered(self) -> List[Param]:
        """The parameters with every condition's parents before the parameter itself."""
        return list(self._order)

    def conditional_names(self) -> List[str]:
        """Names of the parameters that exist only under a condition."""
        return [p.name for p in self._params.values() if p.when]

    @property
    def is_conditional(self) -> bool:
        return any(p.when for p in self._params.values())

    def prune(self, config: Dict[str, Any]) -> Dict[str, Any]:
        """``config`` without the parameters whose conditions do not hold (nor unknown names);
        key order follows the search space."""
        kept: Dict[str, Any] = {}
        for p in self._order:
            if p.name in config and p.active(kept):
                kept[p.name] = config[p.name]
        return {name: kept[name] for name in self._params if name in kept}

    def to_dict(self) -> Dict[str, list]:
        """A JSON-serialisable form that ``from_dict`` turns back into an equal space."""
        return {name: p.to_spec() for name, p in self._params.items()}

    @classmethod
    def from_dict(cls, spec: Dict[str, Any]) -> "Searchspace":
        return cls(**spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Searchspace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={tuple(s)!r}" for n, s in self.to_dict().items())
        return f"Searchspace({inner})"

    # -- sampling -----------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Dict[str, Any]:
        """One configuration drawn independently per parameter, without inactive ones.

        Every parameter is drawn (in definition order) whether active or not, so the
        random stream does not depend on which branch a configuration takes."""
        config = {p.name: p.sample(rng) for p in self._params.values()}
        return self.prune(config) if self.is_conditional else config

    def get_random_parameter_values(self, num: int, seed: int | None = None) -> List[dict]:
        """``num`` random configurations (Maggy's name)."""
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(num)]

    def grid(self) -> List[Dict[str, Any]]:
        """Every combination of the (discrete) parameters, in a stable order."""
        if not self._params:
            raise SearchspaceError("the search space is empty; add at least one parameter")
        names = list(self._params)
        axes = [self._params[n].grid_values() for n in names]
        combos = [dict(zip(names, combo)) for combo in itertools.product(*axes)]
        if not self.is_conditional:
            return combos
        # inactive parameters vary in the product only; keep each pruned point once
        seen, points = set(), []
        for combo in combos:
            point = self.prune(combo)
            key = json.dumps(point, sort_keys=True, default=repr)
            if key not in seen:
                seen.add(key)
                points.append(point)
        return points
