"""The dashboard's parallel coordinates and importances in a real browser (Debian's
chromium via Playwright, as tests/test_browser.py), without Jupyter: a real search runs
with a dashboard, and its synced state is drawn by the shipped bundle on a page served on
127.0.0.1, the widget model being a plain object holding that state.

The view draws one line per scored trial; a drag along an axis dims exactly the lines
outside the range it covers, a second axis's brush narrows the selection, a click clears
a brush; the importances list the driving parameter first. Screenshots go to
``$MAGGY_ARTIFACTS`` (default: the test's tmp directory).
"""

import functools
import http.server
import json
import os
import shutil
import threading

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.ui import dashboard as dashboard_module
from maggy_magic.ui.dashboard import Dashboard

pytestmark = pytest.mark.slow

STATIC = os.path.join(os.path.dirname(dashboard_module.__file__), "static")
PARTS = ("status", "trials", "curves", "logs", "search")
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="dashboard.css"><style>body{margin:16px;background:#fff}</style>
</head><body><div id="root"></div><script type="module">
import widget from "./dashboard.js";
const data = await (await fetch("state.json")).json();
const model = {get: (k) => data[k], on() {}, off() {}, send() {}, set() {}, save_changes() {}};
widget.render({model, el: document.getElementById("root")});
document.body.dataset.ready = "1";
</script></body></html>"""


def score_by_x(x, lr, act, reporter):
    """The metric follows x; lr and act change nothing."""
    reporter.broadcast(x, 0)
    return {"score": x}


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory):
    """A folder with the bundle, its stylesheet, the state of a real run's dashboard and
    the page that draws it."""
    os.chdir(tmp_path_factory.mktemp("run"))
    space = Searchspace(x=("DOUBLE", [0.0, 1.0]), lr=("DOUBLE", [1e-4, 1e-1], "log"),
                        act=("CATEGORICAL", ["relu", "tanh", "gelu"]))
    dash = Dashboard("search", on_stop=lambda: None)
    config = HyperparameterOptConfig(num_trials=24, optimizer="randomsearch", seed=4,
                                     searchspace=space, optimization_key="score",
                                     es_policy="none", workers=2, name="search")
    result = experiment.run(score_by_x, config, listeners=[dash], wait=dash.wait)
    dash.close()
    assert result.num_finished == 24
    folder = tmp_path_factory.mktemp("page")
    for name in ("dashboard.js", "dashboard.css"):
        shutil.copy(os.path.join(STATIC, name), folder / name)
    state = {part: getattr(dash.widget, part) for part in PARTS}
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "index.html").write_text(PAGE)
    return folder, state


@pytest.fixture
def served(page_dir):
    folder, state = page_dir
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html", state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def artifacts(tmp_path):
    path = os.environ.get("MAGGY_ARTIFACTS") or str(tmp_path / "artifacts")
    os.makedirs(path, exist_ok=True)
    return path


def drag(page, axis_key, top, bottom):
    """Drag along an axis from position ``top`` to ``bottom`` (0 bottom .. 1 top)."""
    box = page.locator(f'.maggy-pc-axis[data-axis="{axis_key}"] .maggy-pc-rule').bounding_box()
    x = box["x"] + box["width"] / 2

    def y(p):
        return box["y"] + (1 - p) * box["height"]

    page.mouse.move(x, y(top))
    page.mouse.down()
    page.mouse.move(x, y(bottom), steps=6)
    page.mouse.up()


def dimmed(page):
    return set(page.eval_on_selector_all(
        "path.maggy-pc-line.maggy-pc-dim", "ns => ns.map(n => n.dataset.trial)"))


def cut(values):
    """A position between two neighbouring values near the middle, far from both."""
    values = sorted(values)
    pairs = [(b - a, (a + b) / 2) for a, b in zip(values, values[1:]) if 0.25 < (a + b) / 2 < 0.75]
    return max(pairs)[1]


def test_brushing_the_parallel_coordinates(served, artifacts):
    from playwright.sync_api import sync_playwright

    url, state = served
    search = state["search"]
    lines = {line["trial"]: line for line in search["lines"]}
    names = [axis["name"] for axis in search["axes"]]
    assert names == ["x", "lr", "act", "score"] and len(lines) == 24
    assert os.path.exists(CHROMIUM), f"chromium is needed at {CHROMIUM}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert not errors, errors
            # one line per trial, none dimmed; the best trial's drawn on top
            drawn = page.eval_on_selector_all("path.maggy-pc-line",
                                              "ns => ns.map(n => n.dataset.trial)")
            assert sorted(drawn) == sorted(lines)
            assert drawn[-1] == search["best"]
            assert page.get_attribute(f'path[data-trial="{search["best"]}"]', "class") \
                == "maggy-pc-line maggy-pc-best"
            assert dimmed(page) == set()
            # the axes: linear, log (decades), categorical, the metric's
            ticks = page.eval_on_selector_all(
                '.maggy-pc-axis[data-axis="param:lr"] .maggy-pc-tick',
                "ns => ns.map(n => n.textContent)")
            assert ticks == ["1.00e-4", "0.001", "0.01", "0.1"]
            cats = page.eval_on_selector_all(
                '.maggy-pc-axis[data-axis="param:act"] .maggy-pc-tick',
                "ns => ns.map(n => n.textContent)")
            assert cats == ["relu", "tanh", "gelu"]

            # brush the upper part of x: the lines below it are dimmed, exactly
            x_cut = cut([line["values"][0] for line in lines.values()])
            drag(page, "param:x", 0.98, x_cut)
            outside = {t for t, line in lines.items() if not line["values"][0] >= x_cut}
            assert dimmed(page) == outside and 0 < len(outside) < len(lines)
            assert page.locator('rect.maggy-pc-brush[data-axis="param:x"]').is_visible()
            note = page.inner_text("[data-role=parcoords-note]")
            assert f"{len(lines) - len(outside)} of {len(lines)} selected" in note
            page.locator(".maggy-dash").screenshot(path=os.path.join(artifacts,
                                                                     "parcoords-brushed.png"))
            # a second brush, on the categorical axis (its lowest category): both hold
            drag(page, "param:act", 0.05, 0.3)
            both = {t for t, line in lines.items()
                    if line["values"][0] >= x_cut and line["values"][2] == 0}
            assert dimmed(page) == set(lines) - both
            # a click on an axis clears its brush; "clear selection" clears them all
            box = page.locator('.maggy-pc-axis[data-axis="param:act"] .maggy-pc-rule') \
                .bounding_box()
            page.mouse.click(box["x"] + 1, box["y"] + box["height"] / 2)
            assert dimmed(page) == outside
            page.click("[data-role=clear-brushes]")
            assert dimmed(page) == set()

            # the importances: the driving parameter first, each with its share
            rows = page.eval_on_selector_all(
                "[data-role=importance] .maggy-imp-row", "ns => ns.map(n => n.dataset.param)")
            assert rows[0] == "x" and sorted(rows) == ["act", "lr", "x"]
            head = page.inner_text(".maggy-importance-panel .maggy-panel-title")
            assert head == "Parameter importance (fANOVA · 24 trials)"
            assert not errors, errors
        finally:
            page.screenshot(path=os.path.join(artifacts, "search-page.png"), full_page=True)
            browser.close()
