"""The live dashboard in a real browser: JupyterLab 4 and Jupyter Notebook 7, with Debian's
chromium via Playwright.

A ``%%maggy hpo`` cell runs an experiment of 12 trials with the dashboard, and the next
cell, queued behind it, prints the result. While the experiment runs, the test watches the
page: the progress bar advances, table rows and a learning curve appear, a line printed
inside a trial shows in its worker's log pane, a header click re-sorts the table and
reaches the kernel while the cell blocks, the parallel coordinates draw one line per
finished trial and a drag along the metric's axis dims the lines outside it, and the
parameter importances show; then it clicks Stop and the run ends early with
partial results, which the queued cell prints, and the cell's static summary follows the
dashboard.

The run cannot end before the test has looked: trials 0 and 1 run at once, trials 2 and 3
wait for the file ``gate-a``, the later ones for ``gate-b`` (or for Stop). The test creates
``gate-a`` once it has seen two trials finished while the run goes on, so it then sees
progress; ``gate-b`` only once the kernel has acted on Stop.
Screenshots go to ``$MAGGY_ARTIFACTS`` (default: the test's tmp directory).

Needs chromium at ``$MAGGY_CHROMIUM`` (default /usr/bin/chromium); Playwright does not
download browsers here. The test never skips: a missing browser is a failure.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("MAGGY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TRIALS = 12

MAGIC_LINE = (f"%%maggy hpo --trials {TRIALS} --metric score --workers 2 --es-policy none "
              "--hb-interval 0.2 --seed 5 --gpus-per-trial 1 --name browser -o result")
#: the devices the kernel sees (no GPU here: what the local backend hands out)
DEVICES = "0,1"
#: trials below FREE start at once, those below HELD wait for gate-a, the rest for gate-b
FREE, HELD = 2, 4


def cells(gates):
    """The notebook's cells; the training function waits for files under ``gates``."""
    return [
        "%load_ext maggy_magic",
        f"""\
{MAGIC_LINE}
import os, time
from maggy_magic import Searchspace

searchspace = Searchspace(x=("DOUBLE", [0.0, 1.0]), lr=("DOUBLE", [1e-4, 1e-1], "log"),
                          act=("CATEGORICAL", ["relu", "tanh"]))

def train(x, lr, act, reporter):
    number = int(reporter.get_trial_id())
    gate = None if number < {FREE} else "gate-a" if number < {HELD} else "gate-b"
    deadline = time.time() + 300     # in case the test could not open the gate
    while gate and not os.path.exists(os.path.join({gates!r}, gate)) \\
            and not reporter.early_stop and time.time() < deadline:
        time.sleep(0.05)
    for step in range(10):
        reporter.broadcast(x * (step + 1) / 10, step)   # raises once the trial is stopped
        time.sleep(0.05)
    print(f"hello from the trial with x={{x:.3f}}")
    return {{"score": x}}
""",
        # queued while the experiment cell blocks: the kernel must run it afterwards
        'print("RESULT", result.state, result.num_finished, result.num_early_stopped, '
        'result.num_failed, result.best_id)',
    ]


# what JupyterLab thinks of the notebook's kernel, printed when the test fails
DIAGNOSE = """() => {
  const app = window.jupyterapp;
  if (!app) return "no window.jupyterapp";
  const w = app.shell.currentWidget;
  const ctx = w && w.sessionContext;
  const k = ctx && ctx.session && ctx.session.kernel;
  return JSON.stringify({widget: w && w.id, ready: ctx && ctx.isReady,
    kernel: k && k.name, status: k && k.status, connection: k && k.connectionStatus});
}"""


@pytest.fixture
def artifacts(tmp_path):
    path = os.environ.get("MAGGY_ARTIFACTS") or str(tmp_path / "artifacts")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture
def gates(tmp_path):
    """The folder the notebook's training function looks in for its gate files."""
    path = tmp_path / "gates"
    path.mkdir()
    yield path
    for gate in ("gate-a", "gate-b"):    # whatever happened, no trial is left waiting
        (path / gate).touch()


#: The front ends: JupyterLab 4 and Jupyter Notebook 7, (module, app class, notebook URL).
FRONTENDS = {"jupyterlab": ("jupyterlab", "LabApp", "lab/tree"),
             "notebook7": ("notebook", "JupyterNotebookApp", "notebooks")}


@pytest.fixture(params=sorted(FRONTENDS))
def lab(request, tmp_path, gates):
    """A JupyterLab (or Notebook 7) server on a free port, with a kernel spec for this
    interpreter and a notebook holding the experiment cell. Yields (url of the notebook,
    server log path)."""
    module, app, path = FRONTENDS[request.param]
    import nbformat

    home = tmp_path / "lab"
    (home / "kernels" / "maggy-test").mkdir(parents=True)
    (home / "kernels" / "maggy-test" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "maggy test", "language": "python"}))
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    root = tmp_path / "notebooks"
    root.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "maggy-test", "display_name": "maggy test",
                                       "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells(str(gates))]
    nbformat.write(notebook, str(root / "dashboard.ipynb"))

    token = secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_PATH=str(home), JUPYTER_CONFIG_DIR=str(home / "config"),
               CUDA_VISIBLE_DEVICES=DEVICES,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    log_path = tmp_path / "jupyter.log"
    server, base = None, None
    try:
        # the server picks a free port itself (--port=0) and binds it a moment later; a
        # port taken meanwhile makes it exit (no port retries), and then it starts again
        for attempt in range(5):
            runtime = home / f"runtime-{attempt}"
            env["JUPYTER_RUNTIME_DIR"] = str(runtime)
            with open(log_path, "a") as log:
                server = subprocess.Popen(
                    [sys.executable, "-m", module, "--no-browser", "--port=0",
                     "--ServerApp.port_retries=0", "--ip=127.0.0.1", "--allow-root",
                     f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                     # kernels talk over files, not ports
                     "--KernelManager.transport=ipc", f"--KernelManager.ip={home / 'ipc'}",
                     f"--LabServerApp.user_settings_dir={home / 'settings'}",
                     f"--LabServerApp.workspaces_dir={home / 'workspaces'}",
                     f"--{app}.expose_app_in_browser=True",
                     "--ServerApp.open_browser=False"],
                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(root))
            base = serving(server, runtime, token, log_path)
            if base is not None:
                break
        assert base is not None, log_path.read_text()[-3000:]
        yield f"{base}/{path}/dashboard.ipynb?token={token}", log_path
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def serving(server, runtime, token, log_path, timeout=120):
    """The base URL of ``server`` once it answers; None when it exited first."""
    deadline = time.monotonic() + timeout
    info = runtime / f"jpserver-{server.pid}.json"
    while True:
        if server.poll() is not None:
            return None
        if info.exists():
            try:
                port = json.loads(info.read_text())["port"]
                base = f"http://127.0.0.1:{port}"
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                return base
            except (OSError, ValueError, KeyError):
                pass    # not written in full, or not listening yet
        assert time.monotonic() < deadline, \
            f"jupyter lab did not start in {timeout} s: {log_path.read_text()[-3000:]}"
        time.sleep(0.2)


def text(page, selector):
    node = page.query_selector(selector)
    return node.inner_text() if node else ""


def count(page, selector):
    return len(page.query_selector_all(selector))


def number(page, selector):
    found = re.match(r"\d+", text(page, selector).strip())
    return int(found.group()) if found else 0


def test_dashboard_in_the_browser(lab, gates, artifacts):
    from playwright.sync_api import sync_playwright

    url, log_path = lab
    assert os.path.exists(CHROMIUM), f"chromium is needed at {CHROMIUM} (apt-get install chromium)"
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            run_and_watch(page, url, gates, artifacts)
        except Exception:
            page.screenshot(path=os.path.join(artifacts, "dashboard-failure.png"))
            print("page state:", page.evaluate(DIAGNOSE))
            print(log_path.read_text()[-5000:])
            raise
        finally:
            browser.close()
    print(f"\nbrowser test took {time.monotonic() - started:.1f} s; screenshots in {artifacts}")


def state_is(*states):
    """A page function: the dashboard's run state is one of ``states``."""
    return ("() => %s.includes((document.querySelector('.maggy-dash [data-role=state]')"
            " || {}).textContent)" % json.dumps(list(states)))


def finished_is(n):
    """A page function: the run goes on and exactly ``n`` trials have finished."""
    return ("() => (document.querySelector('.maggy-dash [data-role=state]') || {})"
            ".textContent === 'running' && parseInt((document.querySelector("
            "'[data-role=count-finished]') || {}).textContent) === %d" % n)


#: the page-space y of each parallel-coordinates line where it meets the metric's axis
METRIC_ENDS = """() => [...document.querySelectorAll('.maggy-dash path.maggy-pc-line')].map(p => {
  const last = p.getAttribute('d').split(/[ML]/).filter(Boolean).pop().split(',').map(Number);
  const point = p.ownerSVGElement.createSVGPoint();
  [point.x, point.y] = last;
  return point.matrixTransform(p.ownerSVGElement.getScreenCTM()).y;
})"""


def watch_the_search(page):
    """While the run goes on (HELD trials finished, the others held): one line per
    finished trial; a drag along the metric's axis from its top to between the best
    line and the next dims every line but the best's; the importances show."""
    page.wait_for_function(
        "() => document.querySelectorAll('.maggy-dash path.maggy-pc-line').length === %d"
        % HELD, timeout=30_000)
    axes = page.eval_on_selector_all(".maggy-dash .maggy-pc-axis",
                                     "ns => ns.map(n => n.dataset.axis)")
    assert axes == ["param:x", "param:lr", "param:act", "metric:score"], axes
    page.locator(".maggy-dash [data-role=parcoords]").scroll_into_view_if_needed()
    ends = sorted(page.evaluate(METRIC_ENDS))          # the best (highest) line first
    assert len(ends) == HELD and ends[0] < ends[1], ends
    rule = page.locator('.maggy-dash .maggy-pc-axis[data-axis="metric:score"] .maggy-pc-rule')
    box = rule.bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 1)
    page.mouse.down()
    page.mouse.move(x, (ends[0] + ends[1]) / 2, steps=6)
    page.mouse.up()
    page.wait_for_function(
        "() => document.querySelectorAll('.maggy-dash path.maggy-pc-line.maggy-pc-dim')"
        ".length === %d" % (HELD - 1), timeout=5_000)
    kept = page.eval_on_selector_all(".maggy-dash path.maggy-pc-line:not(.maggy-pc-dim)",
                                     "ns => ns.map(n => n.dataset.trial)")
    assert kept == [text(page, ".maggy-dash [data-role=best]").split("trial ")[1].split()[0]]
    assert f"1 of {HELD} selected" in text(page, ".maggy-dash [data-role=parcoords-note]")
    # importances of the finished trials, computed in the kernel as the run goes on
    page.wait_for_function(
        "() => document.querySelectorAll('.maggy-dash [data-role=importance] .maggy-imp-row')"
        ".length === 3", timeout=60_000)
    rows = page.eval_on_selector_all(".maggy-dash [data-role=importance] .maggy-imp-row",
                                     "ns => ns.map(n => n.dataset.param)")
    assert sorted(rows) == ["act", "lr", "x"]


def run_and_watch(page, url, gates, artifacts):
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=60_000)
    # the notebook's kernel is connected and idle (JupyterLab's own session state)
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session &&"
        " w.sessionContext.session.kernel;"
        " return !!(k && w.sessionContext.isReady && k.connectionStatus === 'connected'"
        " && k.status === 'idle'); }", timeout=60_000)
    # Run All: the last cell queues behind the experiment cell
    # (not awaited: the command's promise settles only when every cell has run)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_selector(".maggy-dash", timeout=60_000)

    # progress advances while the run is live: the free trials finish, the next two wait
    # for gate-a; once it opens they finish too, and the later ones wait for gate-b
    page.wait_for_function(finished_is(FREE), timeout=60_000)
    bar = page.eval_on_selector(".maggy-seg.maggy-finished", "n => parseFloat(n.style.width)")
    (gates / "gate-a").touch()
    page.wait_for_function(finished_is(HELD), timeout=60_000)
    wider = page.eval_on_selector(".maggy-seg.maggy-finished", "n => parseFloat(n.style.width)")
    assert 0 < bar < wider, (bar, wider)

    # table rows, a curve and a log line from inside a trial, all while the run goes on
    page.wait_for_function(
        "() => document.querySelectorAll('.maggy-table tbody tr').length >= %d" % HELD,
        timeout=30_000)
    assert count(page, "polyline.maggy-curve") >= 1
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-role=log-pane] .maggy-log-line')]"
        ".some(n => n.textContent.includes('hello from the trial'))", timeout=30_000)
    assert count(page, "[data-role=log-pane]") == 2
    # each worker's pane names its own device, and the table has a devices column
    heads = page.evaluate("() => [...document.querySelectorAll('.maggy-log-head')]"
                          ".map(n => n.textContent)")
    assert sorted(re.search(r"GPU (\S+)", head).group(1) for head in heads) == ["0", "1"], heads
    assert count(page, ".maggy-table th[data-key=devices]") == 1

    # sorting while the cell blocks: the view sorts at once, and the kernel hears of it
    # (its next rows come picked by the new sort)
    assert page.get_attribute(".maggy-table", "data-kernel-sort") == "trial:desc"
    page.click(".maggy-table th[data-key=trial]")
    page.wait_for_function(
        "() => { const ids = [...document.querySelectorAll('.maggy-table tbody tr')]"
        ".map(r => r.dataset.trial); return ids.length > 1 && ids[0] === '0000'; }",
        timeout=10_000)
    page.wait_for_selector(".maggy-table[data-kernel-sort='trial:asc']", timeout=30_000)
    assert text(page, ".maggy-dash [data-role=state]") == "running"
    watch_the_search(page)
    page.locator(".maggy-dash").screenshot(path=os.path.join(artifacts, "dashboard-running.png"))

    # Stop ends the run early, gracefully: the held trials are stopped, no new one starts
    assert text(page, ".maggy-dash [data-role=state]") == "running"
    page.click(".maggy-dash [data-role=stop]")
    page.wait_for_function(state_is("stopping", "stopped"), timeout=30_000)
    (gates / "gate-b").touch()      # the kernel has acted on Stop: nothing waits any more
    page.wait_for_function(state_is("stopped"), timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-OutputArea-output')]"
        ".some(n => n.textContent.includes('RESULT'))", timeout=30_000)
    # textContent: innerText leaves out cells JupyterLab does not paint (off screen)
    outputs = page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                            ".map(n => n.textContent).join('\\n')")
    found = re.search(r"RESULT (\w+) (\d+) (\d+) (\d+) (\S+)", outputs)
    assert found, outputs
    state, *ended = found.group(1), *map(int, found.groups()[1:4])
    best_id = found.group(5)
    assert state == "stopped" and sum(ended) < TRIALS, found.group(0)
    assert ended[0] >= HELD, found.group(0)
    counts = [number(page, f"[data-role=count-{name}]")
              for name in ("finished", "early-stopped", "failed", "running")]
    assert counts == ended + [0], (counts, found.group(0))   # the dashboard agrees
    page.locator(".maggy-dash").screenshot(path=os.path.join(artifacts, "dashboard-stopped.png"))

    # the cell's static summary follows the dashboard in the cell's output, and agrees
    summary = page.wait_for_selector(".jp-OutputArea-output .maggy-summary .maggy-best",
                                     timeout=30_000)
    follows = page.evaluate(
        "() => { const dash = document.querySelector('.maggy-dash');"
        " const summary = document.querySelector('.jp-OutputArea-output .maggy-summary');"
        " const cell = n => n.closest('.jp-Cell');"
        " return cell(dash) === cell(summary) && !!(dash.compareDocumentPosition(summary)"
        " & Node.DOCUMENT_POSITION_FOLLOWING); }")
    assert follows, "the static summary is not after the dashboard in the experiment cell"
    best = re.fullmatch(r"best score = (\S+) \(trial (\S+), max\) with x=\S+, lr=\S+, act=\S+",
                        summary.text_content().strip())
    assert best and best.group(2) == best_id, summary.text_content()
    assert text(page, ".maggy-summary .maggy-state") == "stopped"
    # the summary's parallel coordinates (a line per finished trial) and importances
    assert count(page, ".maggy-summary svg.maggy-parcoords polyline.maggy-summary-line") >= HELD
    assert count(page, ".maggy-summary svg.maggy-summary-importance rect") == 3
    page.locator(".jp-OutputArea-output .maggy-summary").screenshot(
        path=os.path.join(artifacts, "summary.png"))
    page.screenshot(path=os.path.join(artifacts, "page.png"), full_page=True)
