"""Local modules travel to a cluster of separate hosts (``tests/netcluster.py``).

The hosts have a private ``/tmp`` and do not see this checkout: the helper module and
package written to this test's temporary folder exist on the driver alone, and nobody
calls ``addPyFile``. A package installed only where the driver runs (a ``pip install
--target`` folder added as a site folder) is a one-line error before any trial runs.
"""

import collections
import glob
import os
import site
import sys

import pytest
import test_code_travels as travels
from conftest import journal

from maggy_magic import ConfigError, HyperparameterOptConfig, Searchspace, experiment

pytestmark = pytest.mark.slow

cell = travels.cell
user_code = travels.code  # the fixture: files in a folder on this side's sys.path

CELL = """
import helper_net

def train(x, reporter):
    import socket, time
    from pkg_net.util import tag
    time.sleep(1.0)  # both hosts' workers get trials
    return {"metric": helper_net.score(x), "host": socket.gethostname(),
            "helper": helper_net.__file__, "tag": tag()}
"""


@pytest.fixture(scope="module")
def session(netcluster):
    spark = netcluster.session()
    yield spark
    spark.stop()


def hpo(session, name, num_trials):
    return HyperparameterOptConfig(
        num_trials=num_trials, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])),
        es_policy="none", workers=2, seed=3, hb_interval=0.2, name=name, backend="spark",
        backend_options={"spark": session})


def test_hosts_import_a_local_module_and_package_nobody_added(session, user_code):
    user_code({"helper_net.py": "import pkg_net\ndef score(x):\n    return pkg_net.K * x\n",
          "pkg_net/__init__.py": "K = 3\n",
          "pkg_net/util.py": "def tag():\n    return 'tag from ' + __name__\n"})
    result = experiment.lagom(cell(CELL), hpo(session, "code-hosts", 6))
    assert result.num_finished == 6, result.trial_records
    hosts = collections.Counter(r["metrics"]["host"] for r in result.trial_records)
    assert set(hosts) == {"host1", "host2"}, hosts
    for record in result.trial_records:
        assert record["value"] == pytest.approx(3 * record["params"]["x"])
        assert record["metrics"]["tag"] == "tag from pkg_net.util"
        assert ".zip" in record["metrics"]["helper"], record["metrics"]


def test_a_package_installed_only_on_the_driver_is_one_line(session, user_code, tmp_path,
                                                            monkeypatch):
    target = tmp_path / "target"  # what `pip install --target` leaves
    (target / "only_here").mkdir(parents=True)
    (target / "only_here" / "__init__.py").write_text("V = 1\n")
    (target / "only_here-1.0.dist-info").mkdir()
    (target / "only_here-1.0.dist-info" / "METADATA").write_text(
        "Name: only_here\nVersion: 1.0\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    site.addsitedir(str(target))
    user_code({"helper_inst.py": "import only_here\ndef score(x):\n    return only_here.V * x\n"})
    train = cell("import helper_inst\ndef train(x, reporter):\n"
                 "    return helper_inst.score(x)\n")
    with pytest.raises(ConfigError) as info:
        experiment.lagom(train, hpo(session, "code-hosts-missing", 2))
    message = str(info.value)
    assert "\n" not in message
    assert message == ("the training function needs only_here, which the Spark executors "
                       "cannot import; provide it with spark.archives (a packed environment), "
                       "--py-files / spark.submit.pyFiles, or install it on the cluster")
    for path in glob.glob(os.path.join(str(tmp_path), "**", "journal.jsonl"), recursive=True):
        started = [e for e in journal(os.path.dirname(path)) if e["type"] == "trial_started"]
        assert started == [], started
