"""Reproducible zips of Python files: the shipped package, a function's local modules.

``zip_bytes(entries)`` gives the same bytes for the same contents (fixed timestamps and
modes), so a zip's hash names it; ``store_zip(name, data)`` keeps it in this user's private
folder (:mod:`maggy_magic.private_dirs`); ``code_zips(needs)`` builds the zip of the local
modules a training function needs (:func:`maggy_magic.codeship.find_needs`).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Dict, Iterable, List, Optional, Tuple

from .codeship import Needs
from .private_dirs import install_file, private_dir, user_tag


def zip_bytes(entries: Iterable[Tuple[str, str]]) -> bytes:
    """A zip of ``(name in the zip, file path)`` entries, in that order: the same bytes
    for the same contents (fixed timestamps and modes), so its hash names them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, path in entries:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, "rb") as handle:
                zf.writestr(info, handle.read())
    return buffer.getvalue()


def _entries(local: Dict[str, str]) -> List[Tuple[str, str]]:
    entries = []
    for top in sorted(local):
        path = local[top]
        if os.path.isfile(path):
            entries.append((os.path.basename(path), path))
            continue
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(n for n in names if n.endswith(".py")):
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, os.path.dirname(path))
                entries.append(("/".join(rel.split(os.sep)), full))
    return entries


def store_zip(name: str, data: bytes, cache_dir: Optional[str] = None) -> str:
    """``data`` as the file ``name`` in ``$TMPDIR/maggy-magic-<uid>/zips`` (or
    ``cache_dir``), folders made or checked by :mod:`maggy_magic.private_dirs`; a file
    already there is kept only if it holds these bytes."""
    if cache_dir is None:
        folder = private_dir(f"maggy-magic-{user_tag()}", "zips")
    else:
        folder = private_dir(os.path.basename(os.path.normpath(cache_dir)),
                             base=os.path.dirname(os.path.abspath(cache_dir)))
    return install_file(folder, name, data)


def code_zips(needs: Needs, cache_dir: Optional[str] = None) -> List[str]:
    """The zips that carry ``needs``' local modules: one built of their files, named
    ``code-<sha256 prefix>.zip`` (:func:`store_zip`), then the zips they came from."""
    built = []
    if needs.local:
        data = zip_bytes(_entries(needs.local))
        name = f"code-{hashlib.sha256(data).hexdigest()[:16]}.zip"
        built.append(store_zip(name, data, cache_dir))
    return built + list(needs.archives)
