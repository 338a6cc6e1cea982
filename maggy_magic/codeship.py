"""The user's code that a training function needs, and the zip that carries it.

Contract. :func:`find_needs` (``fn``) reads, without importing or running anything:

* the modules among the globals the function's code reads and among its closure cells
  (a function or class found there counts through its ``__module__``, any other object
  through its type's; notebook functions and classes it uses are read the same way);
* every ``import`` in its code, nested functions, lambdas and classes included;
* the function's own ``__module__``;
* transitively, the imports (read with :mod:`ast`) of every *local* module found.

A module is *local* when its file lies neither in the standard library nor in an
installed location: a ``site-packages`` / ``dist-packages`` folder, the ``sysconfig`` and
:mod:`site` paths, or a ``sys.path`` folder holding a ``*.dist-info`` (something pip
installed there, ``pip install --target`` included). ``__main__``, ``maggy_magic`` (it
ships itself), ``pyspark`` and ``py4j`` (every executor has them) never are. A local
single-file module ships as its file, a local package as its whole folder (``.py`` files,
``__pycache__`` skipped), and a local module imported from a zip as that zip.

:attr:`Needs.installed` names the installed top-level packages the code needs for sure:
imported by the function, or at the top of a local module outside ``try`` (an optional
import) and ``if TYPE_CHECKING``. A backend checks those where the code runs.

:func:`code_zips` writes the local modules as one zip whose bytes depend on their
contents alone (:func:`zip_bytes`: fixed timestamps and modes), named by its hash, in
the private folder of :mod:`maggy_magic.private_dirs` where the package zip lives.
Standard library only.
"""

from __future__ import annotations

import ast
import dis
import functools
import importlib.machinery
import inspect
import os
import site
import sys
import sysconfig
import types
import zipfile
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

#: Never the user's code: the notebook, this package (it ships itself), Spark's own.
NEVER = ("__main__", "maggy_magic", "pyspark", "py4j")
#: Folder names that mark an installed location.
INSTALLED_PARTS = ("site-packages", "dist-packages")
LOCAL, INSTALLED, STDLIB = "local", "installed", "stdlib"


class Needs:
    """What ``fn`` needs besides the standard library.

    ``local``: top-level name -> the file or package folder to ship; ``archives``: zips
    local modules were imported from; ``installed``: top-level names of installed
    packages needed for sure; ``unshippable``: local modules with no Python source
    (compiled extensions), which cannot go in a zip."""

    def __init__(self) -> None:
        self.local: Dict[str, str] = {}
        self.archives: List[str] = []
        self.installed: List[str] = []
        self.unshippable: List[str] = []


# -- where a module comes from -----------------------------------------------------------
def _norm(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep)
               for root in roots)


def _roots() -> Tuple[List[str], List[str]]:
    """``(installed, stdlib)`` folders of this interpreter, normalised."""
    installed: Set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        if paths.get(key):
            installed.add(paths[key])
    installed.update(getattr(site, "getsitepackages", list)())
    installed.add(site.getusersitepackages())
    for entry in sys.path:
        folder = entry or os.getcwd()
        try:
            if any(name.endswith(".dist-info") for name in os.listdir(folder)):
                installed.add(folder)
        except OSError:
            continue
    stdlib = {p for p in (paths.get("stdlib"), paths.get("platstdlib")) if p}
    return sorted(map(_norm, installed)), sorted(map(_norm, stdlib))


def kind_of(path: str, roots: Optional[Tuple[List[str], List[str]]] = None) -> str:
    """``"installed"``, ``"stdlib"`` or ``"local"`` for a module's file or folder."""
    installed, stdlib = roots or _roots()
    real = _norm(path)
    if set(real.split(os.sep)) & set(INSTALLED_PARTS) or _under(real, installed):
        return INSTALLED
    return STDLIB if _under(real, stdlib) else LOCAL


def _archive(path: str) -> Optional[str]:
    """The zip file that ``path`` lies inside, if any."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return path if os.path.isfile(path) and zipfile.is_zipfile(path) else None


def find_spec(name: str) -> Optional[Any]:
    """The spec of module ``name`` without importing it (nor its parents), or None."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None) if module is not None else None
    if spec is not None:
        return spec
    parent, _, _ = name.rpartition(".")
    try:
        if parent:
            outer = find_spec(parent)
            where = getattr(outer, "submodule_search_locations", None)
            return importlib.machinery.PathFinder.find_spec(name, list(where)) \
                if where else None
        if name in sys.builtin_module_names:
            return None
        return importlib.machinery.PathFinder.find_spec(name)
    except (ImportError, ValueError, OSError):
        return None


def _origin(spec: Any) -> Optional[str]:
    if spec.origin and spec.origin not in ("built-in", "frozen", "namespace"):
        return spec.origin
    where = list(spec.submodule_search_locations or [])
    return where[0] if where else None


# -- what a function's code names ---------------------------------------------------------
def _codes(code: types.CodeType) -> Iterable[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _resolve(name: str, level: int, package: Optional[str]) -> Optional[str]:
    """The absolute name of ``from <level dots><name> import ...`` in ``package``."""
    if not level:
        return name
    base = (package or "").split(".")
    if not package or level > len(base):
        return None
    return ".".join(base[:len(base) - level + 1] + ([name] if name else []))


def _notebook(obj: Any) -> bool:
    return getattr(obj, "__module__", None) in ("__main__", None) or \
        "<locals>" in getattr(obj, "__qualname__", "")


def _functions(fn: Any) -> List[types.FunctionType]:
    """The plain functions behind ``fn`` (a partial, a wrapper, a class, a callable)."""
    fn = getattr(fn, "func", fn)
    try:
        fn = inspect.unwrap(fn)
    except ValueError:  # pragma: no cover - a cycle of __wrapped__
        pass
    if inspect.ismethod(fn):
        fn = fn.__func__
    if inspect.isfunction(fn):
        return [fn]
    members = vars(fn).values() if inspect.isclass(fn) else \
        list(getattr(fn, "__dict__", {}).values()) + list(vars(type(fn)).values())
    found = []
    for member in members:
        member = getattr(member, "__func__", member)
        if inspect.isfunction(member):
            found.append(member)
    return found


class _Reader:
    """Collects ``(dotted module name, needed for sure)`` from functions."""

    def __init__(self) -> None:
        self.names: Dict[str, bool] = {}
        self.seen: Set[int] = set()
        self.todo: List[types.FunctionType] = []

    def add(self, name: Optional[str], sure: bool) -> None:
        if name:
            self.names[name] = self.names.get(name, False) or sure

    def value(self, value: Any) -> None:
        if isinstance(value, functools.partial):
            value = value.func
        if isinstance(value, types.ModuleType):
            self.add(value.__name__, True)
            prefix = value.__name__ + "."
            for name in [m for m in sys.modules if m.startswith(prefix)]:
                self.add(name, False)
        elif inspect.isfunction(value) or inspect.isclass(value):
            if _notebook(value):
                self.todo.extend(_functions(value))
            else:
                self.add(getattr(value, "__module__", None), True)
        elif not isinstance(value, (str, bytes, int, float, bool, type(None))):
            self.add(getattr(type(value), "__module__", None), True)

    def function(self, fn: types.FunctionType) -> None:
        if id(fn) in self.seen:
            return
        self.seen.add(id(fn))
        self.add(fn.__module__, True)
        package = fn.__globals__.get("__package__")
        for code in _codes(fn.__code__):
            consts: List[Any] = []
            for ins in dis.get_instructions(code):
                if ins.opname == "IMPORT_NAME":
                    level = consts[-2] if len(consts) >= 2 and isinstance(consts[-2], int) \
                        else 0
                    fromlist = consts[-1] if consts and isinstance(consts[-1], tuple) else ()
                    base = _resolve(ins.argval, level, package)
                    self.add(base, True)
                    for item in fromlist or ():  # a submodule, or a name in base
                        if base and item != "*":
                            self.add(f"{base}.{item}", True)
                elif ins.opname == "LOAD_CONST":
                    consts.append(ins.argval)
                elif ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                    if ins.argval in fn.__globals__:
                        self.value(fn.__globals__[ins.argval])
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        for default in (fn.__defaults__ or ()) + tuple((fn.__kwdefaults__ or {}).values()):
            self.value(default)

    def run(self, fn: Any) -> Dict[str, bool]:
        self.todo.extend(_functions(fn))
        while self.todo:
            self.function(self.todo.pop())
        return self.names


# -- what a local module's source imports -------------------------------------------------
class _Imports(ast.NodeVisitor):
    """``(dotted name, needed for sure)`` for every import of one module's source."""

    def __init__(self, package: Optional[str]) -> None:
        self.package = package
        self.found: List[Tuple[str, bool]] = []
        self.depth = 0  # inside a function, a try or an `if TYPE_CHECKING`

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested  # noqa: N815
    visit_Try = _nested  # noqa: N815
    if sys.version_info >= (3, 11):
        visit_TryStar = _nested  # noqa: N815

    def visit_If(self, node: ast.If) -> None:  # noqa: N802 - ast's name
        if "TYPE_CHECKING" in ast.unparse(node.test):
            self._nested(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        for alias in node.names:
            self.found.append((alias.name, self.depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        base = _resolve(node.module or "", node.level, self.package)
        if not base:
            return
        self.found.append((base, self.depth == 0))
        for alias in node.names:
            if alias.name != "*":
                self.found.append((f"{base}.{alias.name}", self.depth == 0))


def _source_of(name: str, spec: Any) -> Optional[str]:
    """The module's source: from its loader, or its ``.py`` file when the loader cannot
    give it (import hooks such as pytest's assertion rewriter have no ``get_source``)."""
    get_source = getattr(spec.loader, "get_source", None)
    if get_source is not None:
        return get_source(name)
    origin = getattr(spec, "origin", None)
    if origin and origin.endswith(".py") and os.path.isfile(origin):
        with open(origin, encoding="utf-8") as handle:
            return handle.read()
    return None


def _source_imports(name: str, spec: Any) -> List[Tuple[str, bool]]:
    is_package = spec.submodule_search_locations is not None
    try:
        tree = ast.parse(_source_of(name, spec) or "")
    except (ImportError, OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return []
    reader = _Imports(name if is_package else name.rpartition(".")[0])
    reader.visit(tree)
    return reader.found


# -- putting it together ------------------------------------------------------------------
def _never(name: str) -> bool:
    top = name.split(".")[0]
    return top in NEVER or name in NEVER


def find_needs(fn: Any) -> Needs:
    """The local modules and installed packages ``fn`` needs (see the module docstring)."""
    roots = _roots()
    needs = Needs()
    queue = list(_Reader().run(fn).items())
    done: Dict[str, bool] = {}  # name -> whether it was reached as needed for sure
    kinds: Dict[str, Optional[str]] = {}
    while queue:
        name, certain = queue.pop()
        if _never(name) or (name in done and (done[name] or not certain)):
            continue
        first = name not in done
        done[name] = certain
        top = name.split(".")[0]
        if top not in kinds:
            kinds[top] = _classify(top, roots, needs)
        if kinds[top] == INSTALLED and certain and top not in needs.installed:
            needs.installed.append(top)
        spec = find_spec(name) if kinds[top] == LOCAL else None
        if spec is not None:
            queue.extend((inner, sure and certain) for inner, sure in
                         _source_imports(name, spec) if first or sure)
    needs.installed.sort()
    return needs


def _classify(top: str, roots: Tuple[List[str], List[str]], needs: Needs) -> Optional[str]:
    """The kind of top-level module ``top``; a local one is recorded in ``needs``."""
    if top in getattr(sys, "stdlib_module_names", ()) or top in sys.builtin_module_names:
        return STDLIB
    spec = find_spec(top)
    origin = _origin(spec) if spec is not None else None
    if origin is None:
        return None
    archive = _archive(origin)
    kind = kind_of(archive or origin, roots)
    if kind != LOCAL:
        return kind
    if archive is not None:
        if archive not in needs.archives:
            needs.archives.append(archive)
    elif spec.submodule_search_locations is not None:
        needs.local[top] = os.path.dirname(origin) if os.path.isfile(origin) else origin
    elif origin.endswith(".py"):
        needs.local[top] = origin
    else:
        needs.unshippable.append(top)
    return LOCAL
