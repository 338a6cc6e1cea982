"""The training function's contract: which arguments it may take, how one call is built,
and what its return value means.

The user's function gets its hyperparameters by name, plus what the worker injects
(``reporter``, ``hparams``, ``budget`` and, for some experiment kinds, more). The magics and
configs call :func:`check_signature` before anything starts, so a function that cannot be
called fails in the notebook; the worker loop and the ablation / dist wrappers call
:func:`call_plan` once and :func:`build_kwargs` per trial; :func:`final_metric` reads the
returned metric. Stdlib only: it runs on executors.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable, Dict, Iterable, Optional

from .errors import InvalidMetricError, MaggyError, TrainFunctionError
from .reporter import Reporter, as_metric


def check_signature(fn: Callable, param_names: Iterable[str], *, budget: bool = False,
                    extras: Iterable[str] = (), conditional: Iterable[str] = ()) -> None:
    """Raise :class:`TrainFunctionError` if ``fn`` cannot be called for these parameters.

    ``conditional`` names the parameters that some trials lack (their condition does not
    hold); ``fn`` must give those a default when it names them.
    Called by the experiment before any worker starts, and by ``build_kwargs``.
    """
    name = getattr(fn, "__name__", "the training function")
    if not callable(fn):
        raise TrainFunctionError(f"the training function must be callable, got "
                                 f"{type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and C functions: nothing to check
    params = set(param_names)
    extras = set(extras)
    named = {p.name: p for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    positional_only = [p.name for p in sig.parameters.values() if p.kind == p.POSITIONAL_ONLY
                       and p.default is p.empty]
    if positional_only:
        raise TrainFunctionError(f"{name}() has positional-only arguments "
                                 f"{positional_only}; make them keyword arguments")
    available = params | {"reporter", "hparams"} | extras | ({"budget"} if budget else set())
    for pname, p in named.items():
        if pname not in available and p.default is p.empty:
            raise TrainFunctionError(
                f"{name}() needs argument {pname!r}, which is neither a hyperparameter "
                f"({', '.join(sorted(params)) or 'none'}) nor injected (reporter, hparams"
                f"{', budget' if budget else ''}); give it a default or add it to the "
                "search space")
    for pname in sorted(set(conditional) & set(named)):
        if named[pname].default is named[pname].empty:
            raise TrainFunctionError(
                f"{name}() needs a default for conditional hyperparameter {pname!r} (trials "
                f"whose condition does not hold lack it); e.g. {pname}=None")
    leftover = params - set(named)
    if leftover and not var_kw and "hparams" not in named:
        raise TrainFunctionError(
            f"{name}() does not take hyperparameter(s) {', '.join(sorted(leftover))}; add "
            "them as arguments, take **kwargs, or take one `hparams` dict")
    if budget and "budget" not in named and not var_kw:
        raise TrainFunctionError(f"this optimizer passes a `budget` (e.g. epochs) to {name}(); "
                                 "add a `budget` argument")


#: Each function's plan while the function lives (a template process works it out
#: before it forks, so no worker forked from it does).
_PLANS: "weakref.WeakKeyDictionary[Callable, Any]" = weakref.WeakKeyDictionary()


def call_plan(fn: Callable):
    """``(named parameters, takes **kwargs)`` of ``fn``, or None if it has no signature.

    Worked out once per function and kept: inspecting a signature costs more than a
    no-op trial.
    """
    try:
        return _PLANS[fn]
    except (KeyError, TypeError):  # not seen yet, or a callable without weak references
        pass
    plan = _plan(fn)
    try:
        _PLANS[fn] = plan
    except TypeError:
        pass
    return plan


def _plan(fn: Callable):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    named = tuple(p.name for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return named, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def build_kwargs(fn: Callable, params: Dict[str, Any], reporter: Reporter,
                 budget: Any = None, extras: Optional[Dict[str, Any]] = None,
                 plan=None) -> Dict[str, Any]:
    """The keyword arguments for one call of ``fn`` (``plan`` from :func:`call_plan`)."""
    extras = extras or {}
    plan = plan or call_plan(fn)
    if plan is None:
        return dict(params)
    named, var_kw = plan
    kwargs: Dict[str, Any] = {}
    for pname in named:
        if pname in params:
            kwargs[pname] = params[pname]
        elif pname == "hparams":
            kwargs[pname] = dict(params)
        elif pname == "reporter":
            kwargs[pname] = reporter
        elif pname == "budget" and budget is not None:
            kwargs[pname] = budget
        elif pname in extras:
            kwargs[pname] = extras[pname]
    if var_kw:
        for pname, value in params.items():
            kwargs.setdefault(pname, value)
        if budget is not None:
            kwargs.setdefault("budget", budget)
    return kwargs


def final_metric(returned: Any, key: str):
    """``(value, other_metrics)`` from what the training function returned."""
    if returned is None:
        raise InvalidMetricError(f"the training function returned nothing; return the metric "
                                 f"(a number) or a dict with key {key!r}")
    if isinstance(returned, dict):
        if key not in returned:
            keys = ", ".join(map(repr, returned)) or "none"
            raise InvalidMetricError(f"the returned dict has no optimization key {key!r} "
                                     f"(its keys: {keys}); add it or set optimization_key")
        value = _metric(returned[key], f"the returned {key!r}")
        others = {}
        for k, v in returned.items():
            if k != key:
                try:
                    others[str(k)] = as_metric(v, k)
                except MaggyError:
                    others[str(k)] = str(v)[:200]
        return value, others
    return _metric(returned, "the returned metric"), {}


def _metric(value: Any, what: str) -> float:
    try:
        return as_metric(value, what)
    except MaggyError as exc:
        raise InvalidMetricError(str(exc)) from None


# -- output routing -------------------------------------------------------------------
