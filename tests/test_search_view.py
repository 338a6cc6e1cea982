"""Seeing the search: parameter importances (Optuna's fANOVA) from real finished trials, the
parallel coordinates and importances of the static summary, and the dashboard's ``search``
part: bounded whatever the number of trials, with importances computed off the thread
that delivers events."""

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from maggy_magic import (
    AblationConfig,
    AblationStudy,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
)
from maggy_magic.ui import parcoords
from maggy_magic.ui.dashboard import Dashboard
from maggy_magic.ui.importance import MIN_TRIALS, param_importances
from maggy_magic.ui.state import DashboardState
from maggy_magic.ui.summary import summary_html

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = Searchspace(x=("DOUBLE", [0.0, 1.0]), noise=("DOUBLE", [1e-4, 1.0], "log"),
                    act=("CATEGORICAL", ["relu", "tanh", "gelu"]))


def driven_by_x(x, noise, act, reporter):
    """The metric is x's alone; ``noise`` and ``act`` change nothing."""
    reporter.broadcast(x, 0)
    return {"score": 10 * x}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A real random search of 40 trials on two local workers."""
    os.chdir(tmp_path_factory.mktemp("search"))
    config = HyperparameterOptConfig(num_trials=40, optimizer="randomsearch", searchspace=SPACE,
                                     optimization_key="score", es_policy="none", workers=2,
                                     seed=11, name="driven")
    return experiment.lagom(driven_by_x, config)


def test_the_parameter_that_drives_the_metric_ranks_first(search):
    assert search.num_finished == 40
    answer = param_importances(search.searchspace, search.trial_records)
    assert answer["note"] is None, answer
    names = [name for name, _ in answer["importances"]]
    assert sorted(names) == ["act", "noise", "x"]
    assert names[0] == "x" and answer["importances"][0][1] > 0.9, answer
    assert sum(share for _, share in answer["importances"]) == pytest.approx(1, abs=1e-3)
    assert answer["trials"] == answer["of"] == 40 and answer["method"] == "fANOVA"
    # the same from the values alone (a run whose search space is unknown)
    inferred = param_importances(None, search.trial_records)
    assert inferred["importances"][0][0] == "x"


def test_only_finished_trials_count_and_too_few_give_a_note(search):
    records = [dict(r, state="EARLY_STOPPED") if i >= MIN_TRIALS - 1 else r
               for i, r in enumerate(search.trial_records)]
    answer = param_importances(search.searchspace, records)
    assert answer["importances"] == [] and answer["of"] == MIN_TRIALS - 1
    assert answer["note"] == f"importances need {MIN_TRIALS} finished trials " \
                             f"({MIN_TRIALS - 1} so far)"


def test_many_trials_are_spread_evenly(search):
    answer = param_importances(search.searchspace, search.trial_records, max_trials=10)
    assert answer["trials"] == 10 and answer["of"] == 40
    assert answer["importances"][0][0] == "x"


def test_the_summary_draws_each_trial_through_its_parameters(search):
    page = summary_html(search)
    svg = re.search(r'<svg class="maggy-parcoords".*?</svg>', page).group()
    # one line per scored trial, the best one in red, drawn last (on top)
    lines = re.findall(r'<polyline class="maggy-summary-line".*?</polyline>', svg)
    assert len(lines) == 40
    assert f"trial {search.best_id}:" in lines[-1] and 'stroke="#d62728"' in lines[-1]
    names = re.findall(r'font-weight="bold">([^<]+)</text>', svg)
    assert names == ["x", "noise (log)", "act", "score"]
    assert ">relu<" in svg and ">tanh<" in svg and ">gelu<" in svg   # categorical ticks
    assert ">0.001<" in svg and ">0.01<" in svg                      # decades on log
    # the importances follow, the driving parameter first
    head = re.search(r'maggy-importance-head[^>]*>([^<]+)<', page).group(1)
    assert head == "parameter importance (fANOVA over 40 finished trials)"
    bars = re.search(r'<svg class="maggy-summary-importance".*?</svg>', page).group()
    assert re.findall(r'text-anchor="end">([^<]+)</text>', bars)[0] == "x"
    # the record survives the run: the result read back from its directory draws the same
    from maggy_magic.runs import load_result

    again = load_result(search.run_dir)
    assert again.searchspace == SPACE.to_dict()
    assert re.search(r'<svg class="maggy-parcoords".*?</svg>', summary_html(again)).group() == svg


def test_a_log_axis_and_positions_match_the_front_end():
    axes = parcoords.axes(SPACE.to_dict(), [])
    assert [(a["name"], a["kind"]) for a in axes] == \
        [("x", "linear"), ("noise", "log"), ("act", "categorical")]
    noise, act = axes[1], axes[2]
    assert parcoords.position(noise, 1e-2) == pytest.approx(0.5)
    assert parcoords.line_values(axes, {"x": 0.5, "act": "tanh"}) == [0.5, None, 1]
    assert parcoords.position(act, 1) == pytest.approx(0.5)
    assert parcoords.line_values(axes, {"noise": 0.0})[1] is None   # no place on a log axis


def test_without_optuna_importances_are_a_note_not_an_error(search, tmp_path):
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(search.to_dict()))
    code = (
        "import json, sys\n"
        "sys.modules['optuna'] = None\n"        # as if it were not installed
        "from maggy_magic.result import ExperimentResult\n"
        "from maggy_magic.ui.importance import param_importances\n"
        "from maggy_magic.ui.summary import summary_html\n"
        f"data = json.load(open({str(saved)!r}))\n"
        "answer = param_importances(data['searchspace'], data['trials'])\n"
        "result = ExperimentResult(name='n', run_id='r', run_dir='.', state='finished',\n"
        "    direction='max', optimization_key='score', trials=data['trials'],\n"
        "    searchspace=data['searchspace'])\n"
        "page = summary_html(result)\n"
        "print(json.dumps([answer, page.count('class=\"maggy-summary-line\"'),\n"
        "                  'maggy-importance-note' in page]))\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    answer, lines, noted = json.loads(out.stdout)
    assert answer["importances"] == []
    assert answer["note"] == "parameter importances need optuna: " \
                             "pip install 'maggy-magic[importance]'"
    assert lines == 40 and noted


def no_model():
    return None


def columns_without(ablated_features):
    return [name for name in ("age", "fare") if name not in ablated_features]


def count_columns(model_function, dataset_function, reporter):
    return {"metric": len(dataset_function())}


def test_an_ablation_study_has_no_parallel_coordinates(tmp_path):
    os.chdir(tmp_path)
    study = AblationStudy("titanic", 1, "survived", dataset_generator=columns_without)
    study.features.include("age", "fare")
    study.model.set_base_model_generator(no_model)
    result = experiment.lagom(count_columns, AblationConfig(ablation_study=study, workers=1))
    assert result.num_finished == 3
    page = summary_html(result)
    assert "maggy-ablation" in page
    assert "maggy-parcoords" not in page and "parameter importance" not in page
    from maggy_magic.ui.search_svg import importance_line

    assert importance_line(result) == ""
    state = DashboardState()
    state.apply({"type": "run_started", "t": 0, "config": {"kind": "ablation"}})
    assert state.search_payload(0)["axes"] == []


def events(n, searchspace=None, t0=1_000.0):
    """A run of ``n`` trials whose score is x (trial i has x = i / n, shuffled)."""
    config = {"num_trials": n, "direction": "max", "optimization_key": "score",
              "kind": "hpo", "searchspace": searchspace}
    yield {"type": "run_started", "t": t0, "config": config}
    for i in range(n):
        trial, x = f"{i:05d}", ((i * 7919) % n) / n
        params = {"x": x, "noise": 10 ** -(i % 4), "act": ["relu", "tanh", "gelu"][i % 3]}
        yield {"type": "trial_started", "t": t0 + i, "trial": trial, "params": params,
               "worker": str(i % 4)}
        yield {"type": "trial_finished", "t": t0 + i, "trial": trial, "value": x,
               "state": "FINISHED" if i % 7 else "EARLY_STOPPED"}


def test_the_search_part_stays_bounded_and_keeps_the_best():
    state = DashboardState("big")
    for event in events(10_000, SPACE.to_dict()):
        state.apply(event)
    payload = state.search_payload(0)
    size = len(json.dumps(payload))
    print(f"\nsearch part of 10000 trials: {size} bytes, {len(payload['lines'])} lines")
    assert len(payload["lines"]) == state.search.max_lines == 300
    assert size < 60_000
    assert payload["total"] == 10_000
    assert payload["note"] == "showing 300 of 10000 trials: the best 60 and an even " \
                              "spread of the others"
    drawn = {line["trial"]: line for line in payload["lines"]}
    best = sorted(state.rows.values(), key=lambda r: -r["metric"])[:60]
    assert {r["trial"] for r in best} <= set(drawn)
    assert payload["best"] == best[0]["trial"]
    # the axes are the search space's, then the metric's; lines carry one value per axis
    assert [a["kind"] for a in payload["axes"]] == ["linear", "log", "categorical", "linear"]
    assert payload["axes"][-1]["metric"] and payload["axes"][-1]["direction"] == "max"
    line = drawn[best[0]["trial"]]
    assert len(line["values"]) == 4 and line["values"][-1] == best[0]["metric"]
    # the rest are spread over the whole run, not the first or last ones
    others = sorted(int(t) for t in drawn if t not in {r["trial"] for r in best})
    assert others[0] < 200 and others[-1] > 9_700


def test_importances_are_computed_off_the_listeners_thread(monkeypatch):
    from maggy_magic.ui import importance

    computed_on = []
    real = importance.param_importances

    def recording(*args, **kwargs):
        computed_on.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(importance, "param_importances", recording)
    dash = Dashboard("live", on_stop=lambda: None, importance_interval=0.2)
    feed = list(events(400, SPACE.to_dict()))
    slowest, computing_seen = 0.0, False
    start = time.monotonic()
    for event in feed:
        before = time.perf_counter()
        dash(event)
        slowest = max(slowest, time.perf_counter() - before)
        thread = dash.importance._thread
        computing_seen |= thread is not None and thread.is_alive()
        time.sleep(0.002)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with dash._cond:
            live = dash.state.search.importances
        if live is not None and live["importances"]:
            break
        time.sleep(0.05)
    took = time.monotonic() - start
    computations = dash.importance.computations
    print(f"\nslowest listener call {slowest * 1000:.1f} ms; {computations} computations "
          f"in {took:.1f} s")
    assert computing_seen and live is not None and live["importances"][0][0] == "x", live
    # a computation never runs on the listener's thread
    assert computed_on and threading.current_thread() not in computed_on
    assert all(t.name != "maggy-importance" or t.daemon for t in threading.enumerate())
    dash.close()
    final = dash.widget.search["importances"]
    finished = sum(1 for i in range(400) if i % 7)
    assert final["of"] == finished and final["importances"][0][0] == "x"
    assert dash.importance.computations <= took / 0.2 + 2


def test_the_text_progress_ends_with_the_importances(search):
    import io

    from maggy_magic.ui.text import TextProgress

    out = io.StringIO()
    TextProgress("driven", stream=out).finish(search)
    last = out.getvalue().splitlines()[-1]
    assert re.fullmatch(r"parameter importance \(fANOVA, 40 trials\): x \d+\.\d% · "
                        r"(noise|act) \d+\.\d% · (noise|act) \d+\.\d%", last), last
