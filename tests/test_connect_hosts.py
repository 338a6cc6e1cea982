"""The spark backend on a Spark Connect server whose executors are separate hosts
(``tests/netcluster.py``): the server (pyspark's own script, ``tests/connect_server.py``)
runs on the cluster's standalone master, its driver on the bridge address; the executors
sit in their own network and mount namespaces (private ``/tmp``, this checkout hidden).
The client is this process: workers reach it over the hosts' veth links, the ranks of a
TensorFlow gang reach each other across hosts.
"""

import collections
import json
import os

import pytest
import test_code_travels as travels
from connect_server import ConnectServer
from test_cluster import log_lines, tf_across

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
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    # the standalone workers serve one application at a time, and pyspark holds no
    # Connect session next to a classic one
    if SparkSession._instantiatedSession is not None:
        SparkSession._instantiatedSession.stop()
    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    netcluster.ensure_hosts(2)
    mode = os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    address = netcluster.driver_address
    conf = {"spark.driver.host": address, "spark.driver.bindAddress": address,
            "spark.executor.memory": "768m", "spark.executor.cores": "1"}
    with ConnectServer(master=netcluster.url, conf=conf, address=address) as server:
        session = server.session()
        netcluster.wait_workers(2)
        wait_for_both_hosts(session)
        yield session
        session.stop()
    if mode is None:
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
    assert result.state == "finished" and result.metrics["replicas"] == 2
    ranks = {r["rank"]: r for r in (json.loads(line[3:]) for _, line in
                                    log_lines(result.run_dir) if line.startswith("tf {"))}
    assert sorted(ranks) == [0, 1]
    assert {ranks[0]["host"], ranks[1]["host"]} == {"host1", "host2"}
    workers = ranks[0]["tf_config"]["cluster"]["worker"]
    prefix = netcluster.driver_address.rsplit(".", 1)[0] + "."
    hosts = [w.rsplit(":", 1)[0] for w in workers]
    assert len(set(hosts)) == 2 and all(h.startswith(prefix) for h in hosts), workers
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the same all-reduced model
