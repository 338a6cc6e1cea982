"""Where a rank's checkpoints are, on hosts that do not share a disk.

``checkpoint_dir`` left unset is ``<run dir>/checkpoints``: on a rank that shares the
driver's disk that is the folder itself; on one that does not, it is the same path of the
worker's staging folder (:mod:`maggy_magic.trial_files`), the chief's recorded
checkpoints are relayed to the run directory (or to ``storage=``), and a restarted rank on
any host gets the last one back into its own ``checkpoint_dir`` before the training
function starts, with ``resume_from`` naming that copy (:func:`rank_paths`,
:func:`recorder`).

A ``checkpoint_dir`` the user names must be one folder that every rank sees:
:func:`check_visible` has each rank write a token there and read every other rank's
(two rendezvous), and refuses a folder that some rank cannot see with a one-line
:class:`~maggy_magic.errors.CheckpointDirError` before training starts.

Stdlib only: it runs on every rank.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import CheckpointDirError


def _files(trial_context: Any) -> Any:
    return getattr(trial_context, "files", None)


def rank_paths(trial_context: Any, info: Dict[str, Any]) -> Tuple[Optional[str],
                                                                  Optional[str]]:
    """``(checkpoint_dir, resume_from)`` as this rank reads and writes them: mapped into
    the staging folder, and the checkpoint to resume from fetched there, when the rank
    does not share the driver's disk."""
    directory, resume = info.get("checkpoint_dir"), info.get("resume_from")
    files = _files(trial_context)
    if files is None:
        return directory, resume
    return files.local_path(directory), files.fetch(trial_context.trial_id, resume)


def recorder(trial_context: Any) -> Callable[[Dict[str, Any]], None]:
    """The ``note`` of a rank's context: a recorded checkpoint is relayed first (the
    driver then records it itself, or the relayed path is noted)."""
    files = _files(trial_context)

    def note(info: Dict[str, Any]) -> None:
        if files is not None and "checkpoint" in info:
            relayed = files.relay(trial_context.trial_id, str(info["checkpoint"]))
            info = dict(info)
            if relayed is None:
                del info["checkpoint"]
            else:
                info["checkpoint"] = relayed
            if not info:
                return
        trial_context.note(info)

    return note


def needs_check(trial_context: Any, directory: Optional[str]) -> bool:
    """A user's ``checkpoint_dir`` (a local path outside the run directory)."""
    if not directory or "://" in directory:
        return False
    files = _files(trial_context)
    run_dir = getattr(files, "run_dir", None)
    if run_dir:
        from ..trial_files import within

        return not within(directory, run_dir)
    return True


def check_visible(context: Any, directory: str) -> None:
    """Raise :class:`CheckpointDirError` on every rank unless every rank sees the files
    every other rank writes into ``directory`` (every rank must call it)."""
    token = secrets.token_hex(16)
    name = f".maggy-rank-{context.gang}-{{}}"
    mine = os.path.join(directory, name.format(context.rank))
    problem = None
    try:
        os.makedirs(directory, exist_ok=True)
        with open(mine, "w", encoding="ascii") as handle:
            handle.write(token)
    except OSError as exc:
        problem = f"cannot write there ({type(exc).__name__}: {exc})"
    tokens = context.rendezvous(token if problem is None else None,
                                key="maggy-checkpoint-dir")
    unseen = []
    for rank, theirs in enumerate(tokens):
        if rank == context.rank or theirs is None:
            continue
        try:
            with open(os.path.join(directory, name.format(rank)), encoding="ascii") as handle:
                if handle.read().strip() != theirs:
                    unseen.append(rank)
        except OSError:
            unseen.append(rank)
    seen = context.rendezvous({"host": socket.gethostname(), "unseen": unseen,
                               "problem": problem}, key="maggy-checkpoint-dir-seen")
    try:
        os.unlink(mine)
    except OSError:
        pass
    for rank, verdict in enumerate(seen):
        if verdict.get("problem") or verdict.get("unseen"):
            what = verdict.get("problem") or (
                "cannot see the files of rank(s) "
                f"{', '.join(map(str, verdict['unseen']))} there")
            raise CheckpointDirError(
                f"checkpoint_dir {directory} is not one folder every rank sees: rank {rank} "
                f"on {verdict.get('host')} {what}; use a path every rank sees (a shared file "
                "system), set storage=, or leave checkpoint_dir unset (checkpoints then "
                "travel through the driver)")
