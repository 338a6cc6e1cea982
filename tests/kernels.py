"""A real Jupyter kernel for tests: ipykernel in a subprocess, driven by jupyter_client.

The kernel starts from a kernel spec written into a temporary directory (this Python,
``ipykernel_launcher``, the given environment), so no machine-wide kernel or profile is
involved.
"""

import ast
import contextlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Kernel:
    """A started kernel: run cells, read values. ``outputs`` collects the content of every
    iopub message of every cell run with ``record=True`` (the default)."""

    def __init__(self, manager, client, cwd, timeout):
        self.manager, self.client, self.cwd, self.timeout = manager, client, cwd, timeout
        self.outputs = []

    def execute(self, code, on_message=None, record=True, **kwargs):
        """Run ``code``; return (execute_reply, iopub messages of this cell in order)."""
        msg_id = self.client.execute(code, **kwargs)
        messages = []
        while True:
            msg = self.client.get_iopub_msg(timeout=self.timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if on_message is not None:
                on_message(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        if record:
            self.outputs += [json.dumps(m["content"]) for m in messages]
        while True:
            reply = self.client.get_shell_msg(timeout=self.timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply, messages

    def value(self, expression):
        """The value of ``expression`` (JSON-serialisable) evaluated in the kernel."""
        reply, _ = self.execute("", user_expressions={
            "v": f"__import__('json').dumps({expression})"})
        data = reply["content"]["user_expressions"]["v"]
        assert data["status"] == "ok", data
        return json.loads(ast.literal_eval(data["data"]["text/plain"]))


@contextlib.contextmanager
def running_kernel(base, env, timeout, python=None, module="ipykernel_launcher",
                   name="maggy-test"):
    """A :class:`Kernel` started under ``base`` (a pathlib folder) with ``env`` added to
    its environment, working in ``base/work``; shut down on exit. ``python``: the
    interpreter of another environment, which then imports what it has installed (the
    checkout is not put on its path); default this Python, with the checkout. ``module``
    is what ``python -m`` runs (e.g. sparkmagic's PySpark kernel), ``name`` the spec's."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = base / "kernels" / name
    spec_dir.mkdir(parents=True)
    inherited = None
    if python is None:
        env = dict({"PYTHONPATH": ROOT, "IPYTHONDIR": str(base / "ipython")}, **env)
    else:
        env = dict({"IPYTHONDIR": str(base / "ipython")}, **env)
        inherited = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [python or sys.executable, "-m", module, "-f", "{connection_file}"],
        "display_name": "maggy-magic test", "language": "python", "env": env}))
    specs = KernelSpecManager(kernel_dirs=[str(base / "kernels")], ensure_native_kernel=False)
    work = base / "work"
    work.mkdir()
    manager = KernelManager(kernel_name=name, kernel_spec_manager=specs,
                            connection_file=str(base / "connection.json"), transport="ipc",
                            ip=str(base / "ipc"))
    manager.start_kernel(cwd=str(work), **({} if inherited is None else {"env": inherited}))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        yield Kernel(manager, client, str(work), timeout)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
