"""The ``maggy-magic`` command: run notebooks unattended, list and show runs.

- ``maggy-magic run NOTEBOOK [OUTPUT] -p NAME VALUE ...`` executes a notebook with
  papermill in a kernel of this Python, prints each experiment's summary and run
  directory, and exits non-zero when a cell or an experiment failed; ``--mlflow [URI]``
  logs its experiments to MLflow.
- ``maggy-magic ls`` lists runs with their state and best metric.
- ``maggy-magic show RUN`` prints one run's summary and trials.
- ``maggy-magic tensorboard RUN`` prints the command that opens a run in TensorBoard.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import click

from .errors import ConfigError, MaggyError, closest
from .tracking import MLFLOW_ENV
from .ui import PROGRESS_ENV, UI_ENV

#: Environment variable: a file where every experiment of this process appends a line.
RUN_RECORD_ENV = "MAGGY_MAGIC_RUN_RECORD"
#: How often the terminal is given what the experiments' text progress added.
FOLLOW_INTERVAL = 0.2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="maggy-magic")
def main() -> None:
    """Run notebooks that use %%maggy unattended, and look at the runs they left."""


def _check_mlflow(value: str) -> None:
    """A bad ``--mlflow`` (not a tracking URI, no $MLFLOW_TRACKING_URI, no mlflow) is one
    line before the notebook runs, as the experiments would say it."""
    from .tracking import tracking_option

    try:
        tracking_option(True if value == "on" else value)
    except ConfigError as exc:
        raise click.UsageError(f"--mlflow: {exc}") from None


def _parse_value(text: str) -> Any:
    """A parameter value: JSON if it parses (numbers, true/false, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@main.command("run")
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", required=False, type=click.Path(dir_okay=False))
@click.option("-p", "--parameter", "parameters", nargs=2, multiple=True,
              metavar="NAME VALUE",
              help="Set a variable of the notebook's `parameters` cell (VALUE is read as "
                   "JSON when it parses: 8, 0.5, true, \"text\"). Repeatable.")
@click.option("--cwd", type=click.Path(file_okay=False), default=None,
              help="Working directory of the kernel (default: the notebook's folder); run "
                   "directories are created under it.")
@click.option("--log-output/--no-log-output", default=True, show_default=True,
              help="Stream the cells' output (the experiments' text progress) to stderr.")
@click.option("--timeout", type=int, default=None,
              help="Seconds a single cell may run before the notebook fails.")
@click.option("--kernel", "kernel_name", default=None,
              help="Kernel to use (default: a kernel of this Python, with maggy-magic).")
@click.option("--mlflow", "mlflow", is_flag=False, flag_value="on", default=None,
              metavar="[URI]",
              help="Log every experiment of the notebook to MLflow: to URI, or alone to "
                   "$MLFLOW_TRACKING_URI (a cell's own --mlflow wins).")
def run_notebook(notebook: str, output: Optional[str], parameters: Tuple[Tuple[str, str]],
                 cwd: Optional[str], log_output: bool, timeout: Optional[int],
                 kernel_name: Optional[str], mlflow: Optional[str]) -> None:
    """Execute NOTEBOOK with papermill and write the executed copy to OUTPUT
    (default: NOTEBOOK with an `.output.ipynb` suffix).

    Prints every experiment's summary and run directory; exits with status 1 when a cell
    raised or an experiment failed (the error is in the output notebook too)."""
    try:
        import papermill
    except ImportError:
        raise click.ClickException("papermill is not installed; pip install "
                                   "'maggy-magic[papermill]'") from None
    if log_output:  # papermill logs the cells' output through logging
        import logging

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("papermill")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    output = output or _default_output(notebook)
    params = {name: _parse_value(value) for name, value in parameters}
    _check_parameters(notebook, params)
    if mlflow is not None:
        _check_mlflow(mlflow)
    cwd = cwd or os.path.dirname(os.path.abspath(notebook))
    with tempfile.TemporaryDirectory(prefix="maggy-magic-") as scratch:
        record = os.path.join(scratch, "runs.jsonl")
        progress = os.path.join(scratch, "progress.log")
        # the text progress goes to this terminal, not into the saved notebook
        env = {RUN_RECORD_ENV: record, UI_ENV: os.environ.get(UI_ENV, "papermill"),
               PROGRESS_ENV: progress}
        if mlflow is not None:  # the default of every config's mlflow= in the kernel
            env[MLFLOW_ENV] = mlflow
        if kernel_name is None:
            kernel_name = _write_kernel_spec(scratch)
            path = os.environ.get("JUPYTER_PATH")
            env["JUPYTER_PATH"] = scratch + (os.pathsep + path if path else "")
        failure = None
        with _environment(env), _Follow(progress if log_output else None):
            try:
                papermill.execute_notebook(notebook, output, parameters=params,
                                           kernel_name=kernel_name, language="python",
                                           cwd=cwd, log_output=log_output,
                                           progress_bar=False, execution_timeout=timeout)
            except papermill.PapermillExecutionError as exc:
                failure = f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
            except Exception as exc:  # noqa: BLE001 - reported as one line, never a traceback
                first = (str(exc).strip().splitlines() or [""])[0]
                raise click.ClickException(f"papermill could not run {notebook}: "
                                           f"{type(exc).__name__}: {first}") from None
        experiments = _read_record(record)
    failed = _report(experiments)
    click.echo(f"output notebook: {os.path.abspath(output)}")
    if failure:
        raise click.ClickException(f"{failure} (see {output})")
    if failed:
        raise click.ClickException(f"{failed} experiment(s) failed (see {output})")


@main.command("ls")
@click.option("--root", default="maggy_experiments", show_default=True,
              help="Folder that holds the run directories.")
@click.option("--name", default=None, help="Only the runs of this experiment.")
def list_command(root: str, name: Optional[str]) -> None:
    """List runs: experiment, run id, state, trial counts and best metric."""
    from .runs import list_runs
    from .ui.summary import fmt

    rows = list_runs(root, name)
    if not rows:
        click.echo(f"no runs under {root}")
        return
    table = [["experiment", "run", "state", "trials", "finished", "stopped", "failed",
              "best"]]
    for row in rows:
        best = "" if row["best"] is None else f"{row['metric']}={fmt(row['best'])}"
        table.append([row["experiment"], row["run"], row["state"], str(row["trials"]),
                      str(row["finished"]), str(row["early_stopped"]), str(row["failed"]),
                      best])
    click.echo(_columns(table))


@main.command("show")
@click.argument("run")
@click.option("--root", default="maggy_experiments", show_default=True,
              help="Folder that holds the run directories.")
@click.option("--name", default=None, help="Experiment name, when RUN is a bare run id.")
@click.option("--rows", default=50, show_default=True, help="Trials to print at most.")
def show_command(run: str, root: str, name: Optional[str], rows: int) -> None:
    """Print one run's summary and its trials, best first.

    RUN is a run directory, NAME/RUN_ID, a run id, or `latest`."""
    from .runs import find_run, load_result

    result = load_result(find_run(root, run, name))
    _print_result(result, rows)


@main.command("tensorboard")
@click.argument("run")
@click.option("--root", default="maggy_experiments", show_default=True,
              help="Folder that holds the run directories.")
@click.option("--name", default=None, help="Experiment name, when RUN is a bare run id.")
def tensorboard_command(run: str, root: str, name: Optional[str]) -> None:
    """Print the command that opens a run in TensorBoard (its trials' logs and the
    HParams summary).

    RUN is a run directory, NAME/RUN_ID, a run id, or `latest`."""
    from .runs import find_run
    from .tensorboard import how_to_open

    click.echo(how_to_open(find_run(root, run, name)))


# -- helpers ----------------------------------------------------------------------------
def _print_result(result: Any, rows: int = 50) -> None:
    from .ui.summary import summary_text
    from .ui.text import format_table

    click.echo(summary_text(result))
    if result.best_trial:
        click.echo(f"best params: {json.dumps(result.best_params, default=str)}")
    if result.error:
        click.echo(f"error: {result.error}")
    if result.trial_records:
        click.echo(format_table(result.trial_records, result.optimization_key,
                                result.direction, max_rows=rows))
    ablation = result.ablation
    if ablation is not None:
        click.echo("components (difference from the base):")
        click.echo(ablation.to_string(index=False))
    click.echo(f"run directory: {result.run_dir}")


def _report(experiments: List[Dict[str, Any]]) -> int:
    """Print each recorded experiment; the number that failed."""
    from .runs import load_result

    failed = 0
    if not experiments:
        click.echo("the notebook ran no experiment")
    for entry in experiments:
        click.echo("")
        try:
            _print_result(load_result(entry["run_dir"]), rows=20)
        except (OSError, ValueError, KeyError):
            click.echo(f"{entry.get('name')} run {entry.get('run_id')} {entry.get('state')}: "
                       f"{entry['run_dir']}")
        if entry.get("state") == "failed":
            failed += 1
    return failed


def _check_parameters(notebook: str, params: Dict[str, Any]) -> None:
    """Every ``-p NAME`` must be a variable of the notebook's ``parameters`` cell: papermill
    would set any other name in a cell of its own, and the run would go on without it."""
    if not params:
        return
    import ast

    import nbformat

    try:
        cells = nbformat.read(notebook, as_version=4).cells
    except Exception:  # noqa: BLE001 - not a notebook: papermill says so in one line
        return
    tagged = [c for c in cells if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    name = next(iter(params))
    if not tagged:
        raise ConfigError(f"-p {name}: {notebook} has no cell tagged 'parameters'; tag the "
                          "cell that sets the notebook's parameters, or drop -p")
    try:
        tree = ast.parse(tagged[0].source)
    except SyntaxError:
        return  # papermill reports the cell's own error
    known = {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
             if isinstance(target, ast.Name)}
    for name in params:
        if name not in known:
            hint = closest(name, known)
            raise ConfigError(f"-p {name}: the parameters cell of {notebook} sets no variable "
                              f"{name!r}" + (f"; did you mean {hint!r}?" if hint else "")
                              + f" (it sets: {', '.join(sorted(known)) or 'nothing'})")


def _read_record(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _default_output(notebook: str) -> str:
    base, _ = os.path.splitext(notebook)
    return base + ".output.ipynb"


def _write_kernel_spec(scratch: str) -> str:
    """A kernel spec running this Python under ``scratch`` (put on JUPYTER_PATH)."""
    name = "maggy-magic-python"
    folder = os.path.join(scratch, "kernels", name)
    os.makedirs(folder)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (maggy-magic)", "language": "python"}
    with open(os.path.join(folder, "kernel.json"), "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    return name


class _Follow:
    """While the block runs, copy what is appended to ``path`` to stderr (every
    ``FOLLOW_INTERVAL`` s, and what is left at the end); nothing when ``path`` is None."""

    def __init__(self, path: Optional[str]):
        import threading

        self.path, self.offset = path, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="maggy-follow", daemon=True)

    def __enter__(self) -> "_Follow":
        if self.path is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.path is not None:
            self.done.set()
            self.thread.join(10)
            self._copy()

    def _run(self) -> None:
        while not self.done.wait(FOLLOW_INTERVAL):
            self._copy()

    def _copy(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                handle.seek(self.offset)
                text = handle.read()
                self.offset = handle.tell()
        except OSError:
            return
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()


class _environment:
    """Set environment variables for the duration of a block (the kernel inherits them)."""

    def __init__(self, values: Dict[str, str]):
        self.values = values
        self.saved: Dict[str, Optional[str]] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: Any) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _columns(rows: List[List[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in rows)


def entry_point() -> None:
    """Console script: MaggyErrors become one-line messages and exit status 2."""
    try:
        main(standalone_mode=True)
    except MaggyError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    entry_point()
