"""The Spark session a benchmark runs on: a master URL, or a cluster of namespaced hosts.

``add_arguments(parser)`` adds ``--master`` and ``--netcluster HOSTS``;
``open_session(args)`` returns ``(session, close)``. With ``--netcluster`` (root only) the
benchmark starts the test suite's cluster of separate hosts (``tests/netcluster.py``: a
standalone master on a bridge, each worker in its own network and mount namespace, the
checkout hidden from it) and tears it down in ``close``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Tuple

MASTER = "local-cluster[2,1,1024]"
TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--master", default=MASTER, help=f"Spark master (default {MASTER})")
    parser.add_argument("--netcluster", type=int, metavar="HOSTS",
                        help="run on a standalone cluster of HOSTS namespaced hosts (root)")


def connect_server(sc: Any):
    """A Spark Connect server (the test suite's ``tests/connect_server.py``) on ``sc``'s
    master: a ``local-cluster`` of the same shape, or the same standalone master with its
    driver on the same address; a context manager."""
    sys.path.insert(0, TESTS)
    from connect_server import ConnectServer

    conf, address = {}, "127.0.0.1"
    host = sc.getConf().get("spark.driver.host", None)
    if sc.master.startswith("spark://") and host:
        address = host  # the client then reaches it, and the executors the client, there
        conf = {"spark.driver.host": host, "spark.driver.bindAddress": host,
                "spark.executor.memory": sc.getConf().get("spark.executor.memory", "768m"),
                "spark.executor.cores": sc.getConf().get("spark.executor.cores", "1")}
    return ConnectServer(master=sc.master, conf=conf, address=address)


def open_session(args: argparse.Namespace) -> Tuple[Any, Callable[[], None]]:
    """``(SparkSession, close)`` for ``--master`` or ``--netcluster``."""
    if args.netcluster:
        sys.path.insert(0, TESTS)
        from netcluster import NamespacedCluster

        cluster = NamespacedCluster(hosts=args.netcluster).__enter__()
        session = cluster.session()

        def close() -> None:
            session.stop()
            cluster.close()

        return session, close
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from maggy_magic.backends.spark import SparkBackend

    backend = SparkBackend(master=args.master)
    if backend.session is None:
        from pyspark.sql import SparkSession

        return SparkSession(backend.sc), lambda: None
    return backend.session, lambda: None
