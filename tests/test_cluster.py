"""The spark backend on a cluster of separate hosts (``tests/netcluster.py``): a standalone
master, two worker hosts with their own network and mount namespaces (private ``/tmp``,
this checkout hidden, so they can import neither the project nor this module), the
driver in this process.

What one host hides and these tests do not: executors that cannot import maggy_magic
(it ships itself), workers reaching the driver over a real interface, peers of a dist gang
on different addresses, a whole host dying mid-run.
"""

import collections
import socket
import threading
import time

import pytest
from conftest import journal

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

pytestmark = pytest.mark.slow

#: Hang guard, not a speed bound: the longest a test waits for the host kill it arranged.
HANG_GUARD = 120.0


@pytest.fixture(scope="module")
def session(netcluster):
    spark = netcluster.session()
    yield spark
    spark.stop()
    netcluster.ensure_hosts(2)


def hpo(session, **kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("workers", 2)
    kwargs.setdefault("seed", 3)
    kwargs.setdefault("hb_interval", 0.2)
    return HyperparameterOptConfig(backend="spark", backend_options={"spark": session},
                                   **kwargs)


def log_lines(run_dir):
    """(trial, line) of every line the trials printed, from the run's journal."""
    return [(e.get("trial"), line) for e in journal(run_dir) if e["type"] == "log"
            for line in e["lines"]]


def where(x, reporter):
    """Prints where it ran; takes 1 s, so that both hosts' workers get trials."""
    import os
    import socket
    import time

    import maggy_magic

    time.sleep(1.0)
    print(f"ran on {socket.gethostname()} pid {os.getpid()} maggy from "
          f"{os.path.dirname(maggy_magic.__file__)}")
    return x


def test_hpo_trials_run_on_both_hosts_which_get_the_project_shipped(session, netcluster):
    from maggy_magic.backends.spark.ship import probe_modules

    # the hosts cannot import the project or this test module: both must travel
    assert probe_modules(session.sparkContext, ["maggy_magic", "test_cluster"]) == {
        "maggy_magic": (False, None), "test_cluster": (False, None)}
    result = experiment.lagom(where, hpo(session, num_trials=6))
    assert result.num_finished == 6
    lines = [line for _, line in log_lines(result.run_dir) if line.startswith("ran on")]
    hosts = collections.Counter(line.split()[2] for line in lines)
    assert set(hosts) == {"host1", "host2"}, hosts
    assert socket.gethostname() not in hosts
    # imported from the shipped zip, not from a path of this machine
    assert all(".zip" in line.split(" maggy from ")[1] for line in lines), lines
    joined = {e["host"] for e in journal(result.run_dir) if e["type"] == "worker_joined"}
    assert joined == {"host1", "host2"}


def holds_on_host2(x, reporter):
    """Trials from the fifth on hold on host2 (reporting metrics) until the host dies; on
    host1 every trial takes 0.3 s."""
    import socket
    import time

    trial = int(reporter.get_trial_id())
    host = socket.gethostname()
    print(f"trial {trial} on {host}")
    step = 0
    while host == "host2" and trial >= 4:
        reporter.broadcast(x, step)
        step += 1
        time.sleep(0.1)
    time.sleep(0.3)
    return x


def test_a_host_killed_whole_mid_trial_loses_one_worker_and_the_run_finishes(session,
                                                                             netcluster):
    killed = {}
    workers = {}

    def kill_when_held(event):
        if event["type"] == "worker_joined":
            workers[event["worker"]] = event["host"]
        elif event["type"] == "trial_started" and not killed \
                and workers.get(event["worker"]) == "host2" and int(event["trial"]) >= 4:
            killed["trial"], killed["worker"] = event["trial"], event["worker"]
            threading.Thread(target=lambda: killed.update(
                pids=netcluster.kill_host("host2"), at=time.monotonic()),
                daemon=True).start()

    start = time.monotonic()
    result = experiment.lagom(holds_on_host2, hpo(session, num_trials=14, hb_timeout=4,
                                                  max_retries=2),
                              listeners=[kill_when_held])
    assert killed.get("pids"), "no trial held on host2: the kill never happened"
    assert time.monotonic() - start < HANG_GUARD * 2
    events = journal(result.run_dir)
    assert result.num_finished == 14 and result.num_failed == 0
    lost = [e for e in events if e["type"] == "worker_lost"]
    assert [e["worker"] for e in lost] == [killed["worker"]], lost
    retried = [e["trial"] for e in events if e["type"] == "trial_retried"]
    assert killed["trial"] in retried
    finished = [e["trial"] for e in events if e["type"] == "trial_finished"]
    assert sorted(finished) == sorted(set(finished)) and len(finished) == 14
    # the held trial finished after all, on the host that survived
    runs = collections.defaultdict(list)
    for trial, line in log_lines(result.run_dir):
        if line.startswith("trial "):
            runs[trial].append(line.split()[-1])
    assert runs[killed["trial"]][-1] == "host1", runs[killed["trial"]]
    assert all(hosts[-1] == "host1" for trial, hosts in runs.items() if int(trial) >= 4)
    netcluster.ensure_hosts(2)


# -- dist gangs across the two hosts --------------------------------------------------------
def torch_across(module, train_set, lr, reporter):
    """A few SGD steps under DDP; prints where each rank ran, its MASTER_ADDR and its
    final weights."""
    import json
    import os
    import socket

    import torch

    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    loss = None
    for x, y in torch.utils.data.DataLoader(train_set, batch_size=8):
        loss = torch.nn.functional.mse_loss(module(x).squeeze(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = [p.detach().tolist() for p in module.parameters()]
    print("rank " + json.dumps({"rank": int(os.environ["RANK"]), "host": socket.gethostname(),
                                "master": os.environ["MASTER_ADDR"], "weights": weights}))
    return -loss.item()


def test_a_torch_gang_spans_both_hosts(session, netcluster):
    import json

    netcluster.wait_executors(session, 2)  # a host killed before has come back
    import torch

    from maggy_magic import TorchDistributedConfig

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator)
    data = torch.utils.data.TensorDataset(x, x @ torch.tensor([2.0, -1.0, 0.5]))
    torch.manual_seed(1)
    result = experiment.lagom(torch_across, TorchDistributedConfig(
        module=torch.nn.Linear(3, 1), dataset=[data], hparams={"lr": 0.1}, workers=2,
        backend="spark", backend_options={"spark": session}, hb_interval=0.2))
    assert result.state == "finished", result
    ranks = {r["rank"]: r for r in (json.loads(line[5:]) for _, line in
                                    log_lines(result.run_dir) if line.startswith("rank {"))}
    assert sorted(ranks) == [0, 1]
    assert {ranks[0]["host"], ranks[1]["host"]} == {"host1", "host2"}
    # the chief's address on the cluster network, not a loopback or this machine's
    chief = ranks[0]["master"]
    assert chief.startswith(netcluster_prefix(session)) and chief == ranks[1]["master"]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # one model, all-reduced


def netcluster_prefix(session):
    """``10.213.N.`` of the cluster the session runs on (its driver's address)."""
    return session.sparkContext.getConf().get("spark.driver.host").rsplit(".", 1)[0] + "."


def tf_across(lr, epochs, out_dir, dist_context=None):
    """``tf_dist_fns.train_fit`` (a module of the tests folder, which the hosts cannot
    see: it travels with the function), printing TF_CONFIG and the host."""
    import json
    import os
    import socket

    import tf_dist_fns

    result = tf_dist_fns.train_fit(lr, epochs, out_dir, dist_context)
    print("tf " + json.dumps({"host": socket.gethostname(), "rank": result["rank"],
                              "tf_config": json.loads(os.environ["TF_CONFIG"]),
                              "losses": result["losses"]}))
    return result


def test_a_tensorflow_gang_spans_both_hosts(session, netcluster):
    netcluster.wait_executors(session, 2)
    from maggy_magic.distributed.config import TfDistributedConfig

    result = experiment.lagom(tf_across, TfDistributedConfig(
        hparams={"lr": 0.5, "epochs": 2, "out_dir": "/tmp"}, workers=2,
        optimization_key="loss", direction="min", backend="spark",
        backend_options={"spark": session}, hb_interval=0.2, hb_timeout=60))
    check_tf_gang_across(result, netcluster_prefix(session))


def check_tf_gang_across(result, prefix):
    """The run of ``tf_across`` finished with one rank on each host, both in one TF
    cluster of their addresses on the cluster network (``prefix``), one model."""
    import json

    assert result.state == "finished" and result.metrics["replicas"] == 2
    ranks = {r["rank"]: r for r in (json.loads(line[3:]) for _, line in
                                    log_lines(result.run_dir) if line.startswith("tf {"))}
    assert sorted(ranks) == [0, 1]
    assert {ranks[0]["host"], ranks[1]["host"]} == {"host1", "host2"}
    workers = ranks[0]["tf_config"]["cluster"]["worker"]
    assert workers == ranks[1]["tf_config"]["cluster"]["worker"]
    hosts = [w.rsplit(":", 1)[0] for w in workers]
    assert len(set(hosts)) == 2 and all(h.startswith(prefix) for h in hosts), workers
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the same all-reduced model


def test_the_interface_of_an_address_is_the_one_that_holds_it(netcluster):
    import subprocess

    from maggy_magic.distributed.netif import interface_of

    host = next(iter(netcluster.hosts.values()))
    probe = ("from maggy_magic.distributed.netif import interface_of as f; "
             f"print(f('{host.address}'), f('127.0.0.1'), f('{netcluster.prefix}.250'))")
    inside = subprocess.run(["ip", "netns", "exec", host.netns, __import__("sys").executable,
                             "-c", probe], capture_output=True, text=True, timeout=60)
    assert inside.stdout.split() == ["eth0", "None", "None"], inside.stderr
    assert interface_of(netcluster.driver_address) == netcluster.bridge
    assert interface_of(host.address) is None  # not an address of this namespace
