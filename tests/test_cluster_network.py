"""The driver's address and port, an unreachable driver, executors that come and go.

* Option checks (no Spark): every bad ``driver_host`` / ``driver_bind`` / ``driver_port``
  is a one-line ConfigError saying what to change, through the config and the magic's
  flags; an address this machine cannot bind and a port range with nothing free fail
  before a run directory exists.
* Local worker processes reach a driver on the first free port of a range, and one bound
  to every interface (0.0.0.0) while advertising loopback (TLS on: the bind leaves it).
* On the namespaced cluster (``tests/netcluster.py``): a run on a port range bound to
  0.0.0.0; a driver advertised at an address of the bridge's /24 that nobody has fails
  in one line naming that address, long before Spark's task retries would end; under
  dynamic allocation (maxExecutors 2) a run that starts with one live host takes a second
  worker when a second host comes up mid-run.
"""

import os
import socket
import threading
import time

import pytest
from conftest import hpo_config, journal

from maggy_magic import (
    ConfigError,
    ExperimentFailed,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
)
from maggy_magic.driver.address import DriverAddress
from maggy_magic.driver.tls import wants_tls
from maggy_magic.magics.options import parse_options

#: Hang guard, not a speed bound: the most the unreachable-driver run may take to fail.
UNREACHABLE_GUARD = 90.0


def quick(x):
    return x


def brief(x):
    import time

    time.sleep(0.3)  # long enough for every worker to join before the trials run out
    return x


def free_ports(host, count):
    """``count`` consecutive ports that are free on ``host`` now."""
    for base in range(41000 + os.getpid() % 2000 * 5, 64000, 97):
        socks = []
        try:
            for port in range(base, base + count):
                socks.append(socket.create_server((host, port)))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise AssertionError("no free range of ports")


# -- option checks ----------------------------------------------------------------------
BAD = [
    (dict(driver_host="192.0.2.1:5000"), "driver_host (--driver-host) takes an address without "
     "a port, got '192.0.2.1:5000'; give the port as driver_port"),
    (dict(driver_host="300.1.2.3"), "driver_host (--driver-host) must be an IP address or a "
     "host name"),
    (dict(driver_bind="bad host"), "driver_bind (--driver-bind) must be an IP address"),
    (dict(driver_bind="-node"), "driver_bind (--driver-bind) must be an IP address"),
    (dict(driver_host=""), "driver_host (--driver-host) must be an IP address"),
    (dict(driver_host=5), "driver_host (--driver-host) must be an IP address"),
    (dict(driver_port=0), "driver_port (--driver-port) port 0 is out of range; ports are "
     "1-65535"),
    (dict(driver_port=70000), "port 70000 is out of range"),
    (dict(driver_port="50000-70000"), "port 70000 is out of range"),
    (dict(driver_port="50100-50000"), "driver_port (--driver-port) range 50100-50000 is "
     "reversed; write 50000-50100"),
    (dict(driver_port="fifty"), "driver_port (--driver-port) takes a port (50000) or a range "
     "of ports (50000-50100), got 'fifty'"),
    (dict(driver_port="1-2-3"), "takes a port (50000) or a range"),
    (dict(driver_port=True), "takes a port (50000) or a range"),
    (dict(driver_port=(1, 2, 3)), "takes a port (50000) or a range"),
    (dict(driver_port=50000.5), "takes a port (50000) or a range"),
]


@pytest.mark.parametrize("options,expected", BAD, ids=[str(o) for o, _ in BAD])
def test_a_bad_address_or_port_is_a_one_line_config_error(options, expected):
    with pytest.raises(ConfigError) as info:
        hpo_config(**options).validate()
    message = str(info.value)
    assert expected in message and "\n" not in message, message


@pytest.mark.parametrize("value,expected", [
    ("50000", (50000, 50000)), ("50000-50100", (50000, 50100)), (" 7 - 9 ", (7, 9)),
    (50000, (50000, 50000)), ([5, 6], (5, 6)), (None, None)])
def test_ports_and_ranges_read_as_first_and_last(value, expected):
    config = hpo_config(driver_port=value)
    config.validate()
    assert config.driver_port == expected


def test_addresses_read_as_given():
    config = hpo_config(driver_host=" node1.example.com ", driver_bind="[::]")
    config.validate()
    assert (config.driver_host, config.driver_bind) == ("node1.example.com", "::")


def test_the_magic_flags_set_the_options_and_their_mistakes_are_one_line():
    options = parse_options(["--driver-host", "198.51.100.3", "--driver-bind", "0.0.0.0",
                             "--driver-port", "50000-50100"], "%%maggy hpo")
    assert options == {"driver_host": "198.51.100.3", "driver_bind": "0.0.0.0",
                       "driver_port": "50000-50100"}
    config = hpo_config(**options)
    config.validate()
    assert config.driver_port == (50000, 50100) and config.driver_bind == "0.0.0.0"
    with pytest.raises(ConfigError, match=r"range 9-1 is reversed; write 1-9$"):
        hpo_config(**parse_options(["--driver-port", "9-1"], "%%maggy hpo")).validate()


def test_an_address_this_machine_cannot_bind_fails_before_the_run_exists(tmp_path):
    # TEST-NET-1: no interface of this machine has it (nothing is sent: bind fails)
    cases = [
        (dict(driver_bind="192.0.2.1"), "the driver cannot listen at driver_bind '192.0.2.1' "
         "(Cannot assign requested address); set driver_bind (--driver-bind) to an address "
         "of this machine, or 0.0.0.0"),
        (dict(driver_host="192.0.2.1"), "the driver cannot listen at '192.0.2.1', its "
         "driver_host (Cannot assign requested address); if workers reach this machine at "
         "192.0.2.1 (NAT, a container), set driver_bind (--driver-bind)"),
        (dict(driver_bind="no-such-host.invalid"), "cannot listen at driver_bind "
         "'no-such-host.invalid'"),
    ]
    for options, expected in cases:
        with pytest.raises(ConfigError) as info:
            experiment.run(quick, hpo_config(root=str(tmp_path), **options))
        assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)
        assert "Errno" not in str(info.value)
    assert not os.listdir(tmp_path)  # no run directory


def test_a_range_with_no_free_port_names_the_range(tmp_path):
    base = free_ports("127.0.0.1", 3)
    held = [socket.create_server(("127.0.0.1", p)) for p in range(base, base + 3)]
    try:
        with pytest.raises(ConfigError) as info:
            experiment.run(quick, hpo_config(root=str(tmp_path),
                                             driver_port=f"{base}-{base + 2}"))
    finally:
        for sock in held:
            sock.close()
    assert str(info.value) == (f"no free port in driver_port {base}-{base + 2} on 127.0.0.1 "
                               "(each one is in use or not permitted); free one, or give a "
                               "wider range with driver_port (--driver-port)")
    assert not os.listdir(tmp_path)


def test_tls_follows_both_the_bound_and_the_advertised_address():
    assert not wants_tls(DriverAddress("127.0.0.1"))
    assert not wants_tls(DriverAddress("127.0.0.1", "localhost"))
    assert wants_tls(DriverAddress("0.0.0.0", "127.0.0.1"))      # listens beyond loopback
    assert wants_tls(DriverAddress("127.0.0.1", "192.0.2.7"))    # workers come from afar
    assert not wants_tls(DriverAddress("0.0.0.0", "127.0.0.1"), tls=False)


def test_connecting_retries_what_may_pass_within_the_budget_and_not_a_refusal(monkeypatch):
    from maggy_magic import rpc

    server = socket.create_server(("127.0.0.1", 0))
    address = server.getsockname()
    real = socket.create_connection
    calls = []

    def flaky(addr, timeout=None):
        calls.append(timeout)
        if len(calls) <= 2:
            raise TimeoutError("timed out")
        return real(addr, timeout=timeout)

    monkeypatch.setattr(rpc, "CONNECT_PAUSE", 0.05)
    monkeypatch.setattr(socket, "create_connection", flaky)
    rpc.connect(address, 3.0, budget=5.0).close()
    assert len(calls) == 3 and all(t <= 3.0 for t in calls)
    server.close()

    calls.clear()

    def unreachable(addr, timeout=None):
        calls.append(timeout)
        raise OSError(113, "No route to host")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    started = time.monotonic()
    with pytest.raises(OSError, match="No route"):
        rpc.connect(address, 3.0, budget=0.5)
    assert time.monotonic() - started < 3.0 and len(calls) >= 2

    calls.clear()

    def refused(addr, timeout=None):
        calls.append(timeout)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    with pytest.raises(ConnectionRefusedError):
        rpc.connect(address, 3.0, budget=5.0)
    assert len(calls) == 1  # nothing listens: final at once


# -- local worker processes ------------------------------------------------------------------
def test_local_workers_reach_the_first_free_port_of_a_range(tmp_path):
    base = free_ports("127.0.0.1", 4)
    held = [socket.create_server(("127.0.0.1", p)) for p in (base, base + 1)]
    drivers = []
    try:
        result = experiment.run(brief, hpo_config(
            root=str(tmp_path), num_trials=4, workers=2, driver_port=f"{base}-{base + 3}"),
            on_driver=lambda driver, _: drivers.append(driver))
    finally:
        for sock in held:
            sock.close()
    assert result.state == "finished" and result.num_finished == 4
    assert drivers[0].address == ("127.0.0.1", base + 2)
    joined = [e for e in journal(result.run_dir) if e["type"] == "worker_joined"]
    assert len(joined) == 2 and all(e["pid"] != os.getpid() for e in joined)


def test_local_workers_reach_a_driver_bound_everywhere_at_its_advertised_address(tmp_path):
    base = free_ports("127.0.0.1", 1)
    drivers, bound = [], []

    def seen(driver, _):
        drivers.append(driver)
        bound.append(driver.hub._listener.getsockname()[:2])

    result = experiment.run(quick, hpo_config(
        root=str(tmp_path), num_trials=2, driver_bind="0.0.0.0", driver_port=base),
        on_driver=seen)
    assert result.state == "finished" and result.num_finished == 2
    driver = drivers[0]
    assert driver.address == ("127.0.0.1", base)  # advertised: the backend's loopback
    assert bound == [("0.0.0.0", base)]
    assert driver.fingerprint is not None  # auto: the bind leaves loopback, TLS is on


# -- the namespaced cluster ----------------------------------------------------------------
def where(x):
    import socket
    import time

    time.sleep(1.0)
    return {"metric": x, "host": socket.gethostname()}


@pytest.fixture(scope="module")
def session(netcluster):
    spark = netcluster.session()
    yield spark
    from pyspark import SparkContext

    active = SparkContext._active_spark_context  # the dynamic-allocation test's own
    if active is not None:
        active.stop()
    netcluster.ensure_hosts(2)


def on_cluster(session, **kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("seed", 5)
    kwargs.setdefault("hb_interval", 0.2)
    return HyperparameterOptConfig(backend="spark", backend_options={"spark": session},
                                   **kwargs)


@pytest.mark.slow
def test_cluster_run_on_a_port_range_bound_to_every_interface(session, netcluster):
    address = netcluster.driver_address
    base = free_ports("0.0.0.0", 4)
    held = socket.create_server(("0.0.0.0", base))  # the range's first port is taken
    drivers = []
    try:
        result = experiment.run(where, on_cluster(
            session, num_trials=6, workers=2, driver_bind="0.0.0.0", driver_host=address,
            driver_port=f"{base}-{base + 3}"), on_driver=lambda d, _: drivers.append(d))
    finally:
        held.close()
    assert result.state == "finished" and result.num_finished == 6
    # the workers reached the range's second port at the advertised address, over TLS
    assert drivers[0].address == (address, base + 1) and drivers[0].fingerprint
    events = journal(result.run_dir)
    joined = {e["host"] for e in events if e["type"] == "worker_joined"}
    ran = {e["metrics"].get("host") for e in events if e["type"] == "trial_finished"}
    hosts = {h.name for h in netcluster.hosts.values()}
    assert joined and ran <= joined <= hosts, (joined, ran, hosts)


@pytest.mark.slow
def test_a_driver_advertised_where_executors_cannot_reach_it_fails_fast_in_one_line(
        session, netcluster):
    # an address inside the cluster's own bridge /24 that no host has: ARP gets no answer
    nobody = f"{netcluster.prefix}.250"
    assert nobody not in [h.address for h in netcluster.hosts.values()]
    drivers = []
    started = time.monotonic()
    with pytest.raises(ExperimentFailed) as info:
        experiment.run(quick, on_cluster(session, num_trials=4, workers=4,
                                         driver_bind=netcluster.driver_address,
                                         driver_host=nobody),
                       on_driver=lambda d, _: drivers.append(d))
    took = time.monotonic() - started
    message = str(info.value)
    print(f"unreachable driver: the run failed after {took:.1f} s: {message}")
    port = drivers[0].address[1]
    assert "\n" not in message, message
    assert f"could not reach the driver at {nobody}:{port}" in message, message
    assert "set driver_host (--driver-host) or spark.driver.host" in message, message
    assert took < UNREACHABLE_GUARD, took
    # no task failed (so Spark retried none): each one ended, saying why, and the job of
    # 4 tasks on 2 task slots was cancelled as soon as the first ones did, not after the
    # second wave waited out its attempts too
    job = _last_worker_job(session.sparkContext)
    print(f"worker job: {job.numTasks()} tasks, {job.numCompletedTasks()} completed, "
          f"{job.numFailedTasks()} failed, {job.numKilledTasks()} killed")
    assert job.numTasks() == 4 and job.numFailedTasks() == 0, job
    assert job.numCompletedTasks() < 4, job


def _last_worker_job(sc):
    """The status store's record of the newest job that ran worker tasks."""
    jobs = sc._jsc.sc().statusStore().jobsList(sc._jvm.java.util.ArrayList())
    ours = []
    for k in range(jobs.size()):
        job = jobs.apply(k)
        group = job.jobGroup()
        name = group.get() if group.isDefined() else ""
        if name.startswith("maggy-magic-") and not name.startswith("maggy-magic-probe-"):
            ours.append(job)
    return max(ours, key=lambda j: j.jobId())


def a_second(x):
    import time

    time.sleep(0.5)
    return x


#: Hang guard, not a speed bound: the dynamic-allocation run stops after this long even if
#: the second host's worker never joined (and the test then fails on what it saw).
DYNAMIC_GUARD = 180.0


def wait_for(predicate, guard, what):
    deadline = time.monotonic() + guard
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {guard:g} s"
        time.sleep(0.5)


@pytest.mark.slow
def test_dynamic_allocation_workers_join_as_executors_arrive(session, netcluster):
    """Last in this module: it replaces the module's session with its own."""
    import types

    from maggy_magic.backends.spark import SparkBackend
    from maggy_magic.backends.spark.context import task_slots
    from maggy_magic.distributed.config import DistributedConfig

    live = netcluster.alive_workers()
    for host in netcluster.hosts.values():
        if host.address in live[1:]:
            netcluster.kill_host(host.name)
    wait_for(lambda: len(netcluster.alive_workers()) == 1, 60, "one live host")
    spark = netcluster.session(**{
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
        "spark.dynamicAllocation.minExecutors": "0",
        "spark.dynamicAllocation.maxExecutors": "2",
        "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
        "spark.executor.cores": "1"})
    backend = SparkBackend(spark=spark)
    # what maxExecutors allows, not the executors up now (none or one)
    assert task_slots(spark.sparkContext) <= 1
    assert backend.default_workers() == 2 and backend.capacity() == 2
    DistributedConfig.check_backend(types.SimpleNamespace(workers=2), backend)
    with pytest.raises(ConfigError, match="can run 2 worker"):
        DistributedConfig.check_backend(types.SimpleNamespace(workers=3), backend)
    with pytest.raises(ConfigError, match="barrier stages under dynamic allocation.*"
                       "spark.dynamicAllocation.enabled=false"):
        SparkBackend(spark=spark, barrier=True)

    grown, drivers, hosts, after = threading.Event(), [], set(), []

    def grow(event):  # on the driver's thread: the host starts on another
        if event["type"] == "trial_finished" and not grown.is_set():
            grown.set()
            threading.Thread(target=netcluster.start_host, daemon=True).start()
        elif event["type"] == "worker_joined":
            hosts.add(event["host"])
        elif event["type"] == "trial_finished" and len(hosts) > 1:
            after.append(event)
            if len(after) == 10:  # enough trials side by side: end the run
                drivers[0].request_stop("the second host's worker ran trials")

    guard = threading.Timer(DYNAMIC_GUARD, lambda: drivers[0].request_stop("hang guard"))
    guard.start()
    try:
        result = experiment.run(a_second, HyperparameterOptConfig(
            num_trials=400, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])),
            es_policy="none", seed=5, hb_interval=0.2, backend="spark",
            backend_options={"spark": spark}),
            listeners=[grow], on_driver=lambda d, _: drivers.append(d))
    finally:
        guard.cancel()
    assert result.state in ("finished", "stopped") and result.num_finished >= 10, result.state
    events = journal(result.run_dir)
    assert next(e for e in events if e["type"] == "run_started")["config"]["workers"] == 2
    joined = [e for e in events if e["type"] == "worker_joined"]
    assert len({e["host"] for e in joined}) == 2, joined
    first_end = min(e["t"] for e in events if e["type"] == "trial_finished")
    # the first worker on another host than the first one's (a worker may also register
    # again on the same host when Spark replaces an idle executor)
    second = next(e for e in joined if e["host"] != joined[0]["host"])
    assert second["t"] > first_end, joined
    # after the second worker joined, trials ran side by side
    spans = {}
    for e in events:
        if e["type"] == "trial_started":
            spans[e["trial"]] = [e["t"], None]
        elif e["type"] == "trial_finished":
            spans[e["trial"]][1] = e["t"]
    later = sorted(s for s in spans.values() if s[0] >= second["t"])
    overlaps = sum(1 for a, b in zip(later, later[1:]) if b[0] < a[1])
    print(f"dynamic allocation: second worker joined {second['t'] - first_end:.1f} s after "
          f"the first trial ended; {len(later)} trials after it, {overlaps} overlapping")
    assert overlaps >= 1, later
    assert len(netcluster.alive_workers()) == 2
