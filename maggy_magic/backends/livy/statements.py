"""The Python code of every statement the client sends to a Livy session.

Data enters the code only as ``repr`` of strings and numbers, so nothing the user typed
can change what a statement does. Probe, upload and install use the standard library
alone (they run before maggy_magic is importable there); the others call
:mod:`.remote`. Each statement prints one framed reply (:func:`.bundle.reply`).
"""

from __future__ import annotations

from typing import Optional

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
    import base64, importlib, json, os, sys, tempfile
    from pyspark import SparkContext
    state = globals()[{state!r}]
    data = base64.b64decode("".join(state["uploads"].pop({key!r})))
    try:
        user = str(os.getuid())
    except AttributeError:
        user = os.environ.get("USERNAME", "user")
    folder = os.path.join(tempfile.gettempdir(), "maggy-livy-" + user)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, {name!r})
    with open(path + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(path + ".tmp", path)
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


def install(key: str, name: str) -> str:
    """Write the upload ``key`` as the zip ``name``, put it on the driver's sys.path and
    ``sc.addPyFile`` it (executors), import it; reply ``{version, path}``."""
    return _INSTALL.format(key=key, name=name, **_framing())


def start(spec_json: str, source: Optional[str]) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.start(globals(), {spec_json!r}, {source!r}))\n")


def poll(run_id: str, cursor: int, limit: int) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.poll(globals(), {run_id!r}, {int(cursor)}, {int(limit)}))\n")


def stop(run_id: str, mode: str, reason: str) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.stop(globals(), {run_id!r}, {mode!r}, {reason!r}))\n")


def forget(run_id: str) -> str:
    return (f"import {_REMOTE} as _maggy_remote\n"
            f"print(_maggy_remote.forget(globals(), {run_id!r}))\n")
