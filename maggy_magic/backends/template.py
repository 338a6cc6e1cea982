"""A template worker: one fresh process per run that imports the worker's modules and
loads the training function once, then forks every local worker from itself.

Spawning W interpreters costs W times the imports and the function's unpickling (its
modules: numpy, scikit-learn...), which on a small machine is most of a run with many
workers. The template pays that once; a fork costs milliseconds. It is itself spawned,
never forked from the kernel, so nothing of the kernel's threads or state reaches a
worker, and it starts no thread of its own.

The protocol, JSON lines (the kernel's :class:`~.local.LocalBackend` speaks it):

- stdin: ``{"sys_path": [...], "payload_bytes": N, "tls": bool}``, then N bytes of the
  cloudpickled function (``tls``: the workers will connect with TLS, so ``ssl`` is
  loaded here once rather than in each of them); then commands: ``{"fork": id,
  "header": {...}}`` (the worker's setup, as a spawned worker reads it). End of input:
  no more workers; the template leaves once its workers have.
- stdout (lines that are not JSON objects, printed before the template took its stdout
  over, e.g. by a ``sitecustomize``, are skipped): ``{"ready": pid}`` once the function is
  loaded, or ``{"unavailable": reason}``
  (the workers are then spawned as before); ``{"forked": id, "pid": pid}`` per fork;
  ``{"output": id, "data": base64}`` for what a worker wrote to its stdout or stderr (the
  kernel keeps it in the run directory, which a worker's machine may not see);
  ``{"exited": id, "code": exit code}`` when a worker ends (a signal ``s`` is ``-s``),
  after its last output.
"""

from __future__ import annotations

import base64
import json
import os
import select
import sys
import time
from typing import Any, Callable, Dict

#: Seconds between looks for ended workers while no command arrives; right after a
#: worker closed its output (it is exiting), for ``REAP_SOON`` seconds, every
#: ``REAP_QUICK`` seconds, so its exit is told without waiting for the next look.
REAP_EVERY, REAP_QUICK, REAP_SOON = 0.05, 0.002, 0.5


#: The file descriptor the protocol goes out on (stdout as the template started; its
#: fd 1 then points at its stderr, so what imports print cannot garble the protocol).
_PROTOCOL = [1]


def _send(*messages: Dict[str, Any]) -> None:
    """Write ``messages`` to the protocol, one line each, in one write (none: nothing)."""
    if messages:
        os.write(_PROTOCOL[0], b"".join(json.dumps(m).encode() + b"\n" for m in messages))


def _read_exact(stream: Any, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _child(command: Dict[str, Any], load: Callable[[], Callable], out: int) -> None:
    """In the forked worker: its own session, its output into ``out``, no stdin, then
    the worker loop."""
    from ..worker import serve

    os.setsid()
    os.close(_PROTOCOL[0])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    try:
        serve(command["header"], load)  # leaves the process itself
    except BaseException:  # noqa: BLE001 - a worker must never return into the template
        import traceback

        traceback.print_exc()
    os._exit(1)


def _settle(function: Callable) -> None:
    """Spare each fork work the template can do once: the codec a worker's connect
    imports (a host name as ``str`` goes through ``idna``), how ``function`` is called
    (:func:`~maggy_magic.trainfn.call_plan`, kept), and the garbage collector's walk
    over the template's objects (frozen, so a collection in a worker neither visits nor
    copies their pages)."""
    import encodings.idna  # noqa: F401 - socket.getaddrinfo imports it on first use
    import gc

    from ..trainfn import call_plan

    "localhost".encode("idna")
    call_plan(function)
    gc.collect()
    gc.freeze()


def next_look(closing: Dict[str, float], now: float) -> float:
    """Seconds until the loop next looks for ended workers: ``REAP_QUICK`` while a
    worker whose output closed at ``closing[id]`` (monotonic seconds) less than
    ``REAP_SOON`` ago is not reaped yet, else ``REAP_EVERY``."""
    return REAP_QUICK if any(now - t < REAP_SOON for t in closing.values()) else REAP_EVERY


def main() -> None:
    """The template's loop (see the module docstring)."""
    _PROTOCOL[0] = os.dup(1)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    setup = json.loads(stdin.readline())
    payload = _read_exact(stdin, int(setup["payload_bytes"]))
    for entry in reversed(setup.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        import cloudpickle

        from .. import worker  # noqa: F401 - imported once, here, for every fork

        if setup.get("tls"):
            import ssl  # noqa: F401 - a plain run's workers never load it

        function = cloudpickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001 - spawned workers report it properly
        _send({"unavailable": f"{type(exc).__name__}: {exc}"})
        return
    _settle(function)
    _send({"ready": os.getpid()})
    children: Dict[int, str] = {}
    outputs: Dict[int, str] = {}  # read end of a worker's output pipe -> worker id
    ended: Dict[str, int] = {}  # worker id -> exit code, told once its output is drained
    closing: Dict[str, float] = {}  # worker id -> when its output closed, until reaped
    fd, buffered, closed = stdin.fileno(), b"", False
    while not closed or children or outputs or ended:
        watched = list(outputs) + ([] if closed else [fd])
        wait = next_look(closing, time.monotonic())
        readable = select.select(watched, [], [], wait)[0] if watched else \
            select.select([], [], [], wait)[0]
        for ready in readable:
            data = os.read(ready, 65536)
            if ready == fd:
                closed = not data
                buffered += data
            elif data:
                _send({"output": outputs[ready], "data": base64.b64encode(data).decode()})
            else:
                os.close(ready)
                closing[outputs.pop(ready)] = time.monotonic()
        *lines, buffered = buffered.split(b"\n")
        # every command parsed before the first fork: what a fork's parent side writes
        # to memory (each page it writes after a fork is copied, once per living child)
        # is as little as it can be
        commands = [json.loads(line) for line in lines]
        forked = []  # told in one write once every command read so far is served
        for command in commands:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                _child(command, lambda: function, write_end)
            os.close(write_end)
            children[pid], outputs[read_end] = command["fork"], command["fork"]
            forked.append({"forked": command["fork"], "pid": pid})
        _send(*forked)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            worker = children.pop(pid, None)
            if worker is not None:
                ended[worker] = os.waitstatus_to_exitcode(status)
                closing.pop(worker, None)
        draining = set(outputs.values())
        for worker in [w for w in ended if w not in draining]:
            _send({"exited": worker, "code": ended.pop(worker)})


if __name__ == "__main__":
    main()
