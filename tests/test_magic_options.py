"""Options of the magics that reach past the option parser: where each one lands in a
real run, and the one-line error each misuse gets.

Cells run in the real IPython shell of ``conftest`` with the local backend's worker
processes; the livy options go to the real livy backend and its HTTP client, which talk
to a stdlib HTTP server here that refuses every request (no Livy needed); ``--ui
papermill`` runs in a real kernel through ``maggy-magic run``.
"""

import base64
import http.server
import json
import os
import subprocess
import sys
import threading

import nbformat
import pytest

from maggy_magic import ConfigError, ExperimentFailed
from maggy_magic.errors import LivyAuthError
from maggy_magic.magics.options import help_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = 'from maggy_magic import Searchspace\nspace = Searchspace(x=("DOUBLE", [0, 1]))\n'
CELL = SPACE + "def train(x):\n    return x\n"


@pytest.fixture(autouse=True)
def fresh(shell, monkeypatch):
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    shell.reset(new_session=False)
    shell.magics_manager.registry["MaggyMagics"].defaults = {}  # no session defaults
    yield


def run(shell, source):
    return shell.run_cell(source, store_history=True)


def one_line_error(result, cls, capsys):
    """The cell's error: of class ``cls``, one line, shown as one line."""
    error = result.error_in_exec
    assert type(error) is cls, repr(error)
    assert "\n" not in str(error)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"{cls.__name__}: {error}" and "Traceback" \
        not in out, out
    return str(error)


# -- help of the line commands --------------------------------------------------------------
@pytest.mark.parametrize("line", ["list --help", "list -h", "show --help", "show latest -h",
                                  "tensorboard --help", "stop --help", "list --root x -h"])
def test_every_line_command_prints_the_help_for_h_and_help(shell, capsys, line):
    result = run(shell, f"%maggy {line}")
    assert result.success, result.error_in_exec
    assert result.result is None
    assert capsys.readouterr().out.strip() == help_text().strip()
    assert not os.path.exists("maggy_experiments")


# -- the livy options -----------------------------------------------------------------------
@pytest.mark.parametrize("flags", ["--url http://127.0.0.1:9", "--auth basic",
                                   "--user alice", "--session spark1"])
def test_livy_options_without_the_livy_backend_are_refused(shell, capsys, flags):
    flag = flags.split()[0]
    for backend in ("", "--backend local "):
        result = run(shell, f"%%maggy hpo {backend}{flags}\n" + CELL)
        message = one_line_error(result, ConfigError, capsys)
        assert message == (f"{flag} applies to --backend livy; add --backend livy or "
                           f"remove {flag}")
    assert not os.path.exists("maggy_experiments")
    assert "train" not in shell.user_ns                      # refused before the cell ran


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers every request 401 and keeps what it was sent."""

    seen = []

    def _refuse(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append({"method": self.command, "path": self.path,
                          "authorization": self.headers.get("Authorization"),
                          "body": json.loads(body) if body else None})
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    _Refusing.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/gateway/livy", _Refusing.seen
    server.shutdown()
    server.server_close()


def test_livy_options_reach_the_livy_backend_and_its_requests(shell, capsys, monkeypatch,
                                                             refusing_server):
    url, seen = refusing_server
    monkeypatch.setenv("MAGGY_LIVY_PASSWORD", "s3cret")
    result = run(shell, f"%%maggy hpo --backend livy --url {url} --auth basic --user alice "
                        "--backend-opt start_timeout=5\n" + CELL)
    message = one_line_error(result, LivyAuthError, capsys)
    assert message.startswith(f"Livy at {url} refused the credentials (HTTP 401)")
    # --url: where the request went; --auth basic and --user: how it was signed
    assert [(r["method"], r["path"]) for r in seen] == [("POST", "/gateway/livy/sessions")]
    scheme, token = seen[0]["authorization"].split()
    assert scheme == "Basic" and base64.b64decode(token).decode() == "alice:s3cret"
    assert seen[0]["body"]["kind"] == "pyspark"
    assert "s3cret" not in message
    assert not os.path.exists("maggy_experiments")            # nothing ran, nothing kept

    # --auth none: no credentials sent, although a user and a password are there (without
    # --auth, a user means basic auth)
    seen.clear()
    result = run(shell, f"%%maggy hpo --backend livy --url {url} --auth none --user alice\n"
                 + CELL)
    one_line_error(result, LivyAuthError, capsys)
    assert len(seen) == 1 and seen[0]["authorization"] is None


def test_livy_basic_auth_without_a_password_is_a_config_error(shell, capsys, monkeypatch,
                                                              refusing_server):
    url, seen = refusing_server
    monkeypatch.delenv("MAGGY_LIVY_PASSWORD", raising=False)
    result = run(shell, f"%%maggy hpo --backend livy --url {url} --auth basic --user alice\n"
                 + CELL)
    message = one_line_error(result, ConfigError, capsys)
    assert message.startswith("livy basic auth needs a user (--user, or username in "
                              "sparkmagic's kernel_python_credentials) and a password")
    assert seen == []                                        # asked nothing of the server


def test_a_livy_session_name_this_kernel_does_not_have_is_refused(shell, capsys):
    result = run(shell, "%%maggy hpo --backend livy --session spark1\n" + CELL)
    message = one_line_error(result, ConfigError, capsys)
    assert message.startswith("this kernel has no sparkmagic session called 'spark1'")


# -- --backend-opt in a real run ------------------------------------------------------------
def test_backend_opt_reaches_the_local_backend_in_a_real_run(shell, capsys, tmp_path,
                                                             monkeypatch):
    """Workers that cannot start: the run ends after --backend-opt max_restarts=1."""
    site = tmp_path / "broken-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nprint('no GPU', flush=True)\n"
                                           "os._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), ROOT]))
    result = run(shell, "%%maggy hpo --trials 2 --workers 1 --backend-opt max_restarts=1 "
                        "--ui text -o r\n" + CELL)
    message = one_line_error(result, ExperimentFailed, capsys)
    assert message == ("every local worker exited (last: worker 0, exit code 3) after 1 "
                       "restarts; its output ends with: no GPU")
    assert shell.user_ns["r"].state == "failed"              # the partial result is bound


@pytest.mark.parametrize("opt, message", [
    ("max_restart=1", "unknown local backend option 'max_restart'; did you mean "
                      "'max_restarts'? (valid: max_restarts, start)"),
    ("max_restarts=-1", "local backend option max_restarts must be an integer >= 0, got -1"),
    ("max_restarts=two", "local backend option max_restarts must be an integer >= 0, "
                         "got 'two'"),
])
def test_bad_backend_opt_is_a_one_line_error(shell, capsys, opt, message):
    result = run(shell, f"%%maggy hpo --backend-opt {opt}\n" + CELL)
    assert one_line_error(result, ConfigError, capsys) == message
    assert not os.path.exists("maggy_experiments")


# -- --ui papermill ---------------------------------------------------------------------------
def test_ui_papermill_without_widgets_shows_the_text_progress(shell, capsys):
    result = run(shell, "%%maggy hpo --trials 2 --workers 1 --ui papermill -o r\n" + CELL)
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    assert "[finished] 2 trials: 2 finished" in out
    assert shell.user_ns["r"].state == "finished"


def _notebook(path, line):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext maggy_magic"),
                nbformat.v4.new_code_cell(f"{line}\n" + CELL)]
    nbformat.write(nb, path)


@pytest.mark.slow
def test_ui_papermill_in_a_kernel_saves_the_dashboard_and_streams_the_text():
    """The kernel's default display is text here (MAGGY_MAGIC_UI=text): the option alone
    makes it both the dashboard (its final state saved in the notebook) and the text."""
    _notebook("ui.ipynb", "%%maggy hpo --trials 2 --workers 1 --ui papermill -o res")
    env = dict(os.environ, PYTHONPATH=ROOT, MAGGY_MAGIC_UI="text")
    env.pop("MAGGY_MAGIC_WIDGETS")                           # the kernel has widgets
    out = subprocess.run([sys.executable, "-m", "maggy_magic.cli", "run", "ui.ipynb",
                          "done.ipynb"], capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[finished] 2 trials: 2 finished" in out.stderr   # the text progress streamed
    done = nbformat.read("done.ipynb", as_version=4)
    state = done.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert "AnyModel" in {model["model_name"] for model in state.values()}


# -- dist: --model/--module, --hparams, --max-restarts ------------------------------------
DIST_CELL = '''
import os
import torch
torch.manual_seed(0)
_x = torch.randn(32, 2)
data = [torch.utils.data.TensorDataset(_x, _x.sum(1))]
net = torch.nn.Linear(2, 1)
settings = {"lr": 0.05}

def train(module, train_set, lr, reporter):
    from maggy_magic.distributed.context import current

    from maggy_magic.distributed import torch as dist_torch

    ctx = current()
    if ctx.attempt == 0:
        dist_torch.save_checkpoint({"model": module.state_dict()})   # the chief's
        ctx.rendezvous("saved")  # rank 1 dies only once the chief has a checkpoint
        if ctx.rank == 1:
            os._exit(3)  # the first attempt loses rank 1: --max-restarts 1 restarts it
    state = dist_torch.load_checkpoint()
    restored = int(state is not None)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    for step, (x, y) in enumerate(torch.utils.data.DataLoader(train_set, batch_size=4)):
        loss = torch.nn.functional.mse_loss(module(x).squeeze(-1), y)
        opt.zero_grad(); loss.backward(); opt.step()
        reporter.broadcast(-loss.item(), step)
    return {"metric": -loss.item(), "lr": lr, "attempt": ctx.attempt, "restored": restored,
            "items": len(train_set), "weights": sum(p.numel() for p in module.parameters())}
'''


@pytest.mark.slow
def test_dist_takes_the_module_dataset_hparams_and_restarts_that_the_line_names(shell):
    result = run(shell, "%%maggy dist --workers 2 --framework torch --module net "
                        "--dataset data --hparams settings --max-restarts 1 --ui text -o r\n"
                 + DIST_CELL)
    assert result.success, result.error_in_exec
    res = shell.user_ns["r"]
    assert res.state == "finished" and res.attempts == 2     # --max-restarts 1 was used
    assert res.metrics["attempt"] == 1 and res.metrics["restored"] == 1   # from the checkpoint
    assert res.metrics["lr"] == 0.05                          # --hparams settings
    assert res.metrics["items"] == 16 and res.metrics["weights"] == 3   # --dataset, --module
    with open(os.path.join(res.run_dir, "config.json")) as handle:
        assert json.load(handle)["max_restarts"] == 1


@pytest.mark.parametrize("line, message", [
    ("--model nothere", "--model 'nothere' is not defined in the notebook; define it in the "
                        "cell or pass the right name"),
    ("--module nothere", "--model 'nothere' is not defined in the notebook"),
    ("--hparams nothere", "--hparams 'nothere' is not defined in the notebook"),
    ("--max-restarts -1", "max_restarts must be an integer >= 0"),
    ("--max-restarts two", "--max-restarts takes a whole number, got 'two'"),
])
def test_bad_dist_names_and_restarts_are_one_line_errors(shell, capsys, line, message):
    result = run(shell, f"%%maggy dist --workers 2 --framework torch --module net "
                        f"--dataset data {line}\n" + DIST_CELL)
    assert message in one_line_error(result, ConfigError, capsys)
    assert not os.path.exists("maggy_experiments")


# -- --gpus-per-trial / --cpus-per-trial ------------------------------------------------------
def test_gpus_per_trial_reaches_the_run(shell, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    result = run(shell, "%%maggy hpo --trials 2 --gpus-per-trial 0.5 --cpus-per-trial 1 "
                        "--ui text -o r\n" + SPACE +
                        "def train(x):\n    import os\n"
                        "    cvd = os.environ['CUDA_VISIBLE_DEVICES']\n"
                        "    return {'metric': x, 'cvd': 'cvd=' + cvd}\n")
    assert result.success, result.error_in_exec
    res = shell.user_ns["r"]
    with open(os.path.join(res.run_dir, "config.json")) as handle:
        recorded = json.load(handle)
    assert (recorded["gpus_per_trial"], recorded["cpus_per_trial"]) == (0.5, 1)
    assert [t["metrics"]["cvd"] for t in res.trial_records] == ["cvd=3", "cvd=3"]
    assert "--gpus-per-trial" in help_text() and "--cpus-per-trial" in help_text()


@pytest.mark.parametrize("line, message", [
    ("--gpus-per-trial half", "--gpus-per-trial takes a number, got 'half'"),
    ("--gpus-per-trial 0.3", "gpus_per_trial (--gpus-per-trial) below 1 must divide one GPU "
                             "evenly (0.5, 0.25, 0.2, ... = 1/n trials per GPU), got 0.3; "
                             "use 0.333333"),
    ("--gpus-per-trial -1", "gpus_per_trial (--gpus-per-trial) must be >= 0 GPUs per trial, "
                            "got -1.0"),
    ("--cpus-per-trial 1.5", "--cpus-per-trial takes a whole number, got '1.5'"),
    ("--cpus-per-trial 0", "cpus_per_trial (--cpus-per-trial) must be a whole number of CPU "
                           "cores >= 1, got 0"),
])
def test_bad_resource_options_are_one_line_errors(shell, capsys, line, message):
    result = run(shell, f"%%maggy hpo --trials 2 {line}\n" + CELL)
    assert one_line_error(result, ConfigError, capsys) == message
    assert not os.path.exists("maggy_experiments")


def test_dist_options_on_an_hpo_line_are_refused(shell, capsys):
    for flags in ("--module net", "--hparams settings", "--max-restarts 1"):
        result = run(shell, f"%%maggy hpo {flags}\n" + CELL)
        flag = flags.split()[0].replace("--module", "--model")
        assert one_line_error(result, ConfigError, capsys) == (
            f"{flag} does not apply to %%maggy hpo; remove it (%maggy help lists the options)")



# -- the stop conditions (runs: tests/test_stop_conditions.py) ------------------------------
def test_time_budget_and_target_parse_to_their_python_api_names():
    from maggy_magic.magics.options import parse_options

    assert parse_options(["--time-budget", "1h30m", "--target", "0.9"], "%%maggy hpo") == \
        {"time_budget": "1h30m", "target": 0.9}
    assert "--time-budget" in help_text() and "--target" in help_text()


@pytest.mark.parametrize("line, message", [
    ("hpo --time-budget ten", "time_budget (--time-budget) takes a time above zero: seconds "
                              "(90) or a duration such as '90s', '30m', '2h' or '1h30m', "
                              "got 'ten'"),
    ("hpo --time-budget=-5s", "time_budget (--time-budget) takes a time above zero: seconds "
                              "(90) or a duration such as '90s', '30m', '2h' or '1h30m', "
                              "got '-5s'"),
    ("hpo --target high", "--target takes a number, got 'high'"),
    ("ablation --time-budget 0", "time_budget (--time-budget) takes a time above zero: "
                                 "seconds (90) or a duration such as '90s', '30m', '2h' or "
                                 "'1h30m', got '0'"),
    ("dist --workers 2 --framework torch --time-budget 2s",
     "--time-budget does not apply to %%maggy dist; remove it (%maggy help lists the options)"),
    ("dist --workers 2 --framework torch --target 1",
     "--target does not apply to %%maggy dist; remove it (%maggy help lists the options)"),
    ("ablation --target 1",
     "--target does not apply to %%maggy ablation; remove it (%maggy help lists the options)"),
])
def test_bad_or_misplaced_stop_conditions_are_one_line_errors(shell, capsys, line, message):
    result = run(shell, f"%%maggy {line}\n" + CELL)
    assert one_line_error(result, ConfigError, capsys) == message
    assert not os.path.exists("maggy_experiments")
    assert "train" not in shell.user_ns                      # refused before the cell ran
