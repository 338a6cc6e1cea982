"""Can the training function travel to the workers? Serialise it once, or say why not.

Functions defined in a notebook (``__main__``) are pickled by value by cloudpickle,
together with the globals they use, recursively through helpers from earlier cells;
functions from importable modules travel by reference. A global that does not exist, or
one that cannot be pickled (a lock, a socket, an open file), is reported by name before
any worker starts. The bytes go to workers only through a backend's launch channel
(process stdin, Spark's task closure), never through the RPC.
"""

from __future__ import annotations

import builtins
import dis
import inspect
import types
from typing import Any, Callable, Iterator, List, Set

from .errors import TrainFunctionError


def serialize(fn: Callable) -> bytes:
    """``fn`` as cloudpickle bytes, or a :class:`TrainFunctionError` naming what cannot go.

    Checks, without running anything: every global name that ``fn`` (and each notebook
    function or class it uses, recursively) reads exists; then that cloudpickle can
    serialise ``fn``. When it cannot, the global, closure variable or default that fails
    is named.
    """
    cloudpickle = cloudpickle_module()
    label = f"{getattr(fn, '__name__', 'the training function')}()"
    for chain, name in _missing_globals(fn):
        via = "".join(f"{c}() → " for c in chain[1:])
        raise TrainFunctionError(
            f"{label} uses {via}{name!r}, which is not defined in the notebook; define it in "
            "this cell or an earlier one (or import it inside the function) so the "
            "workers get it")
    try:
        return cloudpickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is reported the same way
        problem = _first_line(exc)
        for chain, name, value in _referenced_values(fn):
            try:
                cloudpickle.dumps(value)
            except Exception as inner:  # noqa: BLE001
                via = "".join(f"{c}() → " for c in chain[1:])
                raise TrainFunctionError(
                    f"{label} uses {via}{name!r} (a {type(value).__name__}), which cannot be "
                    f"sent to the workers ({_first_line(inner)}); create it inside the "
                    "function instead") from None
        raise TrainFunctionError(f"{label} cannot be sent to the workers ({problem}); "
                                 "move what it cannot pickle inside the function") from None


def cloudpickle_module() -> Any:
    """The ``cloudpickle`` package, or the copy that ships inside pyspark (a cluster's
    Python may have pyspark and nothing else)."""
    try:
        import cloudpickle
    except ImportError:
        from pyspark import cloudpickle  # type: ignore[no-redef]
    return cloudpickle


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _by_value(obj: Any) -> bool:
    """Whether cloudpickle sends ``obj`` with its code (it is defined in the notebook)."""
    if getattr(obj, "__module__", None) in ("__main__", None):
        return True
    qualname = getattr(obj, "__qualname__", "")
    return "<locals>" in qualname or "<lambda>" in qualname  # not importable by name


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _global_reads(fn: types.FunctionType) -> List[str]:
    """Global names ``fn``'s code reads, minus those it assigns with ``global``."""
    reads: List[str] = []
    assigned: Set[str] = set()
    for code in _code_objects(fn.__code__):
        stored_here = set()
        for ins in dis.get_instructions(code):
            if ins.opname == "STORE_GLOBAL":
                assigned.add(ins.argval)
            elif ins.opname == "STORE_NAME":
                stored_here.add(ins.argval)  # class bodies: their own names
            elif ins.opname == "LOAD_GLOBAL" or (
                    ins.opname == "LOAD_NAME" and ins.argval not in stored_here):
                if ins.argval not in reads:
                    reads.append(ins.argval)
    return [name for name in reads if name not in assigned]


def _notebook_functions(obj: Any) -> List[types.FunctionType]:
    """``obj`` itself if it is a notebook function, or a notebook class's methods."""
    obj = inspect.unwrap(obj) if callable(obj) else obj
    if inspect.isfunction(obj) and _by_value(obj):
        return [obj]
    if inspect.isclass(obj) and _by_value(obj):
        found = []
        for member in vars(obj).values():
            member = getattr(member, "__func__", member)  # staticmethod / classmethod
            if inspect.isfunction(member):
                found.append(member)
        return found
    return []


def _walk(fn: Callable) -> Iterator[tuple]:
    """``(chain, fn)`` for ``fn`` and every notebook function reachable through globals."""
    seen: Set[int] = set()
    stack = [((getattr(fn, "__name__", "fn"),), f) for f in _notebook_functions(fn)]
    while stack:
        chain, current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield chain, current
        for name in _global_reads(current):
            if name in current.__globals__:
                for inner in _notebook_functions(current.__globals__[name]):
                    stack.append((chain + (name,), inner))
        for cell in current.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:
                continue
            for inner in _notebook_functions(contents):
                stack.append((chain + (getattr(inner, "__name__", "?"),), inner))


def _missing_globals(fn: Callable) -> Iterator[tuple]:
    for chain, current in _walk(fn):
        for name in _global_reads(current):
            if name not in current.__globals__ and not hasattr(builtins, name):
                yield chain, name


def _referenced_values(fn: Callable) -> Iterator[tuple]:
    """``(chain, name, value)`` for each global, closure variable and default used."""
    for chain, current in _walk(fn):
        for name in _global_reads(current):
            if name in current.__globals__:
                value = current.__globals__[name]
                if not _notebook_functions(value) or inspect.isclass(value):
                    yield chain, name, value
        for name, cell in zip(current.__code__.co_freevars, current.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if not _notebook_functions(value):
                yield chain, name, value
        params = inspect.signature(current).parameters.values() \
            if current.__defaults__ or current.__kwdefaults__ else ()
        for param in params:
            if param.default is not param.empty:
                yield chain, f"default of {param.name}", param.default


def captured_values(fn: Callable) -> Iterator[tuple]:
    """``(name, value)`` for each global, closure variable and default that travels with
    ``fn`` (and the notebook functions it calls), named as ``f() → name`` past ``fn``."""
    for chain, name, value in _referenced_values(fn):
        yield "".join(f"{c}() → " for c in chain[1:]) + name, value
