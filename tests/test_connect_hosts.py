"""The spark backend on a Spark Connect server whose executors are separate hosts
(``tests/netcluster.py``): the server (pyspark's own script, ``tests/connect_server.py``)
runs on the cluster's standalone master, its driver on the bridge address; the executors
sit in their own network and mount namespaces (private ``/tmp``, this checkout hidden).
The client is this process: workers reach it over the hosts' veth links, the ranks of a
TensorFlow gang reach each other across hosts.
"""

import collections
import os

import pytest
import test_code_travels as travels
from conftest import no_spark_session
from connect_server import ConnectServer
from test_cluster import check_tf_gang_across, tf_across

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.distributed.config import TfDistributedConfig

pytestmark = pytest.mark.slow

user_code = travels.code  # the fixture: files in a folder on this side's sys.path

CELL = """
import helper_connect

def train(x, reporter):
    import socket, time
    time.sleep(1.0)  # both hosts' workers get trials
    return {"metric": helper_connect.score(x), "host": socket.gethostname()}
"""


@pytest.fixture(scope="module")
def spark(netcluster):
    was_connect = no_spark_session()  # the standalone workers serve one application
    netcluster.ensure_hosts(2)
    address = netcluster.driver_address
    conf = {"spark.driver.host": address, "spark.driver.bindAddress": address,
            "spark.executor.memory": "768m", "spark.executor.cores": "1"}
    with ConnectServer(master=netcluster.url, conf=conf, address=address) as server:
        session = server.session()
        netcluster.wait_workers(2)
        wait_for_both_hosts(session)
        yield session
        session.stop()
    netcluster.wait_no_applications()  # the next module's session gets the executors
    if not was_connect:
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)


def wait_for_both_hosts(session, guard=120.0):
    """Until a job of two 1 s tasks runs on both hosts: both executors of the server's
    application have registered (a Connect client cannot list executors)."""
    import time

    def where(batches):
        import socket as _socket
        import time as _time

        import pyarrow as _pa

        for _ in batches:
            pass
        _time.sleep(1.0)
        yield _pa.RecordBatch.from_pylist([{"host": _socket.gethostname()}])

    deadline = time.monotonic() + guard
    while True:
        rows = session.range(2, numPartitions=2).mapInArrow(where, "host string").collect()
        if {row["host"] for row in rows} == {"host1", "host2"}:
            return
        assert time.monotonic() < deadline, "the second host's executor never registered"
        time.sleep(1.0)


def test_trials_run_on_both_hosts_with_a_local_module_that_travels(spark, user_code,
                                                                   netcluster):
    user_code({"helper_connect.py": "def score(x):\n    return 5 * x\n"})
    result = experiment.lagom(travels.cell(CELL), HyperparameterOptConfig(
        num_trials=6, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])), es_policy="none",
        workers=2, seed=4, hb_interval=0.2, backend="spark"))
    assert result.num_finished == 6, result.trial_records
    hosts = collections.Counter(r["metrics"]["host"] for r in result.trial_records)
    assert set(hosts) == {"host1", "host2"}, hosts
    assert all(r["value"] == pytest.approx(5 * r["params"]["x"])
               for r in result.trial_records)


def test_a_tensorflow_gang_spans_both_hosts_on_connect(spark, netcluster):
    result = experiment.lagom(tf_across, TfDistributedConfig(
        hparams={"lr": 0.5, "epochs": 2, "out_dir": "/tmp"}, workers=2,
        optimization_key="loss", direction="min", backend="spark", hb_interval=0.2,
        hb_timeout=60))
    check_tf_gang_across(result, netcluster.driver_address.rsplit(".", 1)[0] + ".")
