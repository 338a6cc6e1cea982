"""The driver's port is open to the whole cluster network: strangers that connect and
never authenticate must not end a run, even with a low file-descriptor limit.

Real processes and sockets: the experiment runs in its own Python process under
``RLIMIT_NOFILE`` = 256 while this test holds thousands of connections against its port.
"""

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import resource, sys
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

    def train(x):
        import os, time
        while not os.path.exists("gate"):
            time.sleep(0.05)
        return x

    config = HyperparameterOptConfig(num_trials=4, searchspace=Searchspace(x=("DOUBLE", [0, 1])),
                                     es_policy="none", workers=2, name="hostile", seed=1)
    result = experiment.run(train, config, on_driver=lambda driver, backend: print(
        "ADDR", *driver.address, flush=True))
    print("RESULT", result.state, result.num_finished, flush=True)
""")


def _flood(address, count, deadline):
    """``count`` connections, held open: a third idle, a third mid-frame, a third that
    sent half a header and shut their sending side. Bounded by ``deadline``."""
    held, refused = [], 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        try:
            sock = socket.create_connection(address, timeout=5)
        except OSError:
            refused += 1
            continue
        try:
            if i % 3 == 1:
                sock.sendall((100).to_bytes(4, "big") + b"\\0" * 10)  # a frame that never ends
            elif i % 3 == 2:
                sock.sendall(b"\\0\\0")
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        held.append(sock)
    return held, refused


@pytest.mark.slow
def test_a_run_completes_while_thousands_of_strangers_hold_its_port(tmp_path):
    with open("exp.py", "w") as handle:
        handle.write(SCRIPT)
    proc = subprocess.Popen([sys.executable, "exp.py"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    held = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("ADDR"), line + proc.stderr.read()
        _, host, port = line.split()
        held, refused = _flood((host, int(port)), 3000, time.monotonic() + 90)
        assert len(held) + refused >= 1000
        # the driver closed strangers to stay under its limit: many of ours are gone
        closed = 0
        for sock in held:
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        assert closed >= len(held) - 300, (closed, len(held))
        open("gate", "w").close()
        out, err = proc.communicate(timeout=120)
    finally:
        for sock in held:
            sock.close()
        if proc.poll() is None:
            proc.kill()
    assert "RESULT finished 4" in out, out + err
    assert "Too many open files" not in out + err


def test_a_stranger_that_never_authenticates_is_closed_after_its_deadline(monkeypatch):
    from maggy_magic import rpc
    from maggy_magic.driver import hub as hub_module

    monkeypatch.setattr(hub_module, "STRANGER_DEADLINE", 0.5)
    closed = []
    hub = hub_module.ConnectionHub("127.0.0.1", rpc.new_secret(), lambda conn, msg: None,
                                   lambda conn, reason, rejected: closed.append(reason))
    sock = socket.create_connection(hub.address, timeout=5)
    sock.sendall(b"\0\0")  # the start of a header, then nothing
    try:
        sock.settimeout(0.05)
        ended = False
        for _ in range(200):  # bounded: 200 polls of at most 0.05 s each
            hub.poll(0.05, lambda: True)
            try:
                ended = sock.recv(1) == b""
            except socket.timeout:
                continue
            except OSError:
                ended = True
            if ended:
                break
        assert ended, "the driver kept a connection that never authenticated"
        assert hub.strangers_closed == 1
        assert closed == []  # a stranger was never a worker: nobody is told it was lost
    finally:
        sock.close()
        hub.close_all()
