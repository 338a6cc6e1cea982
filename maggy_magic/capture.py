"""Run a ``%%maggy`` cell body and find what the experiment needs in it.

- :func:`run_cell` executes the body in the notebook's namespace, exactly like an ordinary
  cell (so what it defines stays bound: ``train`` can be called in the next cell), and
  reports which names the cell bound.
- :func:`find_train_fn`, :func:`find_searchspace` and :func:`find_study` pick the training
  function, the search space and the ablation study: the one named by
  ``--fn``/``--space``/``--study``, else the only candidate the cell defines (the search
  space and the study may also come from an earlier cell). None or several candidates
  give a one-line :class:`~maggy_magic.errors.MaggyError` naming them.

Whether the training function can travel to the workers is checked by the experiment
itself (:mod:`maggy_magic.portable`), for the magics and the Python API alike.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, Optional, Set

from .ablation.study import AblationStudy
from .errors import (
    AblationError,
    ConfigError,
    MaggyError,
    SearchspaceError,
    TrainFunctionError,
    closest,
)
from .searchspace import Searchspace


class CellCapture:
    """What running a cell body produced: its ``source``, the code's ``filename`` and the
    names it bound (``defined``: name → value, new or rebound names only)."""

    def __init__(self, source: str, filename: str, defined: Dict[str, Any]):
        self.source = source
        self.filename = filename
        self.defined = defined

    def functions(self) -> Dict[str, Callable]:
        """The functions whose code is in this cell (``def`` and ``lambda``), in order."""
        found = {name: value for name, value in self.defined.items()
                 if inspect.isfunction(value)
                 and inspect.unwrap(value).__code__.co_filename == self.filename}
        return dict(sorted(found.items(),
                           key=lambda item: inspect.unwrap(item[1]).__code__.co_firstlineno))


def run_cell(shell: Any, source: str) -> CellCapture:
    """Execute ``source`` (IPython syntax allowed) in ``shell``'s user namespace.

    Errors raised by the cell propagate unchanged, with the cell's lines in the traceback.
    """
    namespace = shell.user_ns
    before = dict(namespace)
    code_text = shell.transform_cell(source)
    filename = shell.compile.cache(code_text, shell.execution_count, raw_code=source)
    code = shell.compile(code_text, filename, "exec")
    exec(code, shell.user_global_ns, namespace)  # noqa: S102 - this is the user's cell
    defined = {name: value for name, value in namespace.items()
               if name not in before or before[name] is not value}
    return CellCapture(source, filename, defined)


# -- the training function ------------------------------------------------------------
def find_train_fn(capture: CellCapture, namespace: Dict[str, Any], name: Optional[str],
                  accepts: Callable[[Callable], None],
                  exclude: Iterable[Any] = ()) -> Callable:
    """The training function: ``namespace[name]`` if ``name`` is given, else the one
    function the cell defines that ``accepts`` (a check that raises
    :class:`TrainFunctionError` when the experiment cannot call it) lets through.
    Functions in ``exclude`` (an ablation study's generators) are never candidates."""
    if name:
        if name not in namespace:
            functions = [n for n, v in namespace.items()
                         if inspect.isfunction(v) and not n.startswith("_")]
            hint = closest(name, functions)
            raise ConfigError(f"--fn {name!r} is not defined in the notebook"
                              + (f"; did you mean {hint!r}?" if hint else
                                 "; define it in the cell or pass the name of the "
                                 "training function"))
        fn = namespace[name]
        if not callable(fn):
            raise ConfigError(f"--fn {name!r} is a {type(fn).__name__}, not a function; pass "
                              "the name of the training function")
        return fn
    excluded = {id(fn) for fn in exclude}
    functions = {n: fn for n, fn in capture.functions().items() if id(fn) not in excluded}
    if not functions:
        raise TrainFunctionError("the cell defines no function; define the training "
                                 "function in the cell (def train(...): ...) or pass --fn NAME")
    if len(functions) == 1:
        return next(iter(functions.values()))
    callable_ = {}
    for fname, fn in functions.items():
        try:
            accepts(fn)
        except MaggyError:
            continue
        callable_[fname] = fn
    if len(callable_) == 1:
        return next(iter(callable_.values()))
    listed = ", ".join(callable_ or functions)
    if callable_:
        raise TrainFunctionError(f"the cell defines {len(callable_)} functions the experiment "
                                 f"could call ({listed}); say which one trains with --fn NAME")
    raise TrainFunctionError(f"none of the cell's functions ({listed}) takes the search "
                             "space's parameters; fix the training function's arguments or "
                             "pass --fn NAME")


# -- the search space -----------------------------------------------------------------
def find_searchspace(capture: CellCapture, namespace: Dict[str, Any], name: Optional[str],
                     *, required: bool = True) -> Searchspace:
    """The search space: ``namespace[name]`` if given, else the one Searchspace the cell
    binds, else the one in the notebook's namespace. With ``required=False`` a missing
    one gives an empty Searchspace (and the notebook's namespace is not searched)."""
    if name:
        value = namespace.get(name)
        if not isinstance(value, Searchspace):
            spaces = _spaces(namespace)
            hint = closest(name, spaces)
            what = "is not defined" if name not in namespace else \
                f"is a {type(value).__name__}, not a Searchspace"
            raise ConfigError(f"--space {name!r} {what}"
                              + (f"; did you mean {hint!r}?" if hint else
                                 "; pass the name of a Searchspace"))
        return value
    in_cell = _spaces(capture.defined)
    if len(in_cell) == 1:
        return next(iter(in_cell.values()))
    if len(in_cell) > 1:
        raise SearchspaceError(f"the cell defines {len(in_cell)} search spaces "
                               f"({', '.join(in_cell)}); keep one or pick it with --space NAME")
    if not required:
        return Searchspace()
    in_notebook = _spaces(namespace)
    if len(in_notebook) == 1:
        return next(iter(in_notebook.values()))
    if len(in_notebook) > 1:
        raise SearchspaceError(f"the cell defines no search space and the notebook has "
                               f"{len(in_notebook)} ({', '.join(in_notebook)}); define one in "
                               "the cell or pick one with --space NAME")
    raise SearchspaceError("no search space: define one in the cell, e.g. searchspace = "
                           "Searchspace(x=('DOUBLE', [0, 1])), or pass --space NAME")


# -- the ablation study ---------------------------------------------------------------
def find_study(capture: CellCapture, namespace: Dict[str, Any],
               name: Optional[str]) -> AblationStudy:
    """The ablation study: ``namespace[name]`` if given, else the one AblationStudy the
    cell binds, else the one in the notebook's namespace."""
    if name:
        value = namespace.get(name)
        if not isinstance(value, AblationStudy):
            hint = closest(name, _instances(namespace, AblationStudy))
            what = "is not defined" if name not in namespace else \
                f"is a {type(value).__name__}, not an AblationStudy"
            raise ConfigError(f"--study {name!r} {what}"
                              + (f"; did you mean {hint!r}?" if hint else
                                 "; pass the name of an AblationStudy"))
        return value
    for where, names in (("the cell", capture.defined), ("the notebook", namespace)):
        found = _instances(names, AblationStudy)
        if len(found) == 1:
            return next(iter(found.values()))
        if len(found) > 1:
            raise AblationError(f"{where} defines {len(found)} ablation studies "
                                f"({', '.join(found)}); keep one or pick it with --study NAME")
    raise AblationError("no ablation study: define one in the cell, e.g. study = "
                        "AblationStudy('data', 1, 'label'), or pass --study NAME")


def _instances(names: Dict[str, Any], cls: type) -> Dict[str, Any]:
    """Instances of ``cls`` by name, one name per object, names with ``_`` skipped."""
    found: Dict[str, Any] = {}
    seen: Set[int] = set()
    for name, value in names.items():
        if isinstance(value, cls) and not name.startswith("_") and id(value) not in seen:
            seen.add(id(value))
            found[name] = value
    return found


def _spaces(names: Dict[str, Any]) -> Dict[str, Searchspace]:
    """Searchspace objects by name, one name per object, names with ``_`` skipped."""
    found: Dict[str, Searchspace] = {}
    seen: Set[int] = set()
    for name, value in names.items():
        if isinstance(value, Searchspace) and not name.startswith("_") and \
                id(value) not in seen:
            seen.add(id(value))
            found[name] = value
    return found
