"""Trial files that come home: the driver's end of :mod:`maggy_magic.trial_files`.

:class:`RunFiles` writes the run's token (``<run dir>/.maggy-token``, and into storage
when the run has one) that tells a worker whether it shares the driver's disk; it takes
the ``artifact`` chunks of workers that do not and writes them into the run directory at
the same relative paths (each batch is staged under ``.incoming/`` and moved into place
on ``artifacts_done``, which comes before the trial's ``final`` or ``error``); a recorded
checkpoint that came this way replaces the previous copy of its folder as a whole and
becomes the trial's ``info_dict["checkpoint"]``. It serves ``fetch`` (the checkpoint a
restarted rank needs) in chunks.

Paths are checked: relative, ``/``-separated, no ``.``/``..``/empty parts, inside the
trial's own folders (``tensorboard/<trial>``, ``trials/<trial>/files``) or, for a chief
rank, ``checkpoints/``; no symbolic link on the way is followed; at most ``limit`` bytes
per batch. What is refused or left behind is a ``log`` line of the trial. Driver loop
thread only.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import shutil
import stat
from typing import Any, Callable, Dict, List, Optional

from ..events import EventStream
from ..logs import logger
from ..trial import Trial
from ..trial_files import CHUNK, DEFAULT_LIMIT, TOKEN_FILE, config_checkpoint

#: Message types the driver hands to :meth:`RunFiles.handle`.
FILE_MESSAGES = ("artifact", "artifacts_done", "fetch")
INCOMING = ".incoming"
_BATCH = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Refused(Exception):
    """A path or chunk the driver does not take (the message says why)."""


def safe_parts(path: Any) -> List[str]:
    """The parts of a worker's relative path, or :class:`Refused`."""
    if not isinstance(path, str) or not path or len(path) > 4096 or "\0" in path \
            or "\\" in path or path.startswith("/"):
        raise Refused(f"{path!r:.80} is not a relative path")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Refused(f"{path!r:.80} has an empty, '.' or '..' part")
    return parts


def no_links(root: str, parts: List[str], make: bool = False) -> str:
    """``root/parts``, refusing a symbolic link (or a non-folder) among the folders on the
    way; ``make`` creates the missing ones."""
    here = root
    for part in parts[:-1]:
        here = os.path.join(here, part)
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            if not make:
                raise Refused(f"{'/'.join(parts)} does not exist") from None
            os.mkdir(here)
            continue
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise Refused(f"{here} is a symbolic link or not a folder")
    target = os.path.join(here, parts[-1])
    if os.path.islink(target):
        raise Refused(f"{target} is a symbolic link")
    return target


class RunFiles:
    """The run directory's end of trial files (see the module docstring)."""

    def __init__(self, run_dir: Optional[str], events: EventStream,
                 limit: int = DEFAULT_LIMIT, storage: Optional[str] = None):
        self.run_dir, self.events = run_dir, events
        self.limit, self.storage = int(limit), storage
        self.token: Optional[str] = None
        self._batches: Dict[tuple, Dict[str, Any]] = {}
        if run_dir and os.path.isdir(run_dir):
            token = secrets.token_hex(16)
            tmp = os.path.join(run_dir, TOKEN_FILE + ".tmp")
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(token)
            os.replace(tmp, os.path.join(run_dir, TOKEN_FILE))
            self.token = token
            if storage:
                from .. import storage as store

                store.write_text(store.join(store.run_uri(storage, run_dir), TOKEN_FILE),
                                 self.token)

    def welcome(self) -> Dict[str, Any]:
        """What the ``welcome`` message adds for the worker's :class:`TrialFiles`."""
        return {"run_token": self.token, "files_limit": self.limit, "storage": self.storage}

    # -- messages ---------------------------------------------------------------------
    def handle(self, worker: Any, trial: Optional[Trial], msg: Dict[str, Any],
               send: Callable[[Any, Dict[str, Any]], None]) -> None:
        """One ``artifact`` / ``artifacts_done`` / ``fetch`` of ``worker`` about ``trial``
        (the trial of the message's id, if any)."""
        kind = msg.get("type")
        if self.run_dir is None or trial is None or trial.worker != worker.id:
            if kind == "fetch":
                send(worker, self._answer(msg, error="not a trial of this worker"))
            return
        if kind == "fetch":
            send(worker, self._serve(msg))
            return
        key = (worker.id, str(msg.get("batch")))
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = {"trial": trial, "files": {}, "bytes": 0,
                                          "error": None}
        if kind == "artifact":
            if batch["error"] is None:
                try:
                    self._chunk(key, batch, trial, msg)
                except (Refused, OSError) as exc:
                    batch["error"] = str(exc)
            return
        del self._batches[key]
        self._done(worker.id, key, batch, trial, msg)

    def _allowed(self, trial: Trial, parts: List[str]) -> None:
        tid = trial.trial_id
        if parts[:2] == ["tensorboard", tid] and len(parts) > 2:
            return
        if parts[:3] == ["trials", tid, "files"] and len(parts) > 3:
            return
        if parts[0] == "checkpoints" and len(parts) > 1 and trial.info_dict.get("rank") == 0:
            return  # a dist chief's checkpoints
        if _may_checkpoint(trial, parts) and len(parts) > 2:
            return  # a file in its own configuration's folder
        raise Refused(f"{'/'.join(parts)} is outside trial {tid}'s folders")

    def _incoming(self, key: tuple) -> str:
        if not _BATCH.match(key[1]) or not re.match(r"^[\w.-]{1,64}$", str(key[0])):
            raise Refused(f"batch {key[1]!r:.70} of worker {key[0]!r:.40}")
        return os.path.join(self.run_dir or "", INCOMING, f"{key[0]}-{key[1]}")

    def _chunk(self, key: tuple, batch: Dict[str, Any], trial: Trial,
               msg: Dict[str, Any]) -> None:
        parts = safe_parts(msg.get("path"))
        self._allowed(trial, parts)
        try:
            data = base64.b64decode(msg.get("data") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise Refused(f"chunk of {msg.get('path')} is not base64") from None
        rel = "/".join(parts)
        written = batch["files"].get(rel, 0)
        if msg.get("offset") != written:
            raise Refused(f"chunk of {rel} at offset {msg.get('offset')!r}, expected "
                          f"{written}")
        batch["bytes"] += len(data)
        if batch["bytes"] > self.limit:
            raise Refused(f"more than the {self.limit / 2**20:g} MiB limit (files_limit_mb)")
        incoming = self._incoming(key)
        os.makedirs(os.path.dirname(incoming), exist_ok=True)
        if not os.path.isdir(incoming):
            os.mkdir(incoming)
        target = no_links(incoming, parts, make=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        batch["files"][rel] = written + len(data)

    def _done(self, worker_id: str, key: tuple, batch: Dict[str, Any], trial: Trial,
              msg: Dict[str, Any]) -> None:
        error = batch["error"]
        checkpoint = msg.get("checkpoint")
        try:
            if error is None and not msg.get("stored"):
                incoming = self._incoming(key)
                if checkpoint:
                    self._replace(trial, incoming, safe_parts(checkpoint))
                else:
                    for rel in batch["files"]:
                        parts = safe_parts(rel)
                        os.replace(no_links(incoming, parts),
                                   no_links(self.run_dir or "", parts, make=True))
        except (Refused, OSError) as exc:
            error = str(exc)
        finally:
            if batch["files"]:
                shutil.rmtree(self._incoming(key), ignore_errors=True)
        lines = []
        if error is not None:
            lines.append(f"maggy-magic: files of trial {trial.trial_id} were refused by the "
                         f"driver: {error}")
        left = msg.get("left") or []
        if left:
            size = sum(int(s) for _p, s in left if isinstance(s, (int, float)))
            names = ", ".join(str(p) for p, _s in left[:10]) + (" ..." if len(left) > 10
                                                                 else "")
            lines.append(f"maggy-magic: {len(left)} file(s) of trial {trial.trial_id} "
                         f"({size / 2**20:.1f} MiB) stayed on worker {worker_id}: over the "
                         f"{self.limit / 2**20:g} MiB per trial (files_limit_mb) or out of "
                         f"time: {names}")
        if msg.get("skipped"):
            lines.append(f"maggy-magic: not sent (symbolic links or special files): "
                         f"{', '.join(map(str, msg['skipped'][:10]))}")
        for line in lines:
            logger().warning("%s", line)
        if lines:
            self.events.emit("log", worker=worker_id, trial=trial.trial_id, lines=lines)

    def _replace(self, trial: Trial, incoming: str, parts: List[str]) -> None:
        """A relayed checkpoint: its folder (or file) replaces the previous copy whole."""
        if not _may_checkpoint(trial, parts):
            raise Refused(f"{'/'.join(parts)} is not a checkpoint path")
        source = no_links(incoming, parts)
        if not os.path.lexists(source):
            raise Refused(f"checkpoint {'/'.join(parts)} arrived empty")
        target = no_links(self.run_dir or "", parts, make=True)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)
        os.replace(source, target)
        trial.info_dict["checkpoint"] = target

    # -- fetch ------------------------------------------------------------------------
    def _answer(self, msg: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
        answer = {"type": "chunk" if "offset" in msg else "files", "trial": msg.get("trial"),
                  "path": msg.get("path")}
        if "offset" in msg:
            answer["offset"] = msg.get("offset")
        answer.update(fields)
        return answer

    def _serve(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        try:
            parts = safe_parts(msg.get("path"))
            if parts[0] != "checkpoints":
                raise Refused(f"{msg.get('path')} is not a checkpoint path")
            target = no_links(self.run_dir or "", parts)
            if "offset" not in msg:
                return self._answer(msg, files=self._listing(target, "/".join(parts)))
            offset = msg.get("offset")
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise Refused(f"offset {offset!r}")
            fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(offset)
                data = handle.read(CHUNK)
            return self._answer(msg, data=base64.b64encode(data).decode("ascii"),
                                eof=offset + len(data) >= size)
        except (Refused, OSError) as exc:
            return self._answer(msg, error=str(exc))

    @staticmethod
    def _listing(target: str, rel: str) -> List[list]:
        info = os.lstat(target)
        if stat.S_ISREG(info.st_mode):
            return [[rel, info.st_size]]
        if not stat.S_ISDIR(info.st_mode):
            raise Refused(f"{rel} is not a file or folder")
        found = []
        for parent, _dirs, names in os.walk(target):
            for name in sorted(names):
                path = os.path.join(parent, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    sub = os.path.relpath(path, target).replace(os.sep, "/")
                    found.append([f"{rel}/{sub}", info.st_size])
        return found

    def finish(self) -> None:
        """The run is over: drop batches that never completed (their workers were lost)
        and copy the trial folders uploaded to storage into the run directory."""
        self._batches.clear()
        if self.run_dir:
            shutil.rmtree(os.path.join(self.run_dir, INCOMING), ignore_errors=True)
        if self.run_dir and self.storage:
            from .. import storage

            try:
                storage.collect(self.storage, self.run_dir)
            except Exception as exc:  # noqa: BLE001 - the run's result is kept
                logger().warning("maggy-magic: could not copy trial folders from storage "
                                 "%s: %s: %s", self.storage, type(exc).__name__, exc)


def _may_checkpoint(trial: Trial, parts: List[str]) -> bool:
    """Whether ``trial`` may write the checkpoint path ``parts``: a dist chief (rank 0)
    anything under ``checkpoints/``, any other trial its own configuration's folder."""
    if not parts or parts[0] != "checkpoints":
        return False
    if trial.info_dict.get("rank") == 0:
        return True
    return "/".join(parts[:2]) == config_checkpoint(trial.params)
