"""The IPython magics: ``%%maggy hpo|ablation|dist [options]`` and ``%maggy ...``.

IPython glue only: split the line, dispatch to the experiment builder of a cell
(:mod:`.cells`) or to a line command (:mod:`.commands`), run the experiment with a live
display (:mod:`maggy_magic.ui`), bind ``-o VAR`` and return the result.

Options follow the Python API's names (``--trials`` is ``num_trials``, ``--metric`` is
``optimization_key``...; ``%maggy help`` lists them, :mod:`.options` reads them). IPython
expands ``$name`` and ``{expression}`` in the line before the magic sees it, so every
option can take a notebook variable, and a papermill parameters cell drives the run.
Mistakes give a one-line :class:`~maggy_magic.errors.MaggyError` that names the closest
valid choice; the notebook shows such errors as one line instead of a traceback.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional

from IPython.core.magic import Magics, line_cell_magic, magics_class

from ..cell_builders import CELL_COMMANDS
from ..errors import ConfigError, ExperimentInterrupted, MaggyError, did_you_mean
from .commands import LINE_COMMANDS
from .options import (
    MAGIC_OPTIONS,
    help_text,
    livy_options,
    option_for,
    options_for,
    parse_options,
)
from .remote_cells import line_config, runs_remote


def run(*args: Any, **kwargs: Any) -> Any:
    """:func:`maggy_magic.experiment.run`, imported when a cell runs."""
    from ..experiment import run as run_experiment

    return run_experiment(*args, **kwargs)


@magics_class
class MaggyMagics(Magics):
    """``%%maggy`` and ``%maggy``. One instance per shell holds the session defaults
    (``%maggy config``) and the drivers of runs in progress (``%maggy stop``).

    A run's live display is closed (its final state pushed, its threads ended) when the
    run ends; the static summary is the cell's last output."""

    def __init__(self, shell: Any):
        super().__init__(shell)
        self.defaults: Dict[str, Any] = {}
        self.running: Dict[str, Any] = {}

    @line_cell_magic
    def maggy(self, line: str, cell: Optional[str] = None) -> Any:
        """Run a notebook's training function as parallel trials; ``%maggy help``."""
        try:
            try:
                tokens = shlex.split(line)
            except ValueError as exc:
                raise ConfigError(f"cannot read the options ({exc}); check the quotes") \
                    from None
            command, args = (tokens[0], tokens[1:]) if tokens else ("", [])
            if cell is None:
                return self._line(command, args)
            return self._cell(command, args, cell)
        except MaggyError as exc:
            _show_one_line(exc)
            raise

    # -- %%maggy --------------------------------------------------------------------------
    def _cell(self, command: str, args: List[str], cell: str) -> Any:
        if command not in CELL_COMMANDS:
            if command in LINE_COMMANDS:
                raise ConfigError(f"{command} is a line magic: use %maggy {command} (one %)")
            what = f"unknown experiment {command!r}" if command and not \
                command.startswith("-") else "say which experiment first"
            raise ConfigError(f"{what}: %%maggy hpo|ablation|dist [options]; "
                              f"{did_you_mean(command.lstrip('-'), CELL_COMMANDS)}")
        options = parse_options(args, f"%%maggy {command}")
        if options.pop("help", False):
            print(help_text())
            return None
        options = options_for(command, options, self.defaults)
        magic = {key: options.pop(key) for key in MAGIC_OPTIONS if key in options}
        if runs_remote(self.shell, magic.pop("cell", None), options):
            return self._run_remote(command, livy_options(options), magic, cell)
        options = livy_options(options)
        config, train_fn = CELL_COMMANDS[command](self.shell, options, magic, cell)
        return self._run(config, magic, lambda listeners, on_driver, wait: run(
            train_fn, config, listeners=listeners, on_driver=on_driver, wait=wait,
            source=cell))

    def _run_remote(self, command: str, options: Dict[str, Any], magic: Dict[str, Any],
                    cell: str) -> Any:
        """The cell's body, its names and the experiment all on the Livy session."""
        from ..backends import get_backend

        config = line_config(command, options, magic)
        backend = get_backend("livy", **config.backend_options)
        return self._run(config, magic, lambda listeners, on_driver, wait: backend.run_cell(
            config, magic, cell, listeners=listeners, on_driver=on_driver, wait=wait))

    def _run(self, config: Any, magic: Dict[str, Any], start: Callable[..., Any]) -> Any:
        """Run the experiment (``start(listeners, on_driver, wait)``) with a live display;
        bind and return its result."""
        from .. import ui

        drivers: List[Any] = []

        def stop() -> None:
            for driver in drivers:
                driver.request_stop("stopped from the dashboard")

        display = ui.live_display(config.name, stop, magic.get("ui", "auto"))

        def on_driver(driver: Any, backend: Any) -> None:
            drivers.append(driver)
            self.running[driver.events.run_id] = driver
            try:
                display.show()
            except Exception as exc:  # noqa: BLE001 - a display must not stop the run
                print(f"maggy-magic: the live display failed ({type(exc).__name__}: {exc}); "
                      "the run goes on", file=sys.stderr)

        try:
            try:
                result = start([display], on_driver, display.wait)
            finally:
                for driver in drivers:
                    self.running.pop(driver.events.run_id, None)
                display.close()
        except MaggyError as exc:
            result = getattr(exc, "result", None)
            if result is None:
                raise
            # a failed or interrupted run still leaves its partial summary
            self._bind(magic.get("output"), result)
            ui.finish(display, result)
            _display(result)
            if isinstance(exc, ExperimentInterrupted):
                raise interrupted_hint(exc) from None
            raise
        self._bind(magic.get("output"), result)
        ui.finish(display, result)
        return result  # the displayhook shows its static summary (text/html)

    def _bind(self, name: Optional[str], value: Any) -> None:
        if name:
            self.shell.user_ns[name] = value

    # -- %maggy ---------------------------------------------------------------------------
    def _line(self, command: str, args: List[str]) -> Any:
        if command in CELL_COMMANDS:
            raise ConfigError(f"{command} is a cell magic: start the cell with "
                              f"%%maggy {command} and define the training function in it")
        if command in ("", "-h", "--help"):
            command = "help"
        if command == "attach":
            return self._attach(args)
        if command not in LINE_COMMANDS:
            raise ConfigError(f"unknown %maggy command {command!r}; "
                              f"{did_you_mean(command, [*LINE_COMMANDS, 'attach'])}")
        return LINE_COMMANDS[command](args, self.defaults, self.running)

    def _attach(self, args: List[str]) -> Any:
        """``%maggy attach RUN [--root DIR] [--name NAME] [-o VAR] [--ui MODE]``: follow a
        run that goes on in a Livy session again (its kernel restarted), with a live
        dashboard replayed from its start; return its result."""
        from .. import runs
        from ..backends.livy.backend import LivyBackend
        from .commands import livy_credentials, run_ref

        ref, rest = run_ref(args)
        if ref is None:
            raise ConfigError("%maggy attach needs a run: a run id, NAME/RUN_ID or 'latest' "
                              "(%maggy list shows the runs going on a cluster)")
        options = parse_options(rest, "%maggy attach")
        unknown = sorted(set(options) - {"root", "name", "output", "ui"})
        if unknown:
            raise ConfigError(f"%maggy attach takes only --root, --name, -o and --ui, got "
                              f"{option_for(unknown[0]).name}")
        root = options.get("root") or self.defaults.get("root") or "maggy_experiments"
        path = runs.find_run(root, ref, options.get("name"))
        magic = {key: options[key] for key in ("output", "ui") if key in options}
        backend = LivyBackend(**livy_credentials(self.defaults))
        shown = type("Attached", (), {"name": os.path.basename(os.path.dirname(path))})
        return self._run(shown, magic, lambda listeners, on_driver, wait: backend.attach(
            path, listeners=listeners, on_driver=on_driver, wait=wait))

    def close(self) -> None:
        """Stop the runs in progress (the extension is being unloaded)."""
        for driver in list(self.running.values()):
            driver.request_stop("the extension was unloaded")


def _display(result: Any) -> None:
    from IPython.display import display

    display(result)


def _show_one_line(exc: BaseException) -> None:
    """Make IPython show ``exc`` as one line (``ConfigError: message``), no traceback."""
    line = f"{type(exc).__name__}: {exc}"
    try:
        exc._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    except AttributeError:
        pass


def interrupted_hint(exc: ExperimentInterrupted) -> ExperimentInterrupted:
    """The interrupt error with the magic's resume hint (``--resume RUN``)."""
    result = exc.result
    if result is None or "resume with resume=" not in str(exc):
        return exc  # a run that cannot be resumed (dist, livy) keeps its own message
    done = result.num_finished + result.num_early_stopped
    return ExperimentInterrupted(
        f"experiment interrupted after {done} ended trial(s); run the cell again with "
        f"--resume {result.run_id} to run the rest ({result.run_dir})", result)


__all__ = ["MaggyMagics", "interrupted_hint"]
