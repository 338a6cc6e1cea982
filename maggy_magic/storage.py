"""Shared storage named by a URI (``storage=``): ``file:///shared/runs``, ``hdfs://...``,
``s3a://...`` or anything else fsspec has an implementation for.

A run's files live under ``<storage>/<experiment name>/<run id>/`` at the same relative
paths as in its run directory (``tensorboard/<trial>/...``, ``trials/<trial>/files/...``,
``checkpoints/...``). Workers that do not share the driver's disk upload there instead of
sending their files over the wire; the driver copies the trial folders into its run
directory when the run ends (:func:`collect`), while checkpoints stay in storage (a
restarted rank downloads them from there).

fsspec is imported only here and only when a run names storage (``pip install
'maggy-magic[storage]'``); the scheme's own package (s3fs, pyarrow for hdfs, ...) is
fsspec's business. ``s3a://`` and ``s3n://`` (Hadoop's names) are read as ``s3://``.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, List, Tuple

from .errors import ConfigError

#: Hadoop's names for S3 that fsspec knows as ``s3``.
ALIASES = {"s3a": "s3", "s3n": "s3"}


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise ConfigError("storage= needs fsspec, which is not installed; install "
                          "maggy-magic[storage] (pip install 'maggy-magic[storage]')") from None
    return fsspec


def split(uri: str) -> Tuple[Any, str]:
    """``(filesystem, path inside it)`` of ``uri``; a one-line :class:`ConfigError` when
    fsspec or the scheme's implementation is missing."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ConfigError(f"storage must be a URI with a scheme (file:///shared/runs, "
                          f"hdfs://namenode/runs, s3a://bucket/runs), got {uri!r}")
    fsspec = _fsspec()
    scheme, rest = uri.split("://", 1)
    protocol = ALIASES.get(scheme.lower(), scheme.lower())
    try:
        fs = fsspec.filesystem(protocol)
    except (ValueError, ImportError) as exc:
        reason = (str(exc).splitlines() or [""])[0]
        raise ConfigError(f"storage {uri!r}: fsspec cannot open {scheme}:// here "
                          f"({type(exc).__name__}: {reason}); install the package fsspec "
                          "names for it") from None
    path = fs._strip_protocol(f"{protocol}://{rest}")
    return fs, path.rstrip("/") or "/"


def check(uri: str) -> str:
    """``uri`` if fsspec can open it (see :func:`split`)."""
    split(uri)
    return uri


def run_uri(storage: str, run_dir: str) -> str:
    """Where the run of ``run_dir`` keeps its files in ``storage``."""
    run = os.path.normpath(run_dir)
    return "/".join([storage.rstrip("/"), os.path.basename(os.path.dirname(run)),
                     os.path.basename(run)])


def join(uri: str, relpath: str) -> str:
    return uri.rstrip("/") + "/" + relpath.lstrip("/")


def upload(local: str, uri: str) -> None:
    """Copy the file ``local`` to ``uri`` (parents made as needed)."""
    fs, path = split(uri)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.put_file(local, path)


def write_text(uri: str, text: str) -> None:
    fs, path = split(uri)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "w") as handle:
        handle.write(text)


def read_text(uri: str) -> str:
    fs, path = split(uri)
    with fs.open(path, "r") as handle:
        return handle.read()


def listing(uri: str) -> List[Tuple[str, int]]:
    """``(path relative to uri, size)`` of every file at or under ``uri``."""
    fs, path = split(uri)
    if not fs.exists(path):
        return []
    if fs.isfile(path):
        return [("", int(fs.size(path)))]
    found = []
    for name, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") == "file":
            found.append((posixpath.relpath(fs._strip_protocol(name), path),
                          int(info.get("size") or 0)))
    return found


def download(uri: str, local: str) -> int:
    """Copy the file or folder at ``uri`` to ``local``; returns the number of files."""
    fs, path = split(uri)
    files = listing(uri)
    for rel, _size in files:
        target = os.path.join(local, *rel.split("/")) if rel else local
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        fs.get_file(posixpath.join(path, rel) if rel else path, target)
    return len(files)


def collect(storage: str, run_dir: str, folders: Tuple[str, ...] = ("tensorboard", "trials")
            ) -> int:
    """Copy the run's trial folders from ``storage`` into ``run_dir`` (what the HParams
    summary and ``%maggy tensorboard`` read); returns the number of files copied."""
    base = run_uri(storage, run_dir)
    copied = 0
    for folder in folders:
        copied += download(join(base, folder), os.path.join(run_dir, folder))
    return copied
