"""Getting maggy_magic (and a training function's module) onto Spark executors.

``package_zip()`` builds a pure-Python zip of this package, cached per version and content
hash in a folder only this user can write (a cached file is reused only if its bytes still
hash to its name). ``probe_modules(sc, names)`` asks one executor which of ``names`` it
can import, without importing them there (an import would pin that module in the reused
Python worker, shadowing a zip added later). ``Shipper`` combines both for one
SparkContext and remembers, per Spark application, what it already probed and shipped.
Given the training function, it also adds the zip of the function's local modules
(:mod:`maggy_magic.codeship`) and checks that the executors can import the installed
packages the function needs (one they cannot is a one-line ``ConfigError``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import zipfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import maggy_magic

from ...codeship import find_needs
from ...codezip import code_zips, store_zip, zip_bytes
from ...errors import ConfigError, did_you_mean
from ...logs import logger

PACKAGE = "maggy_magic"
_cache_lock = threading.Lock()
#: (application id, module name) -> (importable, version or error); (app, "zip:" + name) -> True
_known: Dict[Tuple[str, str], Any] = {}


def package_dir() -> str:
    """The folder this package's files were imported from (inside a zip if shipped)."""
    return os.path.dirname(os.path.abspath(maggy_magic.__file__))


def _sources(root: str) -> List[str]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")
                  or n == "py.typed"]
    return files


def _enclosing_archive(path: str) -> Optional[str]:
    """The zip file that ``path`` lies inside, if the package was itself imported from one."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return path if zipfile.is_zipfile(path) else None


def _zip_bytes(root: str, files: List[str]) -> bytes:
    """The zip of ``files`` (under ``root``) as ``maggy_magic/...``: the same bytes for
    the same files (fixed timestamps and modes), so its hash names its contents."""
    return zip_bytes(("/".join([PACKAGE] + os.path.relpath(path, root).split(os.sep)), path)
                     for path in files)


def package_zip(cache_dir: Optional[str] = None) -> str:
    """Path of a zip holding this package's Python files (``maggy_magic/...``).

    The name carries the version and the start of the zip's sha256, so an edited source
    tree gets a new zip. The zip lives in a folder only this user can write
    (``$TMPDIR/maggy-magic-<uid>/zips``, or ``cache_dir``; see :mod:`maggy_magic.private_dirs`:
    one another user made or can write is an :class:`~maggy_magic.errors.UnsafePathError`),
    and a file already there under that name is reused only if its bytes hash to the zip's
    (else it is rewritten). If this package was itself imported from a zip (e.g. shipped
    to a Livy driver), that zip is returned.
    """
    root = package_dir()
    if not os.path.isdir(root):
        archive = _enclosing_archive(root)
        if archive is None:
            raise FileNotFoundError(f"cannot find the files of {PACKAGE} at {root}")
        return archive
    data = _zip_bytes(root, _sources(root))
    name = f"{PACKAGE}-{maggy_magic.__version__}-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    return store_zip(name, data, cache_dir)


def module_answers(names: Iterable[str]) -> Callable[[], Dict[str, List[Any]]]:
    """A function, built from nothing but the standard library (so that it runs where
    maggy_magic cannot be imported), that answers ``name -> [importable, version]`` for
    ``names`` in the Python that calls it. It uses ``importlib.util.find_spec`` and reads
    ``__version__`` from the source: nothing is imported there."""
    wanted = list(names)

    def answer() -> Dict[str, List[Any]]:
        import importlib.util
        import re as _re

        found = {}
        for module in wanted:
            try:
                spec = importlib.util.find_spec(module)
            except Exception:  # noqa: BLE001 - a parent package failed to import
                spec = None
            version = None
            get_source = getattr(getattr(spec, "loader", None), "get_source", None)
            if get_source is not None and "." not in module:
                try:
                    match = _re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""",
                                       get_source(module) or "", _re.M)
                    version = match.group(1) if match else None
                except Exception:  # noqa: BLE001 - no source (compiled only)
                    pass
            found[module] = [spec is not None, version]
        return found

    return answer


def probe_modules(sc: Any, names: Iterable[str]) -> Dict[str, Tuple[bool, Optional[str]]]:
    """``name -> (importable, version)`` as seen by the Python worker of one executor task
    (:func:`module_answers`, run in a one-task job)."""
    answer = module_answers(names)

    def probe(_: Any) -> Iterable[Dict[str, Any]]:
        yield answer()

    found = sc.parallelize([0], 1).mapPartitions(probe).collect()[0]
    return {name: (bool(ok), version) for name, (ok, version) in found.items()}


class ClassicTarget:
    """Where a :class:`Shipper` ships to on a classic session: ``key`` (the application
    id), ``probe(names)`` (:func:`probe_modules`) and ``add(path)`` (``sc.addPyFile``)."""

    def __init__(self, sc: Any):
        self.sc = sc
        self.key = sc.applicationId

    def probe(self, names: List[str]) -> Dict[str, Tuple[bool, Optional[str]]]:
        return probe_modules(self.sc, names)

    def add(self, path: str) -> None:
        self.sc.addPyFile(path)


class Shipper:
    """Makes ``maggy_magic`` importable on the executors of one SparkContext (or of the
    ``target`` given: anything with ``key``, ``probe(names)`` and ``add(path)``, such as a
    Spark Connect session's, :mod:`.connect`).

    ``mode`` is ``"auto"`` (probe an executor; ship the zip if it cannot import this
    version), ``"always"`` or ``"never"``. ``prepare(extra_modules)`` returns the subset of
    ``extra_modules`` the executors cannot import (the backend pickles those by value).
    Probe answers and shipped zips are remembered per Spark application.
    """

    MODES = ("auto", "always", "never")

    def __init__(self, sc: Any, mode: str = "auto", function: Any = None,
                 target: Any = None):
        self.target = target if target is not None else ClassicTarget(sc)
        self.mode = mode
        self.shipped: Optional[str] = None
        #: What ``function`` needs (:func:`maggy_magic.codeship.find_needs`), if given.
        self.needs = find_needs(function) if function is not None else None
        #: The zips of the function's local modules, added before the workers start.
        self.code: List[str] = []

    def prepare(self, extra_modules: Iterable[str] = ()) -> List[str]:
        """Probe, then add the function's local modules and maggy_magic if needed;
        returns the ``extra_modules`` the executors cannot import. An installed package
        the function needs that the executors cannot import is a :class:`ConfigError`."""
        app = self.target.key
        extra = [m for m in dict.fromkeys(extra_modules) if m and m != "__main__"]
        installed = [m for m in (self.needs.installed if self.needs else ())
                     if m not in extra and m != PACKAGE]
        with _cache_lock:
            unknown = [m for m in extra + installed if (app, m) not in _known]
            probe_package = self.mode == "auto" and (app, PACKAGE) not in _known
        names = ([PACKAGE] if probe_package else []) + unknown
        if names:
            answers = self.target.probe(names)
            with _cache_lock:
                for name, answer in answers.items():
                    _known[(app, name)] = answer
        with _cache_lock:  # a missing package is asked again next time (added since?)
            missing = [m for m in installed if not _known[(app, m)][0]]
            for name in missing:
                del _known[(app, name)]
        if missing:
            raise ConfigError(missing_message(missing))
        if self.needs is not None:
            self.code = [self._add(app, path) for path in code_zips(self.needs)]
            if self.needs.unshippable:
                logger(__name__).warning(
                    "local module(s) %s have no Python source and cannot travel to the "
                    "executors in a zip; install them there", ", ".join(self.needs.unshippable))
        ship = self.mode == "always"
        if self.mode == "auto":
            with _cache_lock:
                importable, version = _known[(app, PACKAGE)]
            ship = not importable or version != maggy_magic.__version__
        if ship:
            self._ship(app)
        with _cache_lock:
            return [m for m in extra if not _known[(app, m)][0]]

    def _ship(self, app: str) -> None:
        self.shipped = self._add(app, package_zip())
        if self.mode == "auto":
            with _cache_lock:
                _known[(app, PACKAGE)] = (True, maggy_magic.__version__)

    def _add(self, app: str, path: str) -> str:
        """``target.add(path)`` once per Spark application and zip (named by its hash)."""
        key = (app, "zip:" + os.path.basename(path))
        with _cache_lock:
            done = key in _known
            _known[key] = True
        if not done:
            self.target.add(path)
        return path


def missing_message(names: List[str], where: str = "the Spark executors") -> str:
    """One line: installed packages the code needs are missing where it runs, and how to
    provide them."""
    them = "it" if len(names) == 1 else "them"
    return (f"the training function needs {', '.join(names)}, which {where} cannot "
            f"import; provide {them} with spark.archives (a packed environment), --py-files "
            f"/ spark.submit.pyFiles, or install {them} on the cluster")


def check_options(barrier: Any, ship: Any, start_timeout: Any) -> None:
    """The options every kind of Spark session takes; a bad one is a one-line
    :class:`ConfigError`."""
    if not isinstance(barrier, bool):
        raise ConfigError(f"spark backend option barrier must be True or False, got "
                          f"{barrier!r}")
    if ship not in Shipper.MODES:
        raise ConfigError(f"spark backend option ship must be one of "
                          f"{', '.join(Shipper.MODES)}, got {ship!r}; "
                          f"{did_you_mean(str(ship), Shipper.MODES)}")
    if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)) \
            or not start_timeout > 0:
        raise ConfigError(f"spark backend option start_timeout must be a positive number "
                          f"of seconds, got {start_timeout!r}")


def module_of(fn: Any) -> Optional[str]:
    """The module a training function (or a ``functools.partial`` of one) comes from."""
    return getattr(getattr(fn, "func", fn), "__module__", None)


def pickle_function(fn: Any, by_value: List[str]) -> bytes:
    """``fn`` pickled by ``pyspark.cloudpickle``; modules in ``by_value`` (those the
    executors cannot import) are pickled by value, like a notebook's ``__main__``."""
    from pyspark import cloudpickle

    added = []
    try:
        for name in by_value:
            module = sys.modules.get(name)
            if module is not None and name not in cloudpickle.list_registry_pickle_by_value():
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        return cloudpickle.dumps(fn)
    finally:
        for module in added:
            cloudpickle.unregister_pickle_by_value(module)
