"""The bridge between a :class:`~maggy_magic.searchspace.Searchspace` and Optuna.

Used by the optimizers in :mod:`.bayes` (tpe, gp), :mod:`.hyperband` (bohb) and
:mod:`.de`: ``load_optuna`` (the module, or a :class:`ConfigError` saying what to
install), ``quiet`` (Optuna's logging and warnings silenced), ``distributions`` /
``suggest`` / ``encode`` (search space ↔ Optuna distributions, trials and recorded
parameters) and ``usable`` (whether a metric can be told to a model).

Optuna is imported here, lazily, and only by the optimizers that model results (tpe, gp,
bohb). DISCRETE and CATEGORICAL parameters are handed to Optuna as categorical choices of
their value *indexes*, so any JSON value (lists, dicts, None) can be a choice; conditional
parameters are suggested define-by-run, parents first, and only when active.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple

from ..errors import ConfigError


def load_optuna(optimizer: str, torch: bool = False) -> Any:
    """The ``optuna`` module, or a :class:`ConfigError` saying what to install."""
    try:
        import optuna
        if torch:
            import scipy  # noqa: F401 - GPSampler fits its model with both
            import torch as _torch  # noqa: F401
    except ImportError as exc:
        extra = "bayes,torch" if torch else "bayes"
        raise ConfigError(f"optimizer {optimizer!r} needs {exc.name}; install it with "
                          f"pip install 'maggy-magic[{extra}]'") from None
    return optuna


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines and its experimental/independent-sampling
    warnings for the duration, restoring the caller's logging level afterwards."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def distributions(optuna: Any, searchspace: Any) -> Dict[str, Any]:
    """Parameter name → the Optuna distribution it is suggested from."""
    d = optuna.distributions
    out: Dict[str, Any] = {}
    for p in searchspace.params():
        if p.type == "DOUBLE":
            out[p.name] = d.FloatDistribution(p.values[0], p.values[1], log=p.log)
        elif p.type == "INTEGER":
            out[p.name] = d.IntDistribution(p.values[0], p.values[1], log=p.log)
        else:
            out[p.name] = d.CategoricalDistribution(list(range(len(p.values))))
    return out


def suggest(searchspace: Any, dists: Dict[str, Any], otrial: Any) -> Dict[str, Any]:
    """Draw one configuration through Optuna trial ``otrial`` (ask interface).

    Parents are suggested before their children and inactive parameters are never
    suggested, so the sampler only ever sees parameters that exist in the trial."""
    config: Dict[str, Any] = {}
    for p in searchspace.ordered():
        if not p.active(config):
            continue
        dist = dists[p.name]
        if p.type == "DOUBLE":
            raw = otrial.suggest_float(p.name, dist.low, dist.high, log=dist.log)
        elif p.type == "INTEGER":
            raw = otrial.suggest_int(p.name, dist.low, dist.high, log=dist.log)
        else:
            raw = otrial.suggest_categorical(p.name, dist.choices)
        config[p.name] = _decode(p, raw)
    return {name: config[name] for name in searchspace.keys() if name in config}


def _decode(param: Any, raw: Any) -> Any:
    if param.type == "DOUBLE":
        low, high = param.values
        return min(high, max(low, float(raw)))
    if param.type == "INTEGER":
        return int(raw)
    return param.values[int(raw)]


def encode(searchspace: Any, dists: Dict[str, Any], params: Dict[str, Any]
           ) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``(optuna params, their distributions)`` for a configuration, or None if it does
    not fit the search space (a trial recorded under another space)."""
    oparams, odists = {}, {}
    for name, value in params.items():
        if name not in dists:
            return None
        p = searchspace[name]
        if p.type in ("DOUBLE", "INTEGER"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return None
            raw: Any = float(value) if p.type == "DOUBLE" else int(value)
            if not p.values[0] <= raw <= p.values[1]:
                return None
        else:
            matches = [i for i, v in enumerate(p.values) if v == value
                       and isinstance(v, bool) == isinstance(value, bool)]
            if not matches:
                return None
            raw = matches[0]
        oparams[name], odists[name] = raw, dists[name]
    return oparams, odists


def usable(value: Any) -> bool:
    """Whether a trial's final metric can be told to a model (a finite number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
