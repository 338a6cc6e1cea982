"""Virtual environments that hold maggy-magic's wheel with one extra, as a user's
``pip install 'maggy-magic[EXTRA]'`` makes them (no setup script, nothing else).

What a test can rely on:

* :func:`build_wheel` builds the checkout's wheel (``pip wheel --no-deps``) into a folder.
* :func:`extra_requirements` reads the wheel's own metadata: the requirements that
  ``pip install 'maggy-magic[EXTRA]'`` asks for, the package's own extras expanded.
* :func:`extra_python` gives the Python of a venv made by ``pip install WHEEL[EXTRA]``
  in a fresh ``python -m venv``. The venv is cached outside the checkout (under
  ``$MAGGY_VENV_CACHE``, else ``~/.cache/maggy-magic``, like ``scripts/setup.sh``), keyed
  on that extra's requirements in the wheel's metadata, this Python's version and
  :data:`RECIPE`, so a second run reuses it (a newer release of a dependency does not
  rebuild it; a changed requirement does); the wheel itself is reinstalled
  (``--no-deps``) on every call, so the venv always runs the code under test. pip's own
  cache and settings are the user's (its default cache, its config files).
* ``python tests/extra_envs.py [EXTRA ...]`` builds them ahead (:func:`main`).
* Building one venv at a time per key: a lock file next to it; a venv whose build did
  not finish is built again.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "maggy-magic"
#: How a venv is made (part of its cache key: change it with the steps below).
RECIPE = "python -m venv; pip install WHEEL[EXTRA]"


def cache_dir() -> Path:
    return Path(os.environ.get("MAGGY_VENV_CACHE") or Path.home() / ".cache" / "maggy-magic")


def clean_env(**extra: str) -> Dict[str, str]:
    """This process's environment without what would let a venv import the checkout
    (``PYTHONPATH``) or pip install into another environment (``VIRTUAL_ENV``, ``PIP_*``
    targets)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_TARGET", "PIP_PREFIX",
                        "PIP_USER", "PIP_REQUIRE_VIRTUALENV")}
    env.update(extra)
    return env


def build_wheel(dest: Path) -> Path:
    """The checkout's wheel, built into ``dest`` from a copy of the sources (building
    writes ``build/`` and ``*.egg-info`` next to them)."""
    import setuptools

    # an older setuptools than the build requirement cannot read the metadata: then pip
    # builds in an isolated environment of its own
    isolation = [] if int(setuptools.__version__.split(".")[0]) < 77 else \
        ["--no-build-isolation"]
    source = dest / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "build", "*.egg-info", "node_modules", "tests",
        "maggy_experiments", "bench", "notebooks", "examples"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                          "-w", str(dest), str(source)],
                         capture_output=True, text=True, timeout=240, env=clean_env())
    assert run.returncode == 0, run.stderr[-3000:]
    shutil.rmtree(source)
    return next(dest.glob("maggy_magic-*.whl"))


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode("utf-8"))


def extra_requirements(wheel: Path, extra: Optional[str]) -> List[str]:
    """What ``pip install 'WHEEL[extra]'`` asks for (``extra=None``: the plain install):
    the wheel's ``Requires-Dist`` lines that apply here, maggy-magic's own extras in them
    expanded; sorted, markers dropped."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    reqs = [Requirement(line) for line in wheel_metadata(wheel).get_all("Requires-Dist") or []]
    extras = {extra} if extra else set()
    while True:
        found, named = set(), set()
        for req in reqs:
            if req.marker is not None and \
                    not any(req.marker.evaluate({"extra": e}) for e in {""} | extras):
                continue
            if canonicalize_name(req.name) == PROJECT:
                named |= req.extras
                continue
            req.marker = None
            found.add(str(req))
        if named <= extras:
            return sorted(found)
        extras |= named


def venv_key(wheel: Path, extra: str) -> str:
    recipe = json.dumps([RECIPE, extra, extra_requirements(wheel, extra or None),
                         list(sys.version_info[:3])])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def extra_python(wheel: Path, extra: str, timeout: float = 280) -> Tuple[str, Optional[float]]:
    """(the venv's python, seconds its build took or None when it was cached) for
    ``pip install 'WHEEL[extra]'`` in a fresh venv (``extra=""``: the plain install);
    the wheel reinstalled on every call."""
    venv = cache_dir() / f"extra-{extra or 'plain'}-{venv_key(wheel, extra)}"
    python = venv / "bin" / "python"
    built = None
    with _locked(venv.with_name(venv.name + ".lock")):
        if not (venv / ".complete").exists():
            start = time.monotonic()
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys._base_executable, "-m", "venv", str(venv)], timeout)
            _run([str(python), "-m", "pip", "install", "-q",
                  f"{wheel}[{extra}]" if extra else str(wheel)],
                 timeout - (time.monotonic() - start))
            (venv / ".complete").write_text(json.dumps(
                {"extra": extra, "requirements": extra_requirements(wheel, extra or None)}))
            built = time.monotonic() - start
        _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
              str(wheel)], timeout)
    return str(python), built


def _run(argv: List[str], timeout: float) -> None:
    run = subprocess.run(argv, capture_output=True, text=True, timeout=max(timeout, 1),
                         env=clean_env())
    assert run.returncode == 0, f"{' '.join(argv)}:\n{run.stderr[-4000:]}"


def main(argv: List[str]) -> None:
    """``python tests/extra_envs.py [EXTRA ...]``: build (or find cached) the venv of each
    extra (default: those ``tests/test_extras.py`` checks), print how long each took and
    its size. ``scripts/run-tests.sh`` runs it before the suite, so that a first build,
    which downloads TensorFlow and PyTorch, is not counted in a test's timeout."""
    import tempfile

    if argv:
        extras = ["" if extra == "plain" else extra for extra in argv]
    else:
        from test_extras import EXTRA_CHECKS

        extras = sorted(EXTRA_CHECKS)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = build_wheel(Path(scratch))
        for extra in extras:
            python, built = extra_python(wheel, extra, timeout=1800)
            venv = Path(python).parents[1]
            size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file()
                       and not p.is_symlink())
            took = "cached" if built is None else f"built in {built:.0f} s"
            print(f"[{extra or 'plain'}] {venv}: {took}, {size / 2**20:.0f} MiB",
                  file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
