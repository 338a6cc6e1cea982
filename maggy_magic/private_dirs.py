"""Folders that only this user can write, for files that other processes import.

The package zip shipped to Spark executors and the copy installed on a Livy driver are
code that runs as this user. They live under the temporary folder, where anyone can make
a file or a folder first, and their names come from public facts (the uid, a hash of
public source): another user of a shared machine could plant one. So each folder is made
here with mode 0700 or, when it exists already, checked before use: a real folder (not a
symbolic link), owned by this uid, writable by nobody else. The folder they are made in
(the temporary folder) must not let others rename them: owned by root or this user, and
sticky if others may write it. A file is written under a fresh temporary name in its
folder and moved into place (:func:`os.replace`); a file already there is kept only if
its bytes hash to the ones wanted, else it is replaced.

Standard library only: :func:`maggy_magic.backends.livy.statements.install` sends this
module's source to a Livy session, which runs it before maggy_magic can be imported there.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from typing import Optional

try:
    from .errors import UnsafePathError
except ImportError:  # run from its source in a Livy statement: no package around it
    class UnsafePathError(OSError):  # type: ignore[no-redef]
        """Stands in for :class:`maggy_magic.errors.UnsafePathError` (same name)."""

#: What the user can do about a folder that is refused.
ADVICE = "remove it, or set TMPDIR to a folder only you can write"
#: Whether this system has uids and mode bits to check.
POSIX = hasattr(os, "getuid")


def user_tag() -> str:
    """This user's id, as it appears in folder names."""
    if POSIX:
        return str(os.getuid())
    return os.environ.get("USERNAME", "user")  # pragma: no cover - not POSIX


def _refuse(path: str, problem: str) -> UnsafePathError:
    return UnsafePathError(f"{path} {problem}, so another user could change the code "
                           f"maggy_magic runs from it; {ADVICE}")


def _writers(mode: int) -> str:
    who = [name for bit, name in ((0o020, "its group"), (0o002, "everyone")) if mode & bit]
    return " and ".join(who)


def check_private(path: str) -> None:
    """Raise :class:`UnsafePathError` unless ``path`` is a folder (not a link to one) of
    this uid that nobody else may write."""
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "is a symbolic link, not a folder")
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a folder")
    if POSIX and info.st_uid != os.getuid():
        raise _refuse(path, f"belongs to uid {info.st_uid}, not to you (uid {os.getuid()})")
    if POSIX and mode & 0o022:
        raise _refuse(path, f"can be written by {_writers(mode)} (mode {mode:04o})")


def check_base(path: str) -> None:
    """Raise :class:`UnsafePathError` if others could rename what is made in ``path``."""
    info = os.stat(path)  # the temporary folder itself may be a link (/tmp on macOS)
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a folder")
    if not POSIX:
        return  # pragma: no cover - not POSIX
    if info.st_uid not in (0, os.getuid()):
        raise _refuse(path, f"belongs to uid {info.st_uid}, not to you or root")
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise _refuse(path, f"can be written by {_writers(mode)} and is not sticky "
                            f"(mode {mode:04o})")


def ensure_private(path: str) -> str:
    """``path`` made with mode 0700 if it is missing, then checked (:func:`check_private`).

    ``os.mkdir`` either makes the folder (then it is ours) or fails because something is
    there already (then that is checked): nothing is trusted for having its name."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    check_private(path)
    return path


def private_dir(*names: str, base: Optional[str] = None) -> str:
    """``base/names[0]/names[1]/...``, every level made or checked by
    :func:`ensure_private`; ``base`` (the temporary folder if None) by :func:`check_base`."""
    folder = tempfile.gettempdir() if base is None else base
    check_base(folder)
    for name in names:
        folder = ensure_private(os.path.join(folder, name))
    return folder


def file_digest(path: str) -> Optional[str]:
    """The sha256 (hex) of the regular file at ``path``; None if there is none (missing,
    a link, a folder, a pipe: nothing is followed or waited on)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return hashlib.sha256(handle.read()).hexdigest()


def install_file(folder: str, name: str, data: bytes) -> str:
    """The path of ``folder/name`` holding exactly ``data``.

    A file already there is kept only if its sha256 is that of ``data``; anything else
    there (other bytes, a link) is replaced by a file written under a fresh name in
    ``folder`` (``mkstemp``: created exclusively, mode 0600) and moved over it."""
    path = os.path.join(folder, name)
    if file_digest(path) == hashlib.sha256(data).hexdigest():
        return path
    fd, temporary = tempfile.mkstemp(dir=folder, prefix="." + name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    return path
