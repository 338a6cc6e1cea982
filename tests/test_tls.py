"""TLS on the driver's socket: real runs, real worker processes, real sockets.

There is no packet capture here, so encryption is shown on the bytes themselves: the
workers connect through a loopback relay in this test that records everything in both
directions, and a distinctive hyperparameter value (driver → worker) and a printed line
(worker → driver) must not appear in what it recorded with TLS on, while they do with TLS
off (the control). A worker given another certificate's fingerprint refuses the driver;
a client that does not speak TLS is a rejected stranger; neither ends the run.
"""

import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment, rpc
from maggy_magic.backends.local import LocalBackend
from maggy_magic.driver import Driver, DriverSettings
from maggy_magic.driver.tls import is_loopback, wants_tls
from maggy_magic.errors import ConfigError
from maggy_magic.events import EventStream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = "zebra-quokka-8161"   # a hyperparameter value the driver sends
LINE = "PLAINTEXT-CANARY-4217"  # a line the trial prints, sent back to the driver


def canary(word):
    print("PLAINTEXT-CANARY-4217", word)
    print("y" * 300_000)  # frames of many TLS records (at most 16 KiB each)
    return len(word)


class Relay:
    """A loopback TCP relay to ``target`` that keeps every byte it forwards."""

    def __init__(self, target):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()
        self.recorded = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                inner, _ = self.server.accept()
            except OSError:
                return
            outer = socket.create_connection(self.target)
            self.connections += 1
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.recorded += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.server.close()


class RelayedBackend(LocalBackend):
    """Local worker processes that reach the driver only through a :class:`Relay`;
    ``bind`` is the address the driver listens on."""

    def __init__(self, bind="127.0.0.1"):
        super().__init__()
        self.bind = bind
        self.relay = None

    def driver_host(self):
        return self.bind

    def start(self, launch):
        self.relay = Relay((launch.host, launch.port))
        launch.host, launch.port = self.relay.address
        super().start(launch)

    def stop(self, grace=5.0):
        super().stop(grace)
        if self.relay is not None:
            self.relay.close()


def _config(tmp_path, backend, tls, num_trials=3):
    return HyperparameterOptConfig(
        num_trials=num_trials, searchspace=Searchspace(word=("CATEGORICAL", [VALUE])),
        es_policy="none", workers=1, name="tls", root=str(tmp_path), seed=3,
        backend=backend, tls=tls)


@pytest.mark.parametrize("tls", [True, False], ids=["tls-on", "tls-off-control"])
def test_what_crosses_the_wire_is_encrypted_with_tls_and_plain_without(tmp_path, tls):
    backend = RelayedBackend()
    drivers = []
    result = experiment.run(canary, _config(tmp_path, backend, tls),
                            on_driver=lambda driver, _: drivers.append(driver))
    assert result.state == "finished" and result.num_finished == 3
    assert result.best_metric == len(VALUE)
    assert (drivers[0].fingerprint is not None) == tls
    with open(os.path.join(result.run_dir, "journal.jsonl"), encoding="utf-8") as handle:
        assert LINE in handle.read()  # the line did reach the driver
    wire = bytes(backend.relay.recorded)
    assert backend.relay.connections >= 1 and len(wire) > 500
    if tls:
        assert VALUE.encode() not in wire and LINE.encode() not in wire
        assert b'"type"' not in wire and b"register" not in wire and b"y" * 1000 not in wire
        assert wire[0] == 0x16  # a TLS handshake record opens the connection
    else:
        assert VALUE.encode() in wire and LINE.encode() in wire


def test_auto_turns_tls_on_for_a_driver_bound_beyond_loopback(tmp_path):
    # 0.0.0.0 (every interface) is not loopback; connecting to it reaches this machine
    backend = RelayedBackend(bind="0.0.0.0")
    drivers = []
    result = experiment.run(canary, _config(tmp_path, backend, "auto", num_trials=2),
                            on_driver=lambda driver, _: drivers.append(driver))
    assert result.state == "finished" and result.num_finished == 2
    assert drivers[0].fingerprint is not None
    wire = bytes(backend.relay.recorded)
    assert VALUE.encode() not in wire and LINE.encode() not in wire


BAD_WORKER = textwrap.dedent("""
    import sys
    from maggy_magic.worker import WorkerLoop
    host, port, secret, fingerprint = sys.argv[1:5]
    WorkerLoop(lambda: None, "intruder", host, int(port), bytes.fromhex(secret),
               fingerprint=fingerprint).run()
""")


def test_a_wrong_pin_is_refused_by_the_worker_and_a_plain_client_by_the_driver(tmp_path):
    seen = []
    checks = {}

    def meddle(driver, backend):
        host, port = driver.address
        # 1. a client that does not speak TLS, sending a frame that is valid in plaintext
        with socket.create_connection((host, port), timeout=30) as plain:
            plain.sendall(rpc.encode(driver.secret, b"C", b"", {
                "n": 0, "type": "register", "worker": "plain", "host": "x", "pid": 1,
                "nonce": "0" * 32, "protocol": rpc.PROTOCOL}))
            try:
                checks["plain_reply"] = plain.recv(65536)
            except ConnectionResetError:
                checks["plain_reply"] = b""
        # 2. a real worker process holding another certificate's fingerprint
        wrong = "%064x" % (int(driver.fingerprint, 16) ^ 1)
        proc = subprocess.run(
            [sys.executable, "-c", BAD_WORKER, host, str(port), driver.secret.hex(), wrong],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
        checks["bad_pin"] = proc

    result = experiment.run(canary, _config(tmp_path, "local", True), on_driver=meddle,
                            listeners=[seen.append])
    proc = checks["bad_pin"]
    assert proc.returncode != 0
    assert "FrameError" in proc.stderr and "not the one this run pinned" in proc.stderr, \
        proc.stderr
    # the driver answered the plaintext frame with no frame (a TLS alert at most) and
    # closed the connection; it counted it as rejected, and the run went on
    assert b"register" not in checks["plain_reply"]
    assert not checks["plain_reply"] or checks["plain_reply"][0] == 0x15  # TLS alert
    rejected = [e for e in seen if e["type"] == "frame_rejected"]
    assert any("TLS handshake failed" in e["reason"] for e in rejected), rejected
    joined = {e["worker"] for e in seen if e["type"] == "worker_joined"}
    assert joined == {"0"}
    assert result.state == "finished" and result.num_finished == 3


def test_the_tls_decision_and_option():
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert is_loopback(host) and not wants_tls(host, "auto"), host
    # documentation addresses (RFC 5737, RFC 3849): only parsed, no traffic goes anywhere
    for host in ("192.0.2.1", "0.0.0.0", "198.51.100.7", "2001:db8::1"):
        assert not is_loopback(host) and wants_tls(host, "auto"), host
    assert wants_tls("127.0.0.1", True) and not wants_tls("192.0.2.1", False)
    assert not is_loopback("no-such-host.invalid")  # unknown: assume it leaves the machine
    for value, normal in (("auto", "auto"), ("AUTO", "auto"), (True, True), ("on", True),
                          (False, False), ("false", False)):
        config = HyperparameterOptConfig(tls=value, searchspace=Searchspace(x=("DOUBLE", [0, 1])))
        config.validate()
        assert config.tls == normal
    with pytest.raises(ConfigError, match="tls must be True, False or 'auto'"):
        HyperparameterOptConfig(tls="maybe", searchspace=Searchspace(x=("DOUBLE", [0, 1]))
                                ).validate()


def test_a_driver_on_loopback_has_no_certificate_unless_forced():
    events = EventStream("r")
    plain = Driver(None, None, DriverSettings(), events, host="127.0.0.1")
    forced = Driver(None, None, DriverSettings(), events, host="127.0.0.1", tls=True)
    try:
        assert plain.fingerprint is None and plain.hub.ssl_context is None
        assert len(forced.fingerprint) == 64 and forced.hub.ssl_context is not None
        assert forced.hub.ssl_context.minimum_version >= __import__("ssl").TLSVersion.TLSv1_2
    finally:
        plain.hub.close_all()
        forced.hub.close_all()


@pytest.mark.slow
def test_spark_executors_get_the_pin_through_the_task_closure(tmp_path):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from maggy_magic.backends.spark import SparkBackend

    # ship="always": the executors run the zipped copy of this tree (its rpc, its task)
    backend = SparkBackend(master="local-cluster[1,1,1024]", ship="always")
    try:
        drivers, seen = [], []
        result = experiment.run(canary, _config(tmp_path, backend, True, num_trials=2),
                                on_driver=lambda driver, _: drivers.append(driver),
                                listeners=[seen.append])
    finally:
        backend.session.stop()
    assert result.state == "finished" and result.num_finished == 2
    assert drivers[0].fingerprint is not None and drivers[0].hub.ssl_context is not None
    joined = [e for e in seen if e["type"] == "worker_joined"]
    assert joined and all(e["pid"] != os.getpid() for e in joined)
    assert not [e for e in seen if e["type"] == "frame_rejected"]


def test_without_cryptography_tls_is_a_one_line_error(monkeypatch):
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography fails
    with pytest.raises(ConfigError, match="needs the 'cryptography' package.*tls=False"):
        Driver(None, None, DriverSettings(), EventStream("r"), host="127.0.0.1", tls=True)
    plain = Driver(None, None, DriverSettings(), EventStream("r"), host="127.0.0.1")
    plain.hub.close_all()  # loopback, auto: no TLS, no cryptography needed
