"""A training function's local modules travel with it (``maggy_magic.codeship``).

Discovery reads real files written to a temporary folder and imported through
``sys.path``, from functions defined as a notebook cell defines them (``__main__``). Then a
real ``local-cluster`` run whose function imports a helper module and a helper package
from a folder the executors do not have on their path (no ``addPyFile`` by the user),
and the same through a Livy session of the Livy test server.
"""

import hashlib
import os
import sys
import zipfile

import pytest

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.codeship import find_needs, kind_of
from maggy_magic.codezip import code_zips

MASTER = "local-cluster[2,1,1024]"


@pytest.fixture
def code(tmp_path, monkeypatch):
    """``write({relative path: source})`` into a folder on ``sys.path``; the modules
    imported from it are forgotten afterwards."""
    folder = tmp_path / "user-code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)

    def write(files):
        for name, source in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        return folder

    yield write
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and \
                str(folder) in (sys.modules[name].__file__ or ""):
            del sys.modules[name]


def cell(source, name="train"):
    """The function ``name`` of ``source`` run as a notebook cell runs (in ``__main__``)."""
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<cell>", "exec"), namespace)
    return namespace[name]


def zip_names(needs):
    (path,) = code_zips(needs)
    with zipfile.ZipFile(path) as zf:
        return sorted(zf.namelist())


# -- discovery ----------------------------------------------------------------------------
def test_a_module_imported_by_the_cell_and_used_by_the_function(code):
    folder = code({"helper_a.py": "def score(x):\n    return 2 * x\n"})
    train = cell("import helper_a\ndef train(x):\n    return helper_a.score(x)\n")
    needs = find_needs(train)
    assert needs.local == {"helper_a": str(folder / "helper_a.py")}
    assert needs.installed == [] and needs.archives == []
    assert zip_names(needs) == ["helper_a.py"]


def test_an_import_inside_the_body_and_inside_a_nested_function(code):
    code({"helper_b.py": "X = 1\n", "helper_c.py": "Y = 2\n"})
    train = cell("def train(x):\n    import helper_b\n"
                 "    def inner():\n        import helper_c\n        return helper_c.Y\n"
                 "    return helper_b.X + inner()\n")
    assert sorted(find_needs(train).local) == ["helper_b", "helper_c"]


def test_from_a_local_package_import_a_module_ships_the_whole_package(code):
    folder = code({"mypkg/__init__.py": "", "mypkg/util.py": "from .inner import f\n",
                   "mypkg/inner.py": "import sibling\ndef f(x):\n    return x\n",
                   "mypkg/data.txt": "not code", "mypkg/__pycache__/util.cpython.pyc": "x",
                   "sibling.py": "Z = 3\n"})
    train = cell("def train(x):\n    from mypkg import util\n    return util.f(x)\n")
    needs = find_needs(train)
    # the relative import inside the package leads to the top-level sibling module
    assert needs.local == {"mypkg": str(folder / "mypkg"),
                           "sibling": str(folder / "sibling.py")}
    assert zip_names(needs) == ["mypkg/__init__.py", "mypkg/inner.py", "mypkg/util.py",
                                "sibling.py"]


def test_local_modules_are_followed_transitively(code):
    code({"helper_d.py": "from deep_d import twice\ndef score(x):\n    return twice(x)\n",
          "deep_d.py": "import deeper_d\ndef twice(x):\n    return deeper_d.K * x\n",
          "deeper_d.py": "def lazy():\n    import lazy_d\nK = 2\n", "lazy_d.py": ""})
    train = cell("from helper_d import score\ndef train(x):\n    return score(x)\n")
    # a function imported from a local module counts through its __module__, its module
    # imports another, which imports a third, which imports a fourth in a function
    assert sorted(find_needs(train).local) == ["deep_d", "deeper_d", "helper_d", "lazy_d"]


def test_module_objects_in_closures_and_objects_of_local_classes(code):
    code({"helper_e.py": "class Model:\n    k = 3\n", "helper_f.py": "V = 1\n"})
    train = cell("import helper_f\nfrom helper_e import Model\nmodel = Model()\n"
                 "def make(module):\n    def train(x):\n        return module.V + model.k\n"
                 "    return train\ntrain = make(helper_f)\n")
    assert sorted(find_needs(train).local) == ["helper_e", "helper_f"]


def test_notebook_helpers_the_function_calls_are_read_too(code):
    code({"helper_g.py": "V = 1\n"})
    train = cell("def prepare():\n    import helper_g\n    return helper_g.V\n"
                 "def train(x):\n    return prepare() + x\n")
    assert list(find_needs(train).local) == ["helper_g"]


def test_stdlib_installed_main_and_maggy_magic_are_not_shipped(code):
    code({"helper_h.py": "import json\nimport numpy\ntry:\n    import yaml\n"
                         "except ImportError:\n    yaml = None\n"
                         "def later():\n    import cloudpickle\n"})
    train = cell("import os, maggy_magic\nimport helper_h\n"
                 "def train(x):\n    import pyspark, numpy.linalg\n"
                 "    return helper_h.later, os.sep, maggy_magic\n")
    needs = find_needs(train)
    assert list(needs.local) == ["helper_h"]
    # numpy for sure (top of helper_h, and the function itself); yaml only in a try and
    # cloudpickle only inside a function of a local module: maybe not needed, not listed
    assert needs.installed == ["numpy"]
    assert kind_of(os.__file__) == "stdlib"
    assert kind_of(__import__("numpy").__file__) == "installed"


def test_packages_in_site_folders_or_pip_targets_count_as_installed(code, tmp_path,
                                                                    monkeypatch):
    site_dir = tmp_path / "env" / "site-packages"
    (site_dir / "inst_a").mkdir(parents=True)
    (site_dir / "inst_a" / "__init__.py").write_text("")
    target = tmp_path / "target"  # what `pip install --target` leaves
    (target / "inst_b").mkdir(parents=True)
    (target / "inst_b" / "__init__.py").write_text("")
    (target / "inst_b-1.0.dist-info").mkdir()
    (target / "inst_b-1.0.dist-info" / "METADATA").write_text("Name: inst_b\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site_dir))
    monkeypatch.syspath_prepend(str(target))
    code({"helper_i.py": "import inst_a\n"})
    train = cell("def train(x):\n    import helper_i, inst_b\n")
    needs = find_needs(train)
    assert list(needs.local) == ["helper_i"] and needs.installed == ["inst_a", "inst_b"]


def test_the_notebook_is_never_shipped_even_with_a_main_file_on_the_path(code, monkeypatch):
    import types

    code({"__main__.py": "print('a script')\n", "helper_m.py": ""})
    notebook = types.ModuleType("__main__")  # a kernel's: no spec, no file
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    train = cell("import helper_m\ndef train(x):\n    return helper_m\n")
    assert list(find_needs(train).local) == ["helper_m"]


def test_the_function_of_a_local_module_ships_that_module(code):
    code({"experiment_j.py": "import helper_j\ndef train(x):\n    return helper_j.V\n",
          "helper_j.py": "V = 1\n"})
    import experiment_j

    assert sorted(find_needs(experiment_j.train).local) == ["experiment_j", "helper_j"]


def test_the_zip_is_named_by_its_contents_and_rebuilt_when_they_change(code):
    folder = code({"helper_k.py": "V = 1\n"})
    train = cell("import helper_k\ndef train(x):\n    return helper_k.V\n")
    (first,) = code_zips(find_needs(train))
    with open(first, "rb") as handle:
        data = handle.read()
    assert os.path.basename(first) == f"code-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    os.utime(folder / "helper_k.py", (0, 0))  # another mtime: the same bytes
    assert code_zips(find_needs(train)) == [first]
    with zipfile.ZipFile(first) as zf:
        assert [i.date_time for i in zf.infolist()] == [(1980, 1, 1, 0, 0, 0)]
    (folder / "helper_k.py").write_text("V = 2\n")
    (second,) = code_zips(find_needs(train))
    assert second != first


def test_a_compiled_local_module_is_named_not_zipped(code):
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    code({f"fast_n{suffix}": "not really compiled", "helper_n.py": "import fast_n\n"})
    train = cell("def train(x):\n    import helper_n\n")  # nothing imported here
    needs = find_needs(train)
    assert list(needs.local) == ["helper_n"] and needs.unshippable == ["fast_n"]
    assert zip_names(needs) == ["helper_n.py"]


def test_nothing_local_builds_no_zip():
    train = cell("import json\ndef train(x):\n    return json.dumps(x)\n")
    needs = find_needs(train)
    assert needs.local == {} and code_zips(needs) == []


# -- real Spark: local-cluster executors run in other folders ------------------------------
HELPER = "def score(x):\n    return 10 * x + {bonus}\n"
CELL = """
import helper_sp

def train(x, reporter):
    import socket
    from pkg_sp import util
    return {"metric": helper_sp.score(x), "helper": helper_sp.__file__,
            "util": util.tag(), "pid": __import__("os").getpid()}
"""


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from maggy_magic.backends.spark import SparkBackend

    backend = SparkBackend(master=MASTER)
    yield backend.session
    backend.session.stop()


def spark_config(session, name, **kwargs):
    return HyperparameterOptConfig(
        num_trials=4, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])), es_policy="none",
        workers=2, seed=1, hb_interval=0.1, name=name, backend="spark",
        backend_options={"spark": session}, **kwargs)


@pytest.mark.slow
def test_spark_executors_import_the_functions_local_modules(spark, code, monkeypatch):
    folder = code({"helper_sp.py": HELPER.format(bonus=0), "pkg_sp/__init__.py": "",
                   "pkg_sp/util.py": "def tag():\n    return 'util ' + __name__\n"})
    sc = spark.sparkContext
    added = []
    monkeypatch.setattr(sc, "addPyFile", lambda path: (added.append(path),
                                                       type(sc).addPyFile(sc, path)))
    handles = {}
    train = cell(CELL)
    result = experiment.run(train, spark_config(spark, "code-travels"),
                            on_driver=lambda d, b: handles.update(backend=b))
    assert result.num_finished == 4, result.trial_records
    (shipped,) = handles["backend"].code
    assert os.path.basename(shipped).startswith("code-") and added[-1] == shipped
    for record in result.trial_records:
        metrics, x = record["metrics"], record["params"]["x"]
        assert record["value"] == pytest.approx(10 * x)
        # imported from the executor's copy of the zip, not from the folder on this side
        helper = os.path.normpath(metrics["helper"])
        assert helper.endswith(os.path.join(os.path.basename(shipped), "helper_sp.py"))
        assert not helper.startswith(str(folder)) and not helper.startswith(shipped)
        assert metrics["util"] == "util pkg_sp.util"
    # the next run of the same code adds nothing; an edited helper is a new zip, which
    # the reused Python workers import instead of the copy they imported before
    calls = len(added)
    again = experiment.run(train, spark_config(spark, "code-travels-again"))
    assert again.num_finished == 4 and len(added) == calls
    (folder / "helper_sp.py").write_text(HELPER.format(bonus=100))
    edited = experiment.run(cell(CELL), spark_config(spark, "code-travels-edited"))
    assert len(added) == calls + 1 and edited.num_finished == 4
    assert all(r["value"] == pytest.approx(10 * r["params"]["x"] + 100)
               for r in edited.trial_records), edited.trial_records


# -- Livy: the zip goes to the session and on to its executors -----------------------------
@pytest.mark.slow
def test_livy_sessions_get_the_functions_local_modules(code, monkeypatch, tmp_path):
    from livy_server import LivyServer

    from maggy_magic.backends.livy.session import close_owned

    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    code({"helper_sp.py": HELPER.format(bonus=7), "pkg_sp/__init__.py": "",
          "pkg_sp/util.py": "def tag():\n    return 'util ' + __name__\n"})
    train = cell(CELL)
    with LivyServer(spark_master="local[2]") as livy:
        try:
            config = HyperparameterOptConfig(
                num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])),
                es_policy="none", workers=2, seed=1, name="code-travels-livy",
                backend="livy", backend_options={"url": livy.url, "start_timeout": 300})
            result = experiment.lagom(train, config)
            (session,) = livy.sessions
            sent = [s.code for s in livy.sessions[session].statements]
        finally:
            close_owned()
    assert result.num_finished == 2, result.trial_records
    for record in result.trial_records:
        metrics = record["metrics"]
        assert record["value"] == pytest.approx(10 * record["params"]["x"] + 7)
        assert ".zip" in metrics["helper"] and "code-" in metrics["helper"]
        assert metrics["util"] == "util pkg_sp.util"
    assert sum("_maggy_code()" in c for c in sent) == 1
