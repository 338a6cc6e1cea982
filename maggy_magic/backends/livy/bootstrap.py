"""Make the Livy session able to run this version of maggy_magic, and send it data.

``prepare(target, ship, timeout)`` probes the session's Python without importing
anything there: a different Python minor version is a :class:`LivyVersionError` before
anything runs; a missing or different maggy_magic gets the package zip (the one the
spark backend builds) uploaded in base64 chunks, written to a folder on the driver that
only the session's user can write (else an :class:`~maggy_magic.errors.UnsafePathError`),
put on its ``sys.path`` and ``sc.addPyFile``'d for the executors. ``ship_code`` does the
same with the zip of the training function's local modules. ``upload`` sends any bytes
in statements that grow while the session takes them quickly (a 100 MB payload in about
fifteen statements, not four hundred).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any, Dict, Iterable, List, Optional

from ...errors import LivyError, LivyStatementError, LivyVersionError, error_class
from . import statements
from .bundle import python_version, read_reply

#: Base64 characters of the first upload statement; later ones double while a statement
#: takes less than ``QUICK`` seconds, up to ``MAX_CHUNK`` (far below the 50 MB a Livy
#: server passes to its driver in one message, ``livy.rsc.rpc.max.size``).
FIRST_CHUNK = 1 << 20
MAX_CHUNK = 8 << 20
QUICK = 1.0


def call(target: Any, code: str, timeout: float, what: str) -> Dict[str, Any]:
    """Run one statement and return its framed reply."""
    text = target.client.run(target.session_id, code, timeout, what)
    answer = read_reply(text)
    if answer is None:
        line = " ".join(text.split())[:200]
        raise LivyStatementError(f"the {what} statement printed no reply on the cluster"
                                 + (f" (it printed: {line})" if line else ""))
    return answer


def upload(target: Any, key: str, data: bytes, timeout: float, what: str,
           chunk: Optional[int] = None) -> int:
    """Send ``data`` to the session under ``key`` in base64 statements of ``chunk``
    characters (None: sized as above); the number of statements it took."""
    text = base64.b64encode(data).decode("ascii")
    size, sent, count = chunk or FIRST_CHUNK, 0, 0
    while True:
        piece = text[sent:sent + size]
        started = time.monotonic()
        call(target, statements.upload(key, piece), timeout, what)
        count, sent = count + 1, sent + len(piece)
        if sent >= len(text):
            return count
        if chunk is None and time.monotonic() - started < QUICK:
            size = min(2 * size, MAX_CHUNK)


def prepare(target: Any, ship: str, timeout: float, chunk: Optional[int] = None
            ) -> Dict[str, Any]:
    """Check the session's Python and install maggy_magic there when needed.

    Returns ``{"shipped": zip name or None, "python": [major, minor]}``.
    """
    import maggy_magic

    from ..spark.ship import package_zip

    probe = call(target, statements.probe(), timeout, "probe")
    remote, local = list(probe.get("python") or []), python_version()
    if remote[:2] != local[:2]:
        raise LivyVersionError(
            f"the cluster runs Python {'.'.join(map(str, remote))} and this kernel Python "
            f"{'.'.join(map(str, local))}; the training function only travels between equal "
            "minor versions: use a kernel with the cluster's Python or set the session's "
            "PYSPARK_PYTHON to a matching one")
    path = package_zip()
    name = os.path.basename(path)
    if probe.get("zip") == name:
        return {"shipped": None, "python": remote}
    installed = probe.get("importable") and probe.get("version") == maggy_magic.__version__ \
        and probe.get("zip") is None
    if ship == "never" or (ship == "auto" and installed):
        if not probe.get("importable"):
            raise LivyError("the cluster cannot import maggy_magic and ship is 'never'; install "
                            "it there or use ship='auto'")
        return {"shipped": None, "python": remote}
    with open(path, "rb") as handle:
        data = handle.read()
    key = "zip:" + name
    upload(target, key, data, timeout, "package upload", chunk)
    done = call(target, statements.install(key, name, hashlib.sha256(data).hexdigest()),
                timeout, "package install")
    failed = done.get("error")
    if failed:
        raise error_class(failed.get("type"), LivyError)(failed.get("message"))
    if done.get("version") != maggy_magic.__version__:
        raise LivyError(f"the cluster imported maggy_magic {done.get('version')} after the "
                        f"upload of {maggy_magic.__version__}; restart the Livy session")
    return {"shipped": name, "python": remote}


def ship_code(target: Any, fn: Any, timeout: float, also: Iterable[Any] = (),
              chunk: Optional[int] = None) -> List[str]:
    """Send the zips of the local modules (:mod:`maggy_magic.codeship`) that ``fn`` and
    the objects ``also`` need (an ablation study's generators, a dist run's model) to the
    session, each once: uploaded in chunks, hash checked, written next to the package zip,
    first on the driver's ``sys.path`` and ``sc.addPyFile``'d for the executors. Returns
    the names of the zips sent this time."""
    from ...codeship import find_needs
    from ...codezip import code_zips

    needs = find_needs(fn)
    for other in also:
        more = find_needs(other)
        for name, path in more.local.items():
            needs.local.setdefault(name, path)
        needs.archives.extend(a for a in more.archives if a not in needs.archives)
    sent = []
    for path in code_zips(needs):
        name = os.path.basename(path)
        if call(target, statements.has_code(name), timeout, "code check").get("have"):
            continue
        with open(path, "rb") as handle:
            data = handle.read()
        key = "code:" + name
        upload(target, key, data, timeout, "code upload", chunk)
        modules = [] if path in needs.archives else list(needs.local)
        done = call(target, statements.install_code(key, name, hashlib.sha256(data).hexdigest(),
                                                    modules), timeout, "code install")
        failed = done.get("error")
        if failed:
            raise error_class(failed.get("type"), LivyError)(failed.get("message"))
        sent.append(name)
    return sent
