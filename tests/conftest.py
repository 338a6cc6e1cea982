"""Shared fixtures: every test runs in its own directory, experiments write there."""

import json
import os
import sys
import tempfile

import pytest
from livy_server import livy_server  # noqa: F401  (fixture: a Livy REST test server per module)


def pytest_configure(config):
    # sparkmagic reads (and creates) its config under ~/.sparkmagic unless told otherwise:
    # keep the tests away from the user's own, before any test module imports sparkmagic
    os.environ.setdefault("SPARKMAGIC_CONF_DIR", tempfile.mkdtemp(prefix="sparkmagic-conf-"))


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """An in-process IPython shell with maggy_magic loaded (one per test module)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    ipython_dir = str(tmp_path_factory.mktemp("ipython"))
    main = sys.modules["__main__"]         # the shell puts its namespace there
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(config=config, ipython_dir=ipython_dir)
    sh.run_line_magic("load_ext", "maggy_magic")
    yield sh
    sh.run_line_magic("unload_ext", "maggy_magic")
    InteractiveShell.clear_instance()
    sys.modules["__main__"] = main


def journal(run_dir):
    """The events of a run directory's journal."""
    with open(os.path.join(run_dir, "journal.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
