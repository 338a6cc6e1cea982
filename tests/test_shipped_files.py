"""Code maggy_magic ships (the package zip for Spark executors) or installs (the zip on a
Livy driver) lives in folders only this user can write, and a file found there under the
expected name is used only if its bytes are the ones wanted.

Each attack is staged with real files under a temporary folder of the test's own (the
shared ``/tmp`` stand-in, mode 1777): a zip with the right name whose ``maggy_magic``
writes a marker file when imported (so any import of it, anywhere, shows), a folder given
to uid 65534 (``os.chown``: the suite runs as root), a group- or world-writable folder, a
symbolic link in a folder's place. The paths that ship run for real: ``package_zip`` and
``Shipper`` (on a local Spark session, where the executor imports what was shipped), the
Livy install statement in a Python that has no maggy_magic, and ``bootstrap.prepare``
against the Livy test server.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
import zipfile

import pytest
from livy_server import LivyServer

import maggy_magic
from maggy_magic.backends.livy import bootstrap, bundle, statements
from maggy_magic.backends.livy.client import LivyClient
from maggy_magic.backends.livy.session import LivyTarget
from maggy_magic.backends.spark.ship import Shipper, package_zip
from maggy_magic.errors import UnsafePathError

UID = os.getuid()
STRANGER = 65534
#: Hang guard, not a speed bound: a Livy session or statement still going after this long.
GUARD = 240.0

# -- staging ----------------------------------------------------------------------------
@pytest.fixture
def shared_tmp(tmp_path, monkeypatch):
    """A folder like /tmp (root's, 1777) that ``tempfile.gettempdir()`` answers here."""
    base = tmp_path / "tmp"
    base.mkdir()
    os.chmod(base, 0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return base


def plant_zip(path, marker):
    """A zip at ``path`` whose maggy_magic (of this version) writes ``marker`` on import."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("maggy_magic/__init__.py",
                    f"open({str(marker)!r}, 'w').write('planted')\n"
                    f"__version__ = {maggy_magic.__version__!r}\n")


def genuine_zip(tmp_path):
    """``(name, bytes)`` of the package zip, built in a folder of its own."""
    folder = tmp_path / "genuine"
    path = package_zip(cache_dir=str(folder))
    with open(path, "rb") as handle:
        return os.path.basename(path), handle.read()


def make_unsafe(path, problem):
    """Make the folder ``path`` (mode 0700, ours) unsafe in the way ``problem`` names."""
    if problem == "stranger":
        os.chown(path, STRANGER, STRANGER)
    elif problem == "symlink":
        real = f"{path}.real"
        os.rename(path, real)
        os.symlink(real, path)
    else:
        os.chmod(path, {"group": 0o770, "world": 0o777, "world-sticky": 0o1777}[problem])


PROBLEMS = ["stranger", "group", "world", "world-sticky",
            "symlink"]
SAYS = {"stranger": f"belongs to uid {STRANGER}, not to you (uid {UID})",
        "group": "can be written by its group (mode 0770)",
        "world": "can be written by its group and everyone (mode 0777)",
        "world-sticky": "can be written by its group and everyone (mode 1777)",
        "symlink": "is a symbolic link, not a folder"}


def one_line(info):
    message = str(info.value)
    assert "\n" not in message, message
    return message


def imports_from(zip_path, cwd):
    """What a bare interpreter (no site-packages, no environment) imports from the zip."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import maggy_magic; " \
           "print(maggy_magic.__file__)"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(zip_path)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class RecordingContext:
    """Stands in for a SparkContext where only ``addPyFile`` is reached (ship="always"
    with no modules to probe): records what would have gone to the executors."""

    def __init__(self):
        self.applicationId = f"app-{uuid.uuid4().hex}"
        self.added = []

    def addPyFile(self, path):  # noqa: N802 - SparkContext's name
        self.added.append(path)


# -- the package zip on this machine ----------------------------------------------------
def test_zip_folders_are_made_0700_and_the_zip_hashes_to_its_name(shared_tmp):
    path = package_zip()
    zips = os.path.dirname(path)
    top = os.path.dirname(zips)
    assert top == os.path.join(str(shared_tmp), f"maggy-magic-{UID}")
    for folder in (top, zips):
        info = os.lstat(folder)
        assert (oct(info.st_mode & 0o7777), info.st_uid) == (oct(0o700), UID), folder
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    assert os.path.basename(path) == f"maggy_magic-{maggy_magic.__version__}-{digest[:16]}.zip"
    assert os.lstat(path).st_mode & 0o077 == 0  # written through mkstemp: 0600
    assert sorted(os.listdir(zips)) == [os.path.basename(path)]  # no temporary left
    assert package_zip() == path  # reused: same files, same bytes


def test_a_planted_zip_is_rewritten_before_anything_imports_it(shared_tmp, tmp_path):
    genuine = package_zip()
    with open(genuine, "rb") as handle:
        wanted = handle.read()
    marker = tmp_path / "planted-code-ran"
    plant_zip(genuine, marker)  # the right name in the right place, other bytes
    shipper = Shipper(RecordingContext(), mode="always")
    assert shipper.prepare([]) == []
    assert shipper.target.sc.added == [genuine] and shipper.shipped == genuine
    with open(genuine, "rb") as handle:
        assert handle.read() == wanted
    assert imports_from(genuine, tmp_path) == os.path.join(genuine, "maggy_magic",
                                                           "__init__.py")
    assert not marker.exists()


def test_a_link_planted_at_the_zip_name_is_replaced_not_followed(shared_tmp, tmp_path):
    genuine = package_zip()
    os.unlink(genuine)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file")
    os.symlink(victim, genuine)
    assert package_zip() == genuine
    assert not os.path.islink(genuine) and zipfile.is_zipfile(genuine)
    assert victim.read_text() == "the user's own file"


@pytest.mark.parametrize("level", ["top", "zips"])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_an_unsafe_zip_folder_is_refused_in_one_line(shared_tmp, tmp_path, level, problem):
    genuine = package_zip()
    marker = tmp_path / "planted-code-ran"
    plant_zip(genuine, marker)
    folder = os.path.dirname(genuine) if level == "zips" else \
        os.path.dirname(os.path.dirname(genuine))
    make_unsafe(folder, problem)
    shipper = Shipper(RecordingContext(), mode="always")
    with pytest.raises(UnsafePathError) as info:
        shipper.prepare([])
    assert one_line(info) == (f"{folder} {SAYS[problem]}, so another user could change the "
                              "code maggy_magic runs from it; remove it, or set TMPDIR to a "
                              "folder only you can write")
    assert shipper.target.sc.added == [] and shipper.shipped is None
    assert not marker.exists()
    with zipfile.ZipFile(genuine) as zf:  # left as it was found: nothing written there
        assert zf.namelist() == ["maggy_magic/__init__.py"]


@pytest.mark.parametrize("problem", ["not sticky", "stranger"])
def test_a_temporary_folder_where_others_can_rename_is_refused(shared_tmp, problem):
    if problem == "stranger":
        os.chown(shared_tmp, STRANGER, STRANGER)
        says = f"belongs to uid {STRANGER}, not to you or root"
    else:
        os.chmod(shared_tmp, 0o777)
        says = "can be written by its group and everyone and is not sticky (mode 0777)"
    with pytest.raises(UnsafePathError) as info:
        package_zip()
    assert one_line(info).startswith(f"{shared_tmp} {says}, so another user could change")
    assert "set TMPDIR" in str(info.value)
    assert os.listdir(shared_tmp) == []  # nothing made in it


# -- the install statement of a Livy session ----------------------------------------------
STUB_PYSPARK = """\
import os

class SparkContext:
    @classmethod
    def getOrCreate(cls):
        return cls()

    def addPyFile(self, path):
        with open(os.environ["ADDED_PY_FILES"], "a") as handle:
            handle.write(path + "\\n")
"""

RUN_STATEMENTS = """\
import json, sys
sys.path.insert(0, sys.argv[1])
namespace = {"__name__": "__main__"}
with open(sys.argv[2]) as handle:
    for code in json.load(handle):
        exec(code, namespace)
"""


def run_install(tmp_path, base, name, data, digest=None):
    """Upload ``data`` and install it as ``name`` in a Python without maggy_magic (nor
    site-packages) whose temporary folder is ``base``; ``pyspark`` there only records
    ``addPyFile``. Returns ``(reply, files added)``."""
    stub = tmp_path / "stub"
    (stub / "pyspark").mkdir(parents=True, exist_ok=True)
    (stub / "pyspark" / "__init__.py").write_text(STUB_PYSPARK)
    added = tmp_path / "added.txt"
    added.write_text("")
    codes = [statements.upload("zip:" + name, base64.b64encode(data).decode()),
             statements.install("zip:" + name, name,
                                digest or hashlib.sha256(data).hexdigest())]
    (tmp_path / "statements.json").write_text(json.dumps(codes))
    env = {"PATH": os.environ.get("PATH", ""), "TMPDIR": str(base),
           "ADDED_PY_FILES": str(added)}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", RUN_STATEMENTS, str(stub),
                           str(tmp_path / "statements.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return bundle.read_reply(done.stdout), added.read_text().split()


def test_the_livy_install_replaces_a_planted_zip(tmp_path, shared_tmp):
    name, data = genuine_zip(tmp_path)
    folder = shared_tmp / f"maggy-livy-{UID}"
    folder.mkdir(mode=0o700)
    marker = tmp_path / "planted-code-ran"
    plant_zip(folder / name, marker)
    reply, added = run_install(tmp_path, shared_tmp, name, data)
    path = str(folder / name)
    assert reply == {"version": maggy_magic.__version__, "path": path}
    assert added == [path]
    assert (folder / name).read_bytes() == data
    assert not marker.exists()


def test_the_livy_install_makes_its_folder_0700(tmp_path, shared_tmp):
    name, data = genuine_zip(tmp_path)
    reply, added = run_install(tmp_path, shared_tmp, name, data)
    folder = shared_tmp / f"maggy-livy-{UID}"
    assert reply["path"] == str(folder / name) and added == [reply["path"]]
    info = os.lstat(folder)
    assert (oct(info.st_mode & 0o7777), info.st_uid) == (oct(0o700), UID)
    assert os.listdir(folder) == [name]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_the_livy_install_refuses_an_unsafe_folder(tmp_path, shared_tmp, problem):
    name, data = genuine_zip(tmp_path)
    folder = shared_tmp / f"maggy-livy-{UID}"
    folder.mkdir(mode=0o700)
    marker = tmp_path / "planted-code-ran"
    plant_zip(folder / name, marker)
    make_unsafe(str(folder), problem)
    reply, added = run_install(tmp_path, shared_tmp, name, data)
    assert reply == {"error": {"type": "UnsafePathError", "message": (
        f"{folder} {SAYS[problem]}, so another user could change the code maggy_magic runs "
        "from it; remove it, or set TMPDIR to a folder only you can write")}}
    assert added == [] and not marker.exists()
    with zipfile.ZipFile(folder / name) as zf:
        assert zf.namelist() == ["maggy_magic/__init__.py"]


def test_a_damaged_livy_upload_is_not_installed(tmp_path, shared_tmp):
    name, data = genuine_zip(tmp_path)
    damaged = data[:10] + bytes([data[10] ^ 1]) + data[11:]
    reply, added = run_install(tmp_path, shared_tmp, name, damaged,
                               digest=hashlib.sha256(data).hexdigest())
    assert reply["error"]["type"] == "LivyError" and added == []
    assert not (shared_tmp / f"maggy-livy-{UID}").exists()


# -- real Spark and a real Livy session -------------------------------------------------
def imported_where(x):
    import maggy_magic as shipped

    return {"metric": x, "file": shipped.__file__}


SPARK_RUN = """
import json, os, sys, tempfile
tempfile.tempdir = sys.argv[1]
from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.backends.spark.context import resolve_context


def imported_where(x):
    import maggy_magic as shipped

    return {"metric": x, "file": shipped.__file__}


session, _ = resolve_context(None, "local[1]", None, "maggy-shipped-files")
handles = {}
try:
    config = HyperparameterOptConfig(
        num_trials=1, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])), es_policy="none",
        workers=1, backend="spark", backend_options={"spark": session, "ship": "always"})
    result = experiment.run(imported_where, config,
                            on_driver=lambda d, b: handles.update(backend=b))
finally:
    session.stop()
print("RESULT", json.dumps({"shipped": handles["backend"].shipped,
                            "finished": result.num_finished,
                            "records": result.trial_records}, default=str))
"""


@pytest.mark.slow
def test_spark_executors_import_the_genuine_zip_not_a_planted_one(shared_tmp, tmp_path):
    # a Spark application of its own (one JVM per process): its executors can import
    # maggy_magic only from what the run ships
    genuine = package_zip()
    with open(genuine, "rb") as handle:
        wanted = handle.read()
    marker = tmp_path / "planted-code-ran"
    plant_zip(genuine, marker)
    script = tmp_path / "spark_run.py"
    script.write_text(SPARK_RUN)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    done = subprocess.run([sys.executable, str(script), str(shared_tmp)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-4000:]
    outcome = json.loads(line[len("RESULT "):])
    assert outcome["shipped"] == genuine
    with open(genuine, "rb") as handle:
        assert handle.read() == wanted
    assert outcome["finished"] == 1, outcome["records"]
    (record,) = outcome["records"]
    # the executor's copy of the shipped zip is what its Python worker imported
    assert record["metrics"]["file"].endswith(
        os.path.join(os.path.basename(genuine), "maggy_magic", "__init__.py"))
    assert not marker.exists()


@pytest.mark.slow
def test_a_livy_session_refuses_an_unsafe_install_folder_then_installs(shared_tmp, tmp_path):
    base = tmp_path / "cluster-tmp"
    base.mkdir()
    os.chmod(base, 0o1777)
    name = os.path.basename(package_zip())
    folder = base / f"maggy-livy-{UID}"
    folder.mkdir(mode=0o700)
    marker = tmp_path / "planted-code-ran"
    plant_zip(folder / name, marker)
    with LivyServer(spark_master="local[1]", env={"TMPDIR": str(base)}) as livy:
        client = LivyClient(livy.url)
        session_id = client.create_session({"kind": "pyspark"})
        try:
            client.wait_idle(session_id, GUARD)
            target = LivyTarget(client, session_id, "test session", owned=True)
            problems = (["stranger"] if UID == 0 else []) + ["world"]
            for problem in problems:
                make_unsafe(str(folder), problem)
                with pytest.raises(UnsafePathError) as info:
                    bootstrap.prepare(target, "always", GUARD)
                assert one_line(info).startswith(f"{folder} {SAYS[problem]}, so another "
                                                 "user could change the code"), problem
                os.chown(folder, UID, UID)
                os.chmod(folder, 0o700)
            assert not marker.exists()
            assert bootstrap.prepare(target, "always", GUARD) == {
                "shipped": name, "python": bundle.python_version()}
            where = client.run(session_id, (
                "import maggy_magic\nprint(maggy_magic.__file__)\n"
                "print(sc.parallelize([0], 1).map(lambda _: __import__('maggy_magic')"
                ".__file__).first())"), GUARD, "check").splitlines()
        finally:
            client.delete_session(session_id)
    assert where[0] == str(folder / name / "maggy_magic" / "__init__.py")
    assert where[1].endswith(os.path.join(name, "maggy_magic", "__init__.py"))
    with open(package_zip(), "rb") as handle:
        assert (folder / name).read_bytes() == handle.read()
    assert not marker.exists()
