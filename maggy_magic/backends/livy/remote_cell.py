"""A ``%%maggy`` cell run in the Livy session's namespace (``--cell remote``; the default
in sparkmagic's PySpark kernel, where every other cell runs there too).

Runs on the Livy side. :class:`NamespaceShell` gives the session's globals the few parts
of an IPython shell that :func:`maggy_magic.capture.run_cell` uses, so the SAME builders
as in a kernel (:mod:`maggy_magic.cell_builders`) run the body there and find the
training function, the search space, the study, the dist model and dataset among the
names the cell bound or the session already had (data an earlier cell loaded, helpers it
defined). Nothing of the cell travels as a pickle: the kernel sends its text.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import linecache
from typing import Any, Callable, Dict, Tuple

#: Spec keys that are not config keywords (the cell, the names it gives, the kind).
_NOT_OPTIONS = ("kind", "framework", "cell", "magic", "objects", "searchspace", "model",
                "dataset", "hparams", "ablation_study")
_cells = itertools.count(1)


class _Compiler:
    """``compile`` plus IPython's ``cache``: the cell's text is kept in :mod:`linecache`
    under a name of its own, so tracebacks and ``inspect.getsource`` show its lines."""

    def cache(self, code: str, number: int = 0, raw_code: Any = None) -> str:
        filename = f"<maggy-cell-{number}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        return filename

    def __call__(self, code: str, filename: str, mode: str) -> Any:
        return compile(code, filename, mode)


class NamespaceShell:
    """The session's global namespace seen as the shell a cell runs in."""

    def __init__(self, namespace: Dict[str, Any]):
        self.user_ns = self.user_global_ns = namespace
        self.execution_count = next(_cells)
        self.compile = _Compiler()

    @staticmethod
    def transform_cell(source: str) -> str:
        return source  # the session runs plain Python


def build(spec: Dict[str, Any], namespace: Dict[str, Any],
          backend_options: Dict[str, Any]) -> Tuple[Any, Callable, str]:
    """``(config, train_fn, printed)``: the cell of ``spec`` run in ``namespace`` by the
    builder of its kind, with the line's options and the spark backend on
    ``backend_options``; ``printed`` is what the cell wrote to stdout. The cell's own
    errors and the builders' one-line errors propagate."""
    from ...cell_builders import CELL_COMMANDS

    kind = spec.get("kind", "hpo")
    magic = dict(spec.get("magic") or {})
    if kind == "dist":
        magic.setdefault("framework", spec.get("framework"))
    options = {k: v for k, v in spec.items() if k not in _NOT_OPTIONS}
    options["backend_options"] = backend_options
    shell = NamespaceShell(namespace)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        config, train_fn = CELL_COMMANDS[kind](shell, options, magic, spec["cell"])
    return config, train_fn, printed.getvalue().rstrip("\n")
