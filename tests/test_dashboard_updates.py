"""What a live update changes in the drawn dashboard, in a real browser (Debian's chromium
via Playwright, as tests/test_browser.py), without Jupyter: the real
:class:`~maggy_magic.ui.state.DashboardState` folds a run of 300 finished and 8 running
trials, and the shipped bundle draws what its ``take()`` gives, the widget model being a
plain object whose change handlers the test calls.

An update of the running trials' metrics touches only their rows and curves (a
a MutationObserver records every change), the table draws its rows a screenful at a time
(more as it is scrolled to its end), and what it shows still follows the state.
"""

import functools
import http.server
import json
import os
import random
import shutil
import threading

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS

from maggy_magic.ui import dashboard as dashboard_module
from maggy_magic.ui.state import DashboardState

pytestmark = pytest.mark.slow

STATIC = os.path.join(os.path.dirname(dashboard_module.__file__), "static")
FINISHED, LIVE = 300, 8
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="dashboard.css"></head><body><div id="root"></div>
<script type="module">
import widget from "./dashboard.js";
const data = await (await fetch("initial.json")).json();
const handlers = {};
const model = {get: (k) => data[k], on(name, fn) { (handlers[name] ||= []).push(fn); },
               off() {}, send() {}, set() {}, save_changes() {}};
widget.render({model, el: document.getElementById("root")});
window.apply = (parts) => {
  const watch = new MutationObserver(() => {});
  watch.observe(document.getElementById("root"),
                {subtree: true, childList: true, attributes: true, characterData: true});
  for (const [key, value] of Object.entries(parts)) {
    data[key] = value;
    for (const fn of handlers[`change:${key}`] || []) fn();
  }
  const seen = watch.takeRecords().map((r) => {
    const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    const owner = node.closest("[data-trial]");
    const where = node.closest("svg") ? "curves" : node.closest("table") ? "table" : "other";
    return {type: r.type, trial: owner ? owner.dataset.trial : null, where};
  });
  watch.disconnect();
  return seen;
};
document.body.dataset.ready = "1";
</script></body></html>"""


def fold_run():
    """``(state, live trial ids, emit)`` of a synthetic run: FINISHED trials done, LIVE
    running, each with a few metric points."""
    rng = random.Random(3)
    state = DashboardState("updates")
    seq = iter(range(10**9))

    def emit(event_type, **fields):
        state.apply(dict(type=event_type, run="r", seq=next(seq), t=1.0, **fields))

    emit("run_started", config={"searchspace": {"x": {"type": "DOUBLE", "range": [0, 1]}},
                                "optimization_key": "metric", "direction": "max",
                                "num_trials": FINISHED + LIVE},
         kind="hpo", name="updates", run_dir="/tmp/updates", resumed=False,
         backend={"backend": "local"})
    for index in range(FINISHED + LIVE):
        trial, x = f"{index:04d}", rng.random()
        emit("trial_started", trial=trial, params={"x": x}, worker=str(index % 8),
             budget=None, info={}, attempt=0)
        # finished trials reach step 7 and 0.9 or more: the live ones' next points stay
        # inside the plot's extent
        for step in range(8 if index < FINISHED else 4):
            emit("metric", trial=trial, step=step, value=0.9 * (step + 1) / 8 + x / 10)
        if index < FINISHED:
            emit("trial_finished", trial=trial, value=x, metrics={}, state="FINISHED",
                 duration=1.0)
    return state, [f"{i:04d}" for i in range(FINISHED, FINISHED + LIVE)], emit


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    state, live, emit = fold_run()
    for name in ("dashboard.js", "dashboard.css"):
        shutil.copy(os.path.join(STATIC, name), tmp_path / name)
    initial = state.take()
    (tmp_path / "initial.json").write_text(json.dumps(initial))
    (tmp_path / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            tab.wait_for_selector("body[data-ready='1']", timeout=60_000)
            yield tab, state, live, emit, initial
            browser.close()
    finally:
        server.shutdown()
        server.server_close()


def rows(tab):
    return tab.evaluate("() => [...document.querySelectorAll('.maggy-table tbody tr')]"
                        ".map(r => [r.dataset.trial, [...r.cells].map(c => c.textContent)])")


def test_an_update_of_running_trials_touches_only_their_rows_and_curves(page):
    tab, state, live, emit, _ = page
    before = dict(rows(tab))
    shown_live = [trial for trial in live if trial in before]
    assert shown_live, "the running trials are the newest: the first rows by trial id"
    finished_rows = [trial for trial in before if trial not in live]
    assert finished_rows
    tab.evaluate("() => document.querySelectorAll('.maggy-table tbody tr, polyline')"
                 ".forEach(n => { n.kept = true; })")
    for trial in live:
        for step in range(4, 7):
            emit("metric", trial=trial, step=step, value=0.2 + step / 100 + int(trial) / 1e5)
    changes = tab.evaluate("(p) => window.apply(p)", state.take())

    touched = {(c["where"], c["trial"]) for c in changes}
    assert ("table", live[-1]) in touched and ("curves", live[-1]) in touched, touched
    assert {pair for pair in touched if pair[1] not in live} == set(), touched
    # the same row and curve elements, with the new values in the running rows
    assert tab.evaluate("() => [...document.querySelectorAll("
                        "'.maggy-table tbody tr, polyline')].every(n => n.kept)")
    after = dict(rows(tab))
    assert [after[t] for t in finished_rows] == [before[t] for t in finished_rows]
    assert all(after[t] != before[t] for t in shown_live)
    assert all(any(cell.startswith("0.26") for cell in after[t]) for t in shown_live), after


def test_many_curves_are_drawn_with_thin_lines_but_the_best_stays_thick(page):
    """Over 30 curves the plot switches to 1 px lines (which rasterise several times
    faster than 1.5 px ones); the best curve keeps its width."""
    tab = page[0]
    assert tab.evaluate("() => document.querySelectorAll('polyline').length") > 30
    widths = tab.evaluate(
        "() => ['.maggy-curve-running', '.maggy-curve-finished', '.maggy-curve-best']"
        ".map(sel => getComputedStyle(document.querySelector(sel)).strokeWidth)")
    assert widths == ["1px", "1px", "3px"]


def test_the_table_draws_a_screenful_of_rows_and_more_when_scrolled_to_its_end(page):
    tab, state, live, emit, initial = page
    sent = [row["trial"] for row in initial["trials"]["rows"]]
    assert len(sent) > 80
    drawn = rows(tab)
    assert len(drawn) == 40
    assert tab.inner_text(".maggy-table-panel .maggy-note") == \
        f"showing 40 of {FINISHED + LIVE} trials"
    # newest first: the running trials, then the latest finished ones
    assert [trial for trial, _ in drawn[:LIVE]] == sorted(live, reverse=True)
    tab.eval_on_selector(".maggy-table-scroll", "n => { n.scrollTop = n.scrollHeight; }")
    tab.wait_for_function(
        "() => document.querySelectorAll('.maggy-table tbody tr').length === 80",
        timeout=10_000)
    assert tab.inner_text(".maggy-table-panel .maggy-note") == \
        f"showing 80 of {FINISHED + LIVE} trials"
    # a click on a header sorts every row the kernel sent, not only those drawn
    tab.click(".maggy-table th[data-key=trial]")
    assert rows(tab)[0][0] == min(sent)
