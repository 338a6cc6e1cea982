"""A trial's files on a worker: where they are written, and how they reach the driver.

The driver writes a random token into ``<run dir>/.maggy-token`` and tells it to every
worker with the run directory. A worker that reads that token at that path shares the
driver's disk: trials write into the run directory itself. A worker that does not (an
executor of a cluster, whose disk is its own) gets a private staging folder
(``tempfile.mkdtemp``) laid out like the run directory: the running trial's folders,
``tensorboard/<trial>`` (:func:`maggy_magic.tensorboard.logdir`) and
``trials/<trial>/files`` (:meth:`maggy_magic.reporter.Reporter.trial_dir`), live there,
and when the trial ends (finished, failed, stopped early; an aborted one for up to
``ABORT_SEND`` seconds) its files travel to the driver over the worker's connection:
``artifact`` frames of at most ``CHUNK`` bytes each (1 MiB of base64), then
``artifacts_done``. At most ``limit`` bytes per trial travel; files that do not fit stay
behind and the driver logs which. The driver writes them at the same relative paths of
its run directory before it records the trial's end.

With ``storage`` (a URI, see :mod:`maggy_magic.storage`) whose token the worker can read,
the files are uploaded there instead, with no size limit.

Dist checkpoints: a path under the driver's run directory (the default
``<run dir>/checkpoints``) is mapped into the staging folder (:meth:`local_path`); a
checkpoint the chief records there is relayed (:meth:`relay`: to storage, or over the
wire, at most ``limit`` bytes, else :class:`~maggy_magic.errors.FilesLimitError`), and a
restarted rank gets it back (:meth:`fetch`) before the training function starts.

Stdlib only (fsspec only with storage): it runs on Spark executors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import FilesLimitError, MaggyError

#: The file of the run directory that holds the driver's token.
TOKEN_FILE = ".maggy-token"
#: Raw bytes per ``artifact`` frame (their base64 is 1 MiB).
CHUNK = 768 * 1024
#: Bytes of files one trial may send to the driver, unless the run says otherwise.
DEFAULT_LIMIT = 256 * 1024 * 1024
#: Seconds an aborted worker spends sending its trial's files before it exits.
ABORT_SEND = 5.0
#: Seconds a worker waits for one answer of the driver when it fetches a checkpoint.
FETCH_TIMEOUT = 120.0


def trial_folders(trial_id: str) -> List[str]:
    """The folders of one trial, relative to the run directory."""
    return [f"tensorboard/{trial_id}", f"trials/{trial_id}/files"]


def config_checkpoint(params: Dict[str, Any]) -> str:
    """``checkpoints/config-<hash>``: the folder (relative to the run directory) that every
    trial with these hyperparameters shares, so a configuration promoted to a bigger budget
    finds what its lower rung saved. The hash is of the parameters as JSON (the driver's
    and the worker's copies agree)."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return "checkpoints/config-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def shares_disk(run_dir: Optional[str], token: Optional[str]) -> bool:
    """Whether ``run_dir`` here holds the driver's ``token`` (a driver that sends no token
    is taken as sharing, as before tokens existed)."""
    if not run_dir:
        return False
    if token is None:
        return True
    try:
        # bytes, not a text file: no codec lookup (a forked worker would import one)
        with open(os.path.join(run_dir, TOKEN_FILE), "rb") as handle:
            return hmac.compare_digest(handle.read().strip(), str(token).encode("ascii"))
    except (OSError, ValueError):
        return False


def within(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _relative(path: str, root: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def regular_files(top: str, rel: str) -> Tuple[List[Tuple[str, str, int]], List[str]]:
    """``([(relative path, path, size)], [skipped relative paths])`` of the regular files
    at or under ``top`` (``rel`` is its relative path); symbolic links and other special
    files are skipped, never followed."""
    try:
        info = os.lstat(top)
    except OSError:
        return [], []
    if stat.S_ISREG(info.st_mode):
        return [(rel, top, info.st_size)], []
    if not stat.S_ISDIR(info.st_mode):
        return [], [rel]
    files, skipped = [], []
    for parent, dirs, names in os.walk(top):
        for name in sorted(dirs):
            if os.path.islink(os.path.join(parent, name)):
                skipped.append(f"{rel}/{_relative(os.path.join(parent, name), top)}")
        for name in sorted(names):
            path = os.path.join(parent, name)
            info = os.lstat(path)
            where = f"{rel}/{_relative(path, top)}"
            if stat.S_ISREG(info.st_mode):
                files.append((where, path, info.st_size))
            else:
                skipped.append(where)
    return files, skipped


class TrialFiles:
    """One worker's files: ``send(message)`` sends to the driver (the worker loop's
    ``_send``); :meth:`deliver` takes the driver's answers (``files``, ``chunk``)."""

    def __init__(self, send: Callable[[dict], None]):
        self._send = send
        self.run_dir: Optional[str] = None
        self.shared = True
        self.limit = DEFAULT_LIMIT
        self.storage: Optional[str] = None
        self._storage_ok: Optional[bool] = None
        self._token: Optional[str] = None
        self._stage: Optional[str] = None
        self._home_lock = threading.Lock()
        self._answers: Dict[tuple, list] = {}
        self._answers_lock = threading.Lock()
        self._closed: Optional[str] = None

    def welcome(self, msg: Dict[str, Any]) -> None:
        """What the driver's ``welcome`` says: run directory, token, limit, storage."""
        self.run_dir = msg.get("run_dir")
        self._token = msg.get("run_token")
        self.shared = shares_disk(self.run_dir, self._token)
        self.limit = int(msg.get("files_limit") or DEFAULT_LIMIT)
        self.storage = msg.get("storage") or None

    @property
    def root(self) -> Optional[str]:
        """Where the running trial's folders are: the run directory, or the staging
        folder laid out like it (None when the driver told no run directory)."""
        if self.shared or not self.run_dir:
            return self.run_dir
        if self._stage is None:
            self._stage = tempfile.mkdtemp(prefix="maggy-files-")
        return self._stage

    def local_path(self, path: Optional[str]) -> Optional[str]:
        """``path`` as this worker writes it: a path under the driver's run directory
        becomes the same path under the staging folder when the disk is not shared."""
        if not path or self.shared or not self.run_dir or "://" in path \
                or not within(path, self.run_dir):
            return path
        return os.path.join(self.root or "", *_relative(path, self.run_dir).split("/"))

    def _storage_uri(self) -> Optional[str]:
        """The run's folder in storage, if the run has storage and this worker sees the
        driver's token there (checked once)."""
        if not self.storage or not self.run_dir:
            return None
        from . import storage

        base = storage.run_uri(self.storage, self.run_dir)
        if self._storage_ok is None:
            try:
                seen = storage.read_text(storage.join(base, TOKEN_FILE)).strip()
                self._storage_ok = hmac.compare_digest(seen, str(self._token))
                problem = "holds another run's token"
            except Exception as exc:  # noqa: BLE001 - reported, the wire takes over
                self._storage_ok, problem = False, f"{type(exc).__name__}: {exc}"
            if not self._storage_ok:
                print(f"maggy-magic: storage {self.storage} is not the driver's from this "
                      f"worker ({problem}); trial files travel through the driver instead")
        return base if self._storage_ok else None

    # -- a trial's folders ------------------------------------------------------------
    def send_home(self, trial_id: str, deadline: Optional[float] = None) -> None:
        """Send the staged folders of ``trial_id`` to the driver (or storage), then
        remove them; nothing to do when the disk is shared."""
        if self.shared or self._stage is None:
            return
        if not self._home_lock.acquire(timeout=ABORT_SEND if deadline else -1):
            return
        try:
            files: List[Tuple[str, str, int]] = []
            skipped: List[str] = []
            for folder in trial_folders(trial_id):
                found, passed = regular_files(os.path.join(self._stage, *folder.split("/")),
                                              folder)
                files += found
                skipped += passed
            if not files and not skipped:
                return
            base = self._storage_uri()
            if base is not None:
                try:
                    self._upload(base, files)
                except Exception as exc:  # noqa: BLE001 - the wire takes over
                    print(f"maggy-magic: uploading trial {trial_id}'s files to "
                          f"{self.storage} failed ({type(exc).__name__}: {exc}); they "
                          "travel through the driver instead")
                    base = None
            if base is not None:
                self._send({"type": "artifacts_done", "trial": trial_id, "stored": True,
                            "files": len(files), "left": [], "skipped": skipped})
            else:
                self._send_batch(trial_id, files, skipped, deadline)
            for folder in trial_folders(trial_id):
                shutil.rmtree(os.path.join(self._stage, *folder.split("/")),
                              ignore_errors=True)
        finally:
            self._home_lock.release()

    def _upload(self, base: str, files: List[Tuple[str, str, int]]) -> None:
        from . import storage

        for rel, path, _size in files:
            storage.upload(path, storage.join(base, rel))

    def _send_batch(self, trial_id: str, files: List[Tuple[str, str, int]],
                    skipped: List[str], deadline: Optional[float] = None,
                    checkpoint: Optional[str] = None) -> None:
        batch = uuid.uuid4().hex
        budget, left, sent = self.limit, [], 0
        for rel, path, size in files:
            if size > budget or (deadline is not None and time.monotonic() > deadline):
                left.append([rel, size])
                continue
            try:
                budget -= self._send_file(trial_id, batch, rel, path, size)
                sent += 1
            except OSError as exc:  # it went away meanwhile: say so, send the rest
                skipped.append(f"{rel} ({type(exc).__name__}: {exc})")
        self._send({"type": "artifacts_done", "trial": trial_id, "batch": batch,
                    "files": sent, "left": left, "skipped": skipped, "limit": self.limit,
                    "checkpoint": checkpoint})

    def _send_file(self, trial_id: str, batch: str, rel: str, path: str, size: int) -> int:
        offset = 0
        with open(path, "rb") as handle:
            while True:
                data = handle.read(min(CHUNK, size - offset))
                last = not data or offset + len(data) >= size
                self._send({"type": "artifact", "trial": trial_id, "batch": batch,
                            "path": rel, "offset": offset,
                            "data": base64.b64encode(data).decode("ascii"), "last": last})
                offset += len(data)
                if last:
                    return offset

    # -- dist checkpoints -------------------------------------------------------------
    def relay(self, trial_id: str, path: str) -> Optional[str]:
        """The chief recorded ``path``: bring it where a restart on any host finds it.
        Returns the path to record with the driver, or None when the driver records it
        itself (it came over the wire)."""
        if self.shared or self._stage is None or not within(path, self._stage):
            return path
        rel = _relative(path, self._stage)
        files, _skipped = regular_files(path, rel)
        total = sum(size for _rel, _path, size in files)
        base = self._storage_uri()
        if base is not None:
            from . import storage

            self._upload(base, files)
            return storage.join(base, rel)
        if total > self.limit:
            raise FilesLimitError(
                f"checkpoint {path} is {total / 2**20:.1f} MiB, over the "
                f"{self.limit / 2**20:g} MiB that travel to the driver (files_limit_mb); "
                "set storage=, a checkpoint_dir every rank sees, or raise files_limit_mb")
        self._send_batch(trial_id, files, [], checkpoint=rel)
        return None

    def fetch(self, trial_id: str, source: Optional[str]) -> Optional[str]:
        """A local copy of the checkpoint ``source`` (a path of the driver's run
        directory, or a storage URI) for a restarted rank; ``source`` itself when this
        worker sees it where it is."""
        if not source:
            return source
        if "://" in source:
            from . import storage

            base = storage.run_uri(self.storage, self.run_dir) + "/" \
                if self.storage and self.run_dir else None
            rel = source[len(base):] if base and source.startswith(base) \
                else "checkpoints/" + source.rstrip("/").rsplit("/", 1)[-1]
            if self.shared and self.run_dir:  # into the run's own (shared) folder
                target = os.path.join(self.run_dir, *rel.split("/"))
            else:
                target = os.path.join(self.root or tempfile.mkdtemp(prefix="maggy-files-"),
                                      *rel.split("/"))
            shutil.rmtree(target, ignore_errors=True)
            storage.download(source, target)
            return target
        if self.shared or not self.run_dir or not within(source, self.run_dir):
            return source
        rel = _relative(source, self.run_dir)
        target = os.path.join(self.root or "", *rel.split("/"))
        listing = self._ask({"type": "fetch", "trial": trial_id, "path": rel}, ("files", rel))
        if listing.get("error"):
            raise MaggyError(f"cannot get checkpoint {source} from the driver: "
                             f"{listing['error']}")
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        for name, size in listing.get("files") or []:
            if not (name == rel or name.startswith(rel + "/")) or ".." in name.split("/"):
                raise MaggyError(f"the driver sent {name!r} for checkpoint {rel}")
            local = os.path.join(self.root or "", *name.split("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(local, "wb") as handle:
                offset = 0
                while offset < size or offset == 0:
                    answer = self._ask({"type": "fetch", "trial": trial_id, "path": name,
                                        "offset": offset}, ("chunk", name, offset))
                    if answer.get("error"):
                        raise MaggyError(f"cannot get {name} from the driver: "
                                         f"{answer['error']}")
                    data = base64.b64decode(answer.get("data") or "")
                    handle.write(data)
                    offset += len(data)
                    if answer.get("eof") or not data:
                        break
        return target

    def _ask(self, message: dict, key: tuple) -> dict:
        slot: list = [threading.Event(), None]
        with self._answers_lock:
            if self._closed:
                raise MaggyError(self._closed)
            self._answers[key] = slot
        try:
            self._send(message)
            if not slot[0].wait(FETCH_TIMEOUT):
                raise MaggyError(f"the driver did not answer {message['type']} "
                                 f"{message.get('path')!r} within {FETCH_TIMEOUT:g} s")
        finally:
            with self._answers_lock:
                self._answers.pop(key, None)
        if slot[1] is None:
            raise MaggyError(self._closed or "the driver went away")
        return slot[1]

    def deliver(self, msg: Dict[str, Any]) -> None:
        """An answer of the driver (reader thread)."""
        key: tuple = (msg.get("type"), msg.get("path"))
        if msg.get("type") == "chunk":
            key += (msg.get("offset"),)
        with self._answers_lock:
            slot = self._answers.get(key)
        if slot is not None:
            slot[1] = msg
            slot[0].set()

    def close(self, reason: str) -> None:
        """The connection ended: pending fetches fail with ``reason``."""
        with self._answers_lock:
            self._closed = reason
            slots = list(self._answers.values())
        for slot in slots:
            slot[0].set()

    def cleanup(self) -> None:
        """Remove the staging folder (the worker leaves)."""
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
