"""sparkmagic's own PySpark kernel (``sparkmagic.kernels.pysparkkernel``) with maggy_magic,
through jupyter_client, against the Livy test server (basic auth, CSRF).

In that kernel ordinary cells run in the Livy session: data loaded and helpers defined by
earlier cells live on the cluster. ``%load_ext maggy_magic`` and ``%%maggy`` cells run in
the kernel's own IPython, and a ``%%maggy`` cell's body runs in the session's namespace
(``--cell remote`` is that kernel's default), where the training function finds those
names. The dashboard's comm messages come to the notebook while the cell runs; the result
is bound in the kernel (``%%local`` reads it). The same notebook runs unattended with
``maggy-magic run --kernel pysparkkernel``.
"""

import json
import os
import subprocess
import sys

import nbformat
import pytest
from kernels import ROOT, running_kernel
from livy_server import LivyServer

USER, PASSWORD = "bob", "pw-Kx42-kernel"
TIMEOUT = 900
KERNEL_MODULE = "sparkmagic.kernels.pysparkkernel.pysparkkernel"

pytestmark = pytest.mark.slow

#: An ordinary cell: it runs in the Livy session (the kernel adds %%spark).
LOAD = """\
rows = spark.range(0, {rows}).selectExpr("id % 4 AS bucket").groupBy("bucket").count()
bucket_sizes = {{r["bucket"]: r["count"] for r in rows.collect()}}

def scale(x):
    return 10 * x
print("loaded", sum(bucket_sizes.values()), "rows on the cluster")
"""

HPO = """\
%%maggy hpo --trials 4 --workers 2 --es-policy none --seed 3 --metric score --name {name} \
-o res {extra}
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    import time
    for step in range(6):
        reporter.broadcast(scale(x) + step, step)
        time.sleep(0.2)
    return {{"score": scale(x) + len(bucket_sizes), "rows": sum(bucket_sizes.values())}}
"""

ABLATION = """\
%%maggy ablation --workers 2 --name kablation -o abl --ui text
from maggy_magic import AblationStudy

def kept(ablated_features):
    return sum(w for f, w in weights.items() if f not in ablated_features)

study = AblationStudy("weights", 1, "y", dataset_generator=kept)
study.features.include("alpha", "beta")

def train(dataset_function, reporter):
    value = dataset_function()
    reporter.broadcast(value, 0)
    return {"metric": value}
"""

DIST = """\
%%maggy dist --framework torch --workers 2 --name kdist -o dist --ui text
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def forward(self, x):
        return self.w(x)

model = Net
dataset = [torch.utils.data.TensorDataset(torch.arange(16, dtype=torch.float32).reshape(-1, 1))]
hparams = {"lr": 0.01}

def train(module, train_set, reporter, lr):
    import torch.distributed as dist
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    x = torch.stack([train_set[i][0] for i in range(len(train_set))])
    loss = module(x).pow(2).mean()
    loss.backward()
    opt.step()
    reporter.broadcast(float(loss), 0)
    return {"metric": -float(loss), "world": dist.get_world_size(), "base": offset}
"""


def sparkmagic_config(folder, url):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "kernel_python_credentials": {"username": USER, "password": PASSWORD, "url": url,
                                      "auth": "Basic_Access"},
        "livy_session_startup_timeout_seconds": TIMEOUT,
        "wait_for_idle_timeout_seconds": TIMEOUT,
        # Livy's CSRF protection wants it; sparkmagic sends only configured headers
        "custom_headers": {"X-Requested-By": "sparkmagic"}}))
    return str(folder)


@pytest.fixture(scope="module")
def server():
    with LivyServer(auth=(USER, PASSWORD), spark_master="local[2]") as livy:
        yield livy


@pytest.fixture(scope="module")
def kernel(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("pyspark-kernel")
    env = {"SPARKMAGIC_CONF_DIR": sparkmagic_config(base / "sparkmagic", server.url),
           "SPARK_LOCAL_IP": "127.0.0.1"}
    with running_kernel(base, env, TIMEOUT, module=KERNEL_MODULE,
                        name="pysparkkernel") as k:
        reply, messages = k.execute(LOAD.format(rows=1000))
        assert reply["content"]["status"] == "ok", texts(messages)
        assert "loaded 1000 rows on the cluster" in texts(messages)
        reply, messages = k.execute("%load_ext maggy_magic")
        assert reply["content"]["status"] == "ok", texts(messages)
        yield k


def texts(messages):
    return " ".join(json.dumps(m["content"]) for m in messages
                    if m["msg_type"] in ("stream", "error", "execute_result", "display_data"))


def local_value(kernel, expression):
    """``expression`` evaluated in the kernel's own IPython (a ``%%local`` cell)."""
    marker = "<<value>>"
    reply, messages = kernel.execute(
        f"%%local\nimport json\nprint({marker!r} + json.dumps({expression}))")
    assert reply["content"]["status"] == "ok", texts(messages)
    for m in messages:
        if m["msg_type"] == "stream" and marker in m["content"]["text"]:
            return json.loads(m["content"]["text"].split(marker, 1)[1])
    raise AssertionError(texts(messages))


def live_update(msg):
    """A dashboard comm update of a run still going, with finished trials."""
    if msg["msg_type"] != "comm_msg":
        return False
    status = ((msg["content"].get("data") or {}).get("state") or {}).get("status") or {}
    return status.get("state") == "running" and bool((status.get("counts") or {}).get(
        "finished"))


def test_a_maggy_cell_runs_in_the_session_namespace_with_a_live_dashboard(kernel, server):
    reply, messages = kernel.execute(HPO.format(name="inkernel", extra=""))
    assert reply["content"]["status"] == "ok", texts(messages)
    state, rows, scores = local_value(
        kernel, "[res.state, [t['metrics']['rows'] for t in res.trial_records], "
                "sorted(t['value'] for t in res.trial_records)]")
    # the training function used names an earlier cell defined on the cluster
    assert state == "finished" and rows == [1000] * 4
    assert all(s >= len({0, 1, 2, 3}) for s in scores) and len(set(scores)) == 4
    # those names are not in the kernel: the body ran in the session's namespace
    assert local_value(kernel, "[n in globals() for n in ('bucket_sizes', 'scale', "
                               "'train')]") == [False, False, False]
    # the dashboard opened and showed finished trials before the run ended
    kinds = [m["msg_type"] for m in messages]
    assert "comm_open" in kinds, kinds
    live = [i for i, m in enumerate(messages) if live_update(m)]
    finished = [i for i, m in enumerate(messages) if m["msg_type"] == "comm_msg" and
                '"finished"' in json.dumps(((m["content"].get("data") or {}).get("state")
                                            or {}).get("status") or {})]
    assert live and finished and live[0] < finished[-1], kinds
    # the local record holds the cell and every event
    run_dir = local_value(kernel, "res.run_dir")
    assert open(os.path.join(run_dir, "cell.py")).read().startswith("from maggy_magic")
    with open(os.path.join(run_dir, "journal.jsonl")) as handle:
        types = [json.loads(line)["type"] for line in handle]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    # %maggy line commands run in the kernel as anywhere
    reply, messages = kernel.execute("%maggy list")
    assert reply["content"]["status"] == "ok" and "inkernel" in texts(messages)
    # and the credentials reached no output
    assert PASSWORD not in " ".join(kernel.outputs)


def test_ablation_and_dist_cells_find_their_objects_in_the_session(kernel):
    reply, messages = kernel.execute('weights = {"alpha": 1.0, "beta": 10.0}\noffset = 7')
    assert reply["content"]["status"] == "ok", texts(messages)
    reply, messages = kernel.execute(ABLATION)
    assert reply["content"]["status"] == "ok", texts(messages)
    assert local_value(kernel, "[list(abl.ablation.component), list(abl.ablation.metric)]") \
        == [["base", "alpha", "beta"], [11.0, 10.0, 1.0]]
    reply, messages = kernel.execute(DIST)
    assert reply["content"]["status"] == "ok", texts(messages)
    assert local_value(kernel, "[type(dist).__name__, dist.state, dist.metrics['world'], "
                               "dist.metrics['base']]") == ["DistResult", "finished", 2, 7]


@pytest.mark.parametrize("cell, fragment", [
    # the cell's own error on the cluster: its type and message, one line
    ("%%maggy hpo --trials 2\nundefined_name + 1", "NameError: name 'undefined_name' is not "
                                                    "defined"),
    ("%%maggy hpo --trials 2 --fn nope\nfrom maggy_magic import Searchspace\n"
     "space = Searchspace(x=('DOUBLE', [0, 1]))\ndef train(x):\n    return x",
     "--fn 'nope' is not defined in the notebook"),
    ("%%maggy hpo --trials 2 --cell remote --backend local\npass",
     "--cell remote runs the cell in a Livy session, not with --backend local"),
    ("%%maggy hpo --trials 0\npass", "num_trials"),
])
def test_bad_remote_cells_are_one_line(kernel, cell, fragment):
    reply, messages = kernel.execute(cell)
    assert reply["content"]["status"] == "error"
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert errors, texts(messages)
    shown = "\n".join(errors[-1]["traceback"])
    assert fragment in shown and len(shown.strip().splitlines()) == 1, shown


def test_the_notebook_runs_unattended_in_the_pyspark_kernel(server, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("rows = 600", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(LOAD.format(rows="rows")),
                nbformat.v4.new_code_cell("%load_ext maggy_magic"),
                nbformat.v4.new_code_cell(HPO.format(name="unattended", extra="--ui text"))]
    path = tmp_path / "remote.ipynb"
    nbformat.write(nb, str(path))
    kernels = tmp_path / "jupyter" / "kernels" / "pysparkkernel"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", KERNEL_MODULE, "-f", "{connection_file}"],
        "display_name": "PySpark", "language": "python"}))
    env = dict(os.environ, JUPYTER_PATH=str(tmp_path / "jupyter"), PYTHONPATH=ROOT,
               SPARKMAGIC_CONF_DIR=sparkmagic_config(tmp_path / "sparkmagic", server.url),
               SPARK_LOCAL_IP="127.0.0.1")
    out = tmp_path / "remote.output.ipynb"
    done = subprocess.run([sys.executable, "-m", "maggy_magic.cli", "run", str(path), str(out),
                           "--kernel", "pysparkkernel", "-p", "rows", "800"], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = nbformat.read(str(out), as_version=4)
    printed = " ".join(o.get("text", "") for c in saved.cells for o in c.get("outputs", []))
    # the injected parameter reached the cluster-side cell; the search ran on its data
    assert "loaded 800 rows on the cluster" in printed, printed[-2000:]
    assert "4 finished" in done.stdout + printed, done.stdout[-2000:]
    assert PASSWORD not in out.read_text()
