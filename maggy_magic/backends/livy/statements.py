"""The Python code of every statement the client sends to a Livy session.

Data enters the code only as ``repr`` of strings and numbers, so nothing the user typed
can change what a statement does. Probe, upload and install use the standard library
alone (they run before maggy_magic is importable there); the others call
:mod:`.remote`. Each statement prints one framed reply (:func:`.bundle.reply`).
"""

from __future__ import annotations

from typing import List, Optional

from .bundle import REPLY_END, REPLY_START

_REMOTE = "maggy_magic.backends.livy.remote"
_STATE = "_maggy_livy"

_PROBE = """\
def _maggy_probe():
    import importlib.util, json, re, sys
    version = None
    try:
        spec = importlib.util.find_spec("maggy_magic")
    except Exception:
        spec = None
    if spec is not None and spec.loader is not None:
        try:
            found = re.search(r'''^__version__\\s*=\\s*['"]([^'"]+)['"]''',
                              spec.loader.get_source("maggy_magic") or "", re.M)
            version = found.group(1) if found else None
        except Exception:
            pass
    state = globals().get({state!r}) or {{}}
    return json.dumps({{"python": list(sys.version_info[:2]), "version": version,
                       "zip": state.get("zip"), "importable": spec is not None}})
print({start!r} + _maggy_probe() + {end!r})
del _maggy_probe
"""

_UPLOAD = """\
globals().setdefault({state!r}, {{"uploads": {{}}, "runs": {{}}}})["uploads"]\\
.setdefault({key!r}, []).append({chunk!r})
print({start!r} + '{{"chunks": %d}}' % len({state}["uploads"][{key!r}]) + {end!r})
"""

_INSTALL = """\
def _maggy_install():
    import base64, hashlib, importlib, json, sys
    from pyspark import SparkContext
    state = globals()[{state!r}]
    data = base64.b64decode("".join(state["uploads"].pop({key!r})))
    if {digest!r} is not None and hashlib.sha256(data).hexdigest() != {digest!r}:
        return json.dumps({{"error": {{"type": "LivyError", "message":
            "the package upload arrived damaged on the cluster; run again"}}}})
    private = {{"__name__": "_maggy_private_dirs", "__package__": ""}}
    exec(compile({private_dirs!r}, "<maggy_magic.private_dirs>", "exec"), private)
    try:
        folder = private["private_dir"]("maggy-livy-" + private["user_tag"]())
        path = private["install_file"](folder, {name!r}, data)
    except private["UnsafePathError"] as exc:
        return json.dumps({{"error": {{"type": "UnsafePathError", "message": str(exc)}}}})
    for module in [m for m in sys.modules if m == "maggy_magic" or
                   m.startswith("maggy_magic.")]:
        del sys.modules[module]
    if path not in sys.path:
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    SparkContext.getOrCreate().addPyFile(path)
    import maggy_magic
    state["zip"] = {name!r}
    return json.dumps({{"version": maggy_magic.__version__, "path": path}})
print({start!r} + _maggy_install() + {end!r})
del _maggy_install
"""


def _framing() -> dict:
    return {"start": REPLY_START, "end": REPLY_END, "state": _STATE}


def probe() -> str:
    """Reply ``{python, version, zip, importable}`` without importing maggy_magic."""
    return _PROBE.format(**_framing())


def upload(key: str, chunk: str) -> str:
    """Append one base64 ``chunk`` to the upload called ``key``."""
    return _UPLOAD.format(key=key, chunk=chunk, **_framing())


def install(key: str, name: str, digest: Optional[str] = None) -> str:
    """Write the upload ``key`` as the zip ``name``, put it on the driver's sys.path and
    ``sc.addPyFile`` it (executors), import it; reply ``{version, path}``, or ``{error}``.

    The zip goes to ``$TMPDIR/maggy-livy-<uid>`` on the driver, made and checked there by
    the source of :mod:`maggy_magic.private_dirs` (a folder another user made or can
    write is an ``UnsafePathError`` reply); a file of that name is kept only if its
    bytes are the upload's. ``digest``, the upload's sha256, is checked first if given."""
    return _INSTALL.format(key=key, name=name, digest=digest,
                           private_dirs=_private_dirs_source(), **_framing())


_HAS_CODE = """\
print({start!r} + ('{{"have": true}}' if {name!r} in (globals().get({state!r}) or {{}})\
.get("code", {{}}) else '{{"have": false}}') + {end!r})
"""

_INSTALL_CODE = """\
def _maggy_code():
    import base64, hashlib, importlib, json, sys
    from pyspark import SparkContext
    state = globals()[{state!r}]
    data = base64.b64decode("".join(state["uploads"].pop({key!r})))
    if hashlib.sha256(data).hexdigest() != {digest!r}:
        return json.dumps({{"error": {{"type": "LivyError", "message": "the upload of the "
            "training function's modules arrived damaged on the cluster; run again"}}}})
    private = {{"__name__": "_maggy_private_dirs", "__package__": ""}}
    exec(compile({private_dirs!r}, "<maggy_magic.private_dirs>", "exec"), private)
    try:
        folder = private["private_dir"]("maggy-livy-" + private["user_tag"]())
        path = private["install_file"](folder, {name!r}, data)
    except private["UnsafePathError"] as exc:
        return json.dumps({{"error": {{"type": "UnsafePathError", "message": str(exc)}}}})
    for module in [m for m in sys.modules if m.split(".")[0] in {modules!r}]:
        del sys.modules[module]  # an earlier copy: the next import reads this zip
    if path not in sys.path:
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    SparkContext.getOrCreate().addPyFile(path)
    state.setdefault("code", {{}})[{name!r}] = path
    return json.dumps({{"path": path}})
print({start!r} + _maggy_code() + {end!r})
del _maggy_code
"""


def has_code(name: str) -> str:
    """Reply ``{have}``: whether the session installed the code zip ``name`` already."""
    return _HAS_CODE.format(name=name, **_framing())


def install_code(key: str, name: str, digest: str, modules: List[str]) -> str:
    """Write the upload ``key`` (sha256 ``digest``, checked) as the zip ``name`` of the
    training function's local modules next to the package zip, forget the earlier
    copies of ``modules`` the driver imported, put the zip first on its sys.path and
    ``sc.addPyFile`` it; reply ``{path}`` or ``{error}``."""
    return _INSTALL_CODE.format(key=key, name=name, digest=digest, modules=sorted(modules),
                                private_dirs=_private_dirs_source(), **_framing())


def _private_dirs_source() -> str:
    import inspect

    from ... import private_dirs

    return inspect.getsource(private_dirs)


def start(spec_json: str, source: Optional[str]) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.start(globals(), {spec_json!r}, {source!r}))\n")


def start_cell(spec_json: str) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.start_cell(globals(), {spec_json!r}))\n")


def poll(run_id: str, cursor: int, limit: int) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.poll(globals(), {run_id!r}, {int(cursor)}, {int(limit)}))\n")


def stop(run_id: str, mode: str, reason: str) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.stop(globals(), {run_id!r}, {mode!r}, {reason!r}))\n")


def runs() -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.runs(globals()))\n")


def replay(run_id: str, first: int, end: int, limit: int) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.replay(globals(), {run_id!r}, {int(first)}, {int(end)}, "
            f"{int(limit)}))\n")


def forget(run_id: str) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.forget(globals(), {run_id!r}))\n")
