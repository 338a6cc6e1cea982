"""The magics through IPython's InteractiveShell: parsing, variables, capture, bad input.

Cells run with ``shell.run_cell`` exactly as a notebook runs them (IPython expands
``$name`` / ``{expression}`` on the magic line, then calls the magic). Runs use the local
backend with real worker processes, so a function that reaches the workers really was
pickled and shipped.
"""

import os
import re
import threading

import pytest
from conftest import journal

from maggy_magic import (
    AblationError,
    ConfigError,
    ExperimentResult,
    SearchspaceError,
    TrainFunctionError,
)
from maggy_magic.magics import MaggyMagics
from maggy_magic.magics.options import parse_options


@pytest.fixture(autouse=True)
def fresh(shell, monkeypatch):
    """Each test starts with an empty notebook namespace and no session defaults, and
    never uses widgets (a terminal shell has none)."""
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    shell.reset(new_session=False)
    magics(shell).defaults = {}
    yield


def magics(shell) -> MaggyMagics:
    return shell.magics_manager.registry["MaggyMagics"]


def run(shell, source):
    """Run a notebook cell; return IPython's ExecutionResult."""
    return shell.run_cell(source, store_history=True)


SPACE = 'from maggy_magic import Searchspace\nspace = Searchspace(x=("DOUBLE", [0, 1]))\n'


# -- loading ----------------------------------------------------------------------------
def test_extension_registers_the_cell_and_line_magic_and_unloads(shell):
    assert "maggy" in shell.magics_manager.magics["cell"]
    assert "maggy" in shell.magics_manager.magics["line"]
    shell.run_line_magic("unload_ext", "maggy_magic")
    try:
        assert "maggy" not in shell.magics_manager.magics["cell"]
        assert "maggy" not in shell.magics_manager.magics["line"]
    finally:
        shell.run_line_magic("load_ext", "maggy_magic")
    assert "maggy" in shell.magics_manager.magics["cell"]


# -- parsing ----------------------------------------------------------------------------
def test_every_option_maps_to_the_python_api_name():
    line = ("--trials 12 --optimizer ASHA --metric acc --direction min --es-policy none "
            "--es-interval 0.5 --es-min 3 --workers 2 --backend local --name exp "
            "--description 'two words' --resume latest --seed 7 --max-failures 1 "
            "--max-retries 0 --hb-interval 0.5 --hb-timeout 9 --root runs "
            "--opt reduction_factor=3 --opt resource_max=8 --backend-opt max_restarts=1 "
            "--fn train --space sp -o res --ui text")
    import shlex

    options = parse_options(shlex.split(line), "%%maggy hpo")
    assert options == {
        "num_trials": 12, "optimizer": "asha", "optimization_key": "acc",
        "direction": "min", "es_policy": "none", "es_interval": 0.5, "es_min": 3,
        "workers": 2, "backend": "local", "name": "exp", "description": "two words",
        "resume": "latest", "seed": 7, "max_failures": 1, "max_retries": 0,
        "hb_interval": 0.5, "hb_timeout": 9.0, "root": "runs",
        "optimizer_options": {"reduction_factor": 3, "resource_max": 8},
        "backend_options": {"max_restarts": 1}, "fn": "train", "space": "sp",
        "output": "res", "ui": "text"}


def test_notebook_variables_expand_in_every_kind_of_option(shell, capsys):
    shell.user_ns.update(n=6, rf=3, exp="sweep", key="acc")
    result = run(shell, "%maggy config --trials $n --name {exp + '-1'} --metric $key "
                        "--opt reduction_factor={rf} --workers {n // 2}")
    assert result.success, result.error_in_exec
    assert magics(shell).defaults == {
        "num_trials": 6, "name": "sweep-1", "optimization_key": "acc",
        "optimizer_options": {"reduction_factor": 3}, "workers": 3}
    assert "--trials 6" in capsys.readouterr().out
    run(shell, "%maggy config --reset")
    assert magics(shell).defaults == {}


# -- a real run -------------------------------------------------------------------------
def test_cell_runs_on_workers_with_helpers_and_constants_from_earlier_cells(shell, capsys):
    run(shell, "import os\nSCALE = 3\ndef helper(x):\n    return x * SCALE\n"
               "class Offset:\n    def __init__(self, value):\n        self.value = value\n"
               "offset = Offset(1)\nn_trials = 3\nexp = 'capture'")
    result = run(shell, "%%maggy hpo --trials $n_trials --name {exp} --workers 2 "
                        "--es-policy none --seed 1 --metric score -o res\n" + SPACE +
                 "def train(x, reporter):\n"
                 "    reporter.broadcast(helper(x), 0)\n"
                 "    return {'score': helper(x) + offset.value, 'pid': os.getpid()}\n")
    assert result.success, result.error_in_exec
    res = shell.user_ns["res"]
    assert isinstance(res, ExperimentResult) and result.result is res   # returned + bound
    assert res.state == "finished" and len(res.trial_records) == 3
    assert os.path.basename(os.path.dirname(res.run_dir)) == "capture"
    for trial in res.trial_records:
        # the helper, the constant and the object of the earlier cell travelled
        assert trial["value"] == pytest.approx(trial["params"]["x"] * 3 + 1)
        assert trial["metrics"]["pid"] != os.getpid()                     # on a worker
    # what the cell defined is bound in the notebook: train can be called directly
    called = run(shell, "class R:\n    def broadcast(self, *a): pass\n"
                        "direct = train(0.5, R())['score']")
    assert called.success and shell.user_ns["direct"] == 2.5
    assert shell.user_ns["space"].keys() == {"x"}
    out = capsys.readouterr().out
    assert "3/3 trials" in out or "[finished] 3 trials" in out       # text progress
    assert f"(trial {res.best_id})" in out                           # final line and table
    html = res._repr_html_()
    assert "maggy-summary" in html and "<svg" in html and res.best_id in html


def test_list_and_show_find_a_finished_run(shell, capsys):
    result = run(shell, "%%maggy hpo --trials 2 --workers 1 --name listed --seed 2 -o r\n"
                 + SPACE + "def train(x):\n    return x\n")
    assert result.success, result.error_in_exec
    res = shell.user_ns["r"]
    table = shell.run_line_magic("maggy", "list")
    assert list(table["run"]) == [res.run_id]
    assert table["best"][0] == pytest.approx(res.best_metric)
    assert table["state"][0] == "finished"
    for ref in (res.run_id, "latest", f"listed/{res.run_id}", res.run_dir):
        shown = shell.run_line_magic("maggy", f"show {ref}")
        assert shown.run_id == res.run_id and shown.best_id == res.best_id
        assert res.best_id in shown._repr_html_()
    with pytest.raises(ConfigError, match="did you mean"):
        shell.run_line_magic("maggy", f"show {res.run_id[:-1]}x")


def test_attach_refuses_a_run_that_did_not_run_on_livy(shell, capsys):
    result = run(shell, "%%maggy hpo --trials 1 --workers 1 --name here -o r\n" + SPACE +
                 "def train(x):\n    return x\n")
    assert result.success, result.error_in_exec
    run_id = shell.user_ns["r"].run_id
    with pytest.raises(ConfigError, match=f"run {run_id} did not run on a Livy session"):
        shell.run_line_magic("maggy", f"attach {run_id}")


def test_resume_continues_a_run_in_its_directory(shell):
    cell = SPACE + "def train(x):\n    return x\n"
    assert run(shell, "%%maggy hpo --trials 2 --name again --seed 4 -o first\n" + cell).success
    first = shell.user_ns["first"]
    shell.user_ns["run_id"] = first.run_id
    result = run(shell, "%%maggy hpo --trials 4 --name again --seed 4 --resume $run_id "
                        "-o second\n" + cell)
    assert result.success, result.error_in_exec
    second = shell.user_ns["second"]
    assert second.run_dir == first.run_dir
    assert [t["trial"] for t in second.trial_records] == ["0000", "0001", "0002", "0003"]
    def outcome(records):
        return [(t["trial"], t["params"], t["state"], t["value"], t["start"], t["end"])
                for t in records]

    # the finished trials were not run again: same outcome, same start and end times
    assert outcome(second.trial_records[:2]) == outcome(first.trial_records)
    # ... and the journal says so: after the second run_started only 0002 and 0003 began
    events = journal(first.run_dir)
    runs = [i for i, e in enumerate(events) if e["type"] == "run_started"]
    assert len(runs) == 2 and events[runs[1]]["resumed"] is True
    def started(part):
        return sorted(e["trial"] for e in part if e["type"] == "trial_started")

    assert started(events[:runs[1]]) == ["0000", "0001"]
    assert started(events[runs[1]:]) == ["0002", "0003"]
    seqs = [e["seq"] for e in events]          # the resumed run continues the numbering
    assert seqs == sorted(set(seqs))


def test_stop_ends_the_run_in_progress_gracefully(shell, capsys):
    """``%maggy stop`` stops what runs; here it comes from another thread, as the
    dashboard's Stop button does while the cell blocks."""
    registered = threading.Event()

    class Running(dict):
        def __setitem__(self, key, value):
            super().__setitem__(key, value)
            registered.set()

    magics(shell).running = Running()
    stopper = threading.Thread(
        target=lambda: registered.wait(30) and shell.run_line_magic("maggy", "stop"))
    stopper.start()
    result = run(shell, "%%maggy hpo --trials 40 --workers 2 --es-policy none -o r\n"
                 "import time\n" + SPACE +
                 "def train(x, reporter):\n"
                 "    for step in range(20):\n"
                 "        reporter.broadcast(x, step)\n"
                 "        time.sleep(0.05)\n"
                 "    return x\n")
    stopper.join()
    assert result.success, result.error_in_exec
    res = shell.user_ns["r"]
    assert res.state == "stopped" and len(res.trial_records) < 40
    assert "stopping run" in capsys.readouterr().out
    assert not magics(shell).running
    shell.run_line_magic("maggy", "stop")
    assert "no experiment is running" in capsys.readouterr().out


# -- bad input --------------------------------------------------------------------------
TRAIN = "def train(x):\n    return x\n"

BAD = {
    "unknown option": ("%%maggy hpo --trails 3\n" + SPACE + TRAIN, ConfigError,
                       "unknown option '--trails' for %%maggy hpo; did you mean '--trials'?"),
    "bad number": ("%%maggy hpo --trials three\n" + SPACE + TRAIN, ConfigError,
                   "--trials takes a whole number, got 'three'"),
    "bad choice": ("%%maggy hpo --optimizer ashaa\n" + SPACE + TRAIN, ConfigError,
                   "did you mean 'asha'?"),
    "bad direction": ("%%maggy hpo --direction maximum\n" + SPACE + TRAIN, ConfigError,
                      "did you mean 'max'?"),
    "bad config value": ("%%maggy hpo --trials 0\n" + SPACE + TRAIN, ConfigError,
                         "num_trials must be a positive integer"),
    "undefined variable": ("%%maggy hpo --trials $undefined_n\n" + SPACE + TRAIN,
                           ConfigError, "--trials $undefined_n: the notebook has no value"),
    "bad -o": ("%%maggy hpo -o 1x\n" + SPACE + TRAIN, ConfigError, "-o takes a Python name"),
    "bad --opt": ("%%maggy hpo --opt factor\n" + SPACE + TRAIN, ConfigError,
                  "--opt takes key=value"),
    "unknown experiment": ("%%maggy hpx\n" + SPACE + TRAIN, ConfigError,
                           "did you mean 'hpo'?"),
    "ablation without a study": ("%%maggy ablation\n" + TRAIN, AblationError,
                                 "no ablation study: define one in the cell"),
    "dist without a model": ("%%maggy dist --workers 2\n" + TRAIN, ConfigError,
                             "%%maggy dist needs a variable model or module"),
    "no training function": ("%%maggy hpo\n" + SPACE, TrainFunctionError,
                             "the cell defines no function"),
    "two candidates": ("%%maggy hpo\n" + SPACE + TRAIN + "def train2(x, reporter):\n"
                       "    return x\n", TrainFunctionError,
                       "the cell defines 2 functions the experiment could call "
                       "(train, train2); say which one trains with --fn NAME"),
    "no callable candidate": ("%%maggy hpo\n" + SPACE + "def a(y):\n    return y\n"
                              "def b(z):\n    return z\n", TrainFunctionError,
                              "none of the cell's functions (a, b)"),
    "misspelt --fn": ("%%maggy hpo --fn trian\n" + SPACE + TRAIN, ConfigError,
                      "--fn 'trian' is not defined in the notebook; did you mean 'train'?"),
    "missing search space": ("%%maggy hpo\n" + TRAIN, SearchspaceError, "no search space"),
    "two search spaces": ("%%maggy hpo\n" + SPACE + "other = Searchspace(y=('DOUBLE', "
                          "[0, 1]))\n" + TRAIN, SearchspaceError,
                          "the cell defines 2 search spaces (space, other)"),
    "misspelt --space": ("%%maggy hpo --space spac\n" + SPACE + TRAIN, ConfigError,
                         "--space 'spac' is not defined; did you mean 'space'?"),
    "signature": ("%%maggy hpo\n" + SPACE + "def train(y):\n    return y\n",
                  TrainFunctionError, "train() needs argument 'y'"),
    "missing global": ("%%maggy hpo\n" + SPACE + "def train(x):\n"
                       "    return x * undefined_factor\n", TrainFunctionError,
                       "train() uses 'undefined_factor', which is not defined in the "
                       "notebook"),
    "unpicklable global": ("import threading\nlock = threading.Lock()\n"
                           "%%maggy hpo\n" + SPACE + "def train(x):\n    with lock:\n"
                           "        return x\n", TrainFunctionError,
                           "train() uses 'lock' (a lock), which cannot be sent to the "
                           "workers"),
    "helper's missing global": ("def helper(x):\n    return x + missing_offset\n"
                                "%%maggy hpo\n" + SPACE + "def train(x):\n"
                                "    return helper(x)\n", TrainFunctionError,
                                "train() uses helper() → 'missing_offset'"),
    "widget ui without widgets": ("%%maggy hpo --ui widget\n" + SPACE + TRAIN, ConfigError,
                                  "--ui widget needs the live dashboard"),
    "line command as cell": ("%%maggy list\n" + TRAIN, ConfigError,
                             "list is a line magic: use %maggy list"),
    "unknown line command": ("%maggy lst", ConfigError, "did you mean 'list'?"),
    "cell command as line": ("%maggy hpo --trials 3", ConfigError,
                             "hpo is a cell magic"),
    "per-cell option in config": ("%maggy config --fn train", ConfigError,
                                  "--fn applies to one cell"),
    "attach without a run": ("%maggy attach", ConfigError, "%maggy attach needs a run"),
    "attach with a run's option": ("%maggy attach 20261201-000000-0000 --trials 3",
                                   ConfigError, "%maggy attach takes only --root, --name, "
                                                "-o and --ui, got --trials"),
    "misspelt attach": ("%maggy atach x", ConfigError, "did you mean 'attach'?"),
    "remote cell off livy": ("%%maggy hpo --cell remote --backend local\n" + SPACE + TRAIN,
                             ConfigError, "--cell remote runs the cell in a Livy session, "
                                          "not with --backend local"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_one_line_error_before_anything_runs(shell, capsys, case):
    source, cls, fragment = BAD[case]
    setup, _, cell = source.rpartition("%%maggy") if "%%maggy" in source else ("", "", "")
    if setup:
        assert run(shell, setup).success
        source = "%%maggy" + cell
    result = run(shell, source)
    error = result.error_in_exec
    assert type(error) is cls, (case, error)
    message = str(error)
    assert fragment in message, message
    assert "\n" not in message
    out = capsys.readouterr().out
    shown = [line for line in out.splitlines() if line.strip()]
    assert shown[-1] == f"{cls.__name__}: {message}" and "Traceback" not in out, out
    assert not os.path.exists("maggy_experiments")     # no run started


def test_cell_names_stay_bound_when_the_magic_rejects_the_cell(shell):
    result = run(shell, "%%maggy hpo\n" + SPACE + TRAIN + "def train2(x, reporter):\n"
                 "    return x\n")
    assert isinstance(result.error_in_exec, TrainFunctionError)
    assert shell.user_ns["train"](0.25) == 0.25 and "train2" in shell.user_ns


def test_help_lists_every_option(shell, capsys):
    from maggy_magic.magics.options import OPTIONS

    shell.run_line_magic("maggy", "help")
    out = capsys.readouterr().out
    assert all(option.name in out for option in OPTIONS)
    assert "%maggy stop" in out and "%maggy show RUN" in out


def test_failed_run_binds_and_shows_partial_result_with_one_line_error(shell, capsys):
    from maggy_magic import ExperimentFailed

    result = run(shell, "%%maggy hpo --trials 4 --workers 1 --name failing -o r\n" + SPACE +
                 "def train(x):\n    raise ValueError('bad data')\n")
    error = result.error_in_exec
    assert type(error) is ExperimentFailed and "\n" not in str(error)
    assert "bad data" in str(error)
    res = shell.user_ns["r"]
    assert res.state == "failed" and res.num_failed >= 1
    out = capsys.readouterr().out
    assert repr(res) in out                          # the partial summary was displayed
    assert out.strip().splitlines()[-1] == f"ExperimentFailed: {error}"


# -- the displays -----------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now

    def monotonic(self):
        return self.now


def test_text_progress_prints_changes_at_a_bounded_rate(monkeypatch):
    import io

    from maggy_magic.ui import text

    clock = FakeClock()
    monkeypatch.setattr(text, "time", clock)
    out = io.StringIO()                       # not a terminal: one line per change
    progress = text.TextProgress("exp", stream=out)
    progress({"type": "run_started", "t": clock.now, "run": "r", "run_dir": "/runs/r",
              "config": {"num_trials": 4, "optimization_key": "acc", "direction": "min",
                         "workers": 2, "backend": "local"}})
    progress.show()
    progress({"type": "trial_started", "trial": "0"})
    progress.render()
    progress.render()                         # nothing changed: nothing printed
    clock.now += 0.1
    progress({"type": "trial_finished", "trial": "0", "value": 0.3,
              "state": "FINISHED"})
    progress.render()                         # changed, but too soon after the last line
    clock.now += 0.5
    progress({"type": "trial_finished", "trial": "1", "value": 0.1,
              "state": "EARLY_STOPPED"})
    progress({"type": "trial_failed", "trial": "2"})
    progress.render()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("maggy-magic exp: run r on 2 local worker(s), 4 trials")
    assert lines[1].startswith("exp [running] 0/4 trials, 0.0s | best: none yet | "
                               "0 finished, 1 running")
    assert lines[2] == ("exp [running] 3/4 trials, 0.6s | best acc=0.1 (trial 1) | "
                        "1 finished, 0 running, 1 early-stopped, 1 failed")


def _records(n, steps=3):
    return [{"trial": f"{i:04d}", "params": {"x": i / n, "kind": "<b>&"},
             "state": "FINISHED" if i % 3 else "EARLY_STOPPED", "value": i / n,
             "steps": list(range(steps)), "history": [i / n * (s + 1) for s in range(steps)],
             "duration": 0.5, "worker": "0"} for i in range(n)]


def test_static_summary_is_escaped_bounded_and_needs_no_javascript():
    from maggy_magic.ui.search_svg import MAX_LINES
    from maggy_magic.ui.summary import MAX_CURVES, summary_html

    res = ExperimentResult(name="<exp>", run_id="r1", run_dir="/runs/r1", state="finished",
                           direction="max", optimization_key="acc",
                           trials=_records(300, steps=500))
    html = summary_html(res, max_rows=20)
    assert "<script" not in html and "<exp>" not in html and "&lt;exp&gt;" in html
    assert "<b>&" not in html and "&lt;b&gt;&amp;" in html
    assert html.count("<tr>") == 1 + 20 and "showing the best 20 of 300 trials" in html
    assert 'class="maggy-best">best acc = <b>0.9967</b> (trial 0299, max)' in html
    curves = re.search(r'<svg class="maggy-curves".*?</svg>', html).group()
    assert curves.count("<polyline") == MAX_CURVES
    assert len(html) < 400_000
    # the best curve is drawn last (on top) and highlighted
    assert curves.rindex("trial 0299 (FINISHED)") > curves.rindex("<polyline")
    # the parallel coordinates are bounded too: one line per trial up to their cap
    assert html.count('<polyline class="maggy-summary-line"') == min(300, MAX_LINES)


def test_static_summary_plots_final_values_when_no_steps_were_reported():
    from maggy_magic.ui.summary import summary_html

    records = _records(5, steps=0)
    res = ExperimentResult(name="e", run_id="r", run_dir="/r", state="finished",
                           direction="min", optimization_key="loss", trials=records)
    html = summary_html(res)
    assert html.count("<circle") == 5 and "loss per trial" in html
    assert "best loss = <b>0</b> (trial 0000, min)" in html
