"""The line commands: ``%maggy list|show|stop|config|tensorboard|help``.

Each command is a function of the words after its name (``args``), the session defaults
that ``%maggy config`` keeps (``defaults``, changed in place) and the drivers of the runs
in progress by run id (``running``), all held by the shell's
:class:`~maggy_magic.magics.MaggyMagics`. Runs are found and read by :mod:`maggy_magic.runs`;
a command prints what it has to say and returns what the notebook shows (a table, a
result) or None.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import runs
from ..errors import ConfigError
from .options import format_options, help_text, option_for, parse_options

#: A line command: ``(args, defaults, running)`` to what the cell shows.
LineCommand = Callable[[List[str], Dict[str, Any], Dict[str, Any]], Any]


def config(args: List[str], defaults: Dict[str, Any], running: Dict[str, Any]) -> None:
    """``%maggy config [options]``: add to the session defaults and show them;
    ``--reset`` clears them. Options that name things of one cell are refused."""
    if args == ["--reset"]:
        defaults.clear()
        print("maggy-magic: session defaults cleared")
        return
    options = parse_options(args, "%maggy config")
    if options.pop("help", False):
        print(help_text())
        return
    for dest in options:
        if option_for(dest).per_cell:
            raise ConfigError(f"{option_for(dest).name} applies to one cell; put it on the "
                              "%%maggy line")
    defaults.update(options)
    shown = format_options(defaults) or "(none)"
    print(f"maggy-magic session defaults: {shown}")


def stop(args: List[str], defaults: Dict[str, Any], running: Dict[str, Any]) -> None:
    """``%maggy stop``: ask every run in progress in this kernel to stop gracefully."""
    if _asked_for_help(args):
        return
    if args:
        raise ConfigError(f"%maggy stop takes no arguments, got {' '.join(args)!r}")
    if not running:
        print("maggy-magic: no experiment is running in this kernel (while a %%maggy cell "
              "runs, use the dashboard's Stop button or interrupt the kernel)")
        return
    for run_id, driver in list(running.items()):
        driver.request_stop("stopped with %maggy stop")
        print(f"maggy-magic: stopping run {run_id}")


def list_runs(args: List[str], defaults: Dict[str, Any], running: Dict[str, Any]) -> Any:
    """``%maggy list [--root DIR] [--name NAME]``: the table of runs, or None if none."""
    if _asked_for_help(args):
        return None
    root, name = root_and_name(args, defaults, "%maggy list")
    table = runs.runs_table(root, name, running=set(running))
    if table is None:
        print(f"maggy-magic: no runs under {root}")
    _print_cluster_runs(runs.run_dirs(root, name), defaults, running)
    return table


def livy_credentials(defaults: Dict[str, Any]) -> Dict[str, Any]:
    """The livy settings that ``%maggy config`` gave (auth kind, user, conf file): what
    reaching a recorded run's Livy server again needs, besides its URL."""
    options = {k: v for k, v in (defaults.get("backend_options") or {}).items()
               if k in ("auth", "user", "conf_file", "statement_timeout", "password_env")}
    for dest, key in (("livy_auth", "auth"), ("livy_user", "user")):
        if defaults.get(dest):
            options[key] = defaults[dest]
    return options


def _print_cluster_runs(paths: List[str], defaults: Dict[str, Any],
                        running: Dict[str, Any]) -> None:
    """The runs still going on Livy sessions that unfinished local records name."""
    from ..backends.livy.listing import cluster_runs, unfinished_livy_runs

    paths = [p for p in paths if os.path.basename(p) not in running]
    if not unfinished_livy_runs(paths):
        return
    from ..backends.livy.settings import LivySettings

    for row in cluster_runs(paths, LivySettings(**livy_credentials(defaults))):
        if "error" in row:
            print(f"maggy-magic: {row['session']} did not answer about run(s) "
                  f"{', '.join(row['runs'])}: {row['error']}")
        elif row.get("going"):
            print(f"maggy-magic: run {row['run_id']} ({row['name']}) is going on "
                  f"{row['session']}: {row['finished']} trial(s) finished; "
                  f"%maggy attach {row['run_id']} follows it")
        else:
            print(f"maggy-magic: run {row['run_id']} ({row['name']}) ended on "
                  f"{row['session']} while nothing followed it; %maggy attach "
                  f"{row['run_id']} takes its result")


def show(args: List[str], defaults: Dict[str, Any], running: Dict[str, Any]) -> Any:
    """``%maggy show RUN``: replay a run's dashboard and return its result (the summary)."""
    from .. import ui

    if _asked_for_help(args):
        return None
    ref, rest = run_ref(args)
    if ref is None:
        raise ConfigError("%maggy show needs a run: a run id, NAME/RUN_ID, 'latest' or a "
                          "run directory (%maggy list shows them)")
    root, name = root_and_name(rest, defaults, "%maggy show")
    path = runs.find_run(root, ref, name)
    result = runs.load_result(path, running=set(running))
    ui.replay(path, f"{result.name} {result.run_id}")
    return result


def tensorboard(args: List[str], defaults: Dict[str, Any], running: Dict[str, Any]) -> None:
    """``%maggy tensorboard RUN``: print the command that opens the run in TensorBoard."""
    from ..tensorboard import how_to_open

    if _asked_for_help(args):
        return
    ref, rest = run_ref(args)
    if ref is None:
        raise ConfigError("%maggy tensorboard needs a run: a run id, NAME/RUN_ID, 'latest' "
                          "or a run directory (%maggy list shows them)")
    root, name = root_and_name(rest, defaults, "%maggy tensorboard")
    print(how_to_open(runs.find_run(root, ref, name)))


def show_help(args: List[str], defaults: Dict[str, Any], running: Dict[str, Any]) -> None:
    """``%maggy help``: print the help text (any words after it are ignored)."""
    print(help_text())


def _asked_for_help(args: List[str]) -> bool:
    """``-h``/``--help`` anywhere among ``args``: print the help text instead of running."""
    if "-h" in args or "--help" in args:
        print(help_text())
        return True
    return False


def run_ref(args: List[str]) -> Tuple[Optional[str], List[str]]:
    """The run reference (the first word unless it is an option) and the words after it."""
    if args and not args[0].startswith("-"):
        return args[0], args[1:]
    return None, args


def root_and_name(args: List[str], defaults: Dict[str, Any],
                   prog: str) -> Tuple[str, Optional[str]]:
    options = parse_options(args, prog)
    unknown = set(options) - {"root", "name"}
    if unknown:
        raise ConfigError(f"{prog} takes only --root and --name, got "
                          f"{option_for(sorted(unknown)[0]).name}")
    root = options.get("root") or defaults.get("root") or "maggy_experiments"
    return root, options.get("name")


#: The line subcommands (``%maggy list``...) and the function of each.
LINE_COMMANDS: Dict[str, LineCommand] = {
    "list": list_runs, "show": show, "stop": stop, "help": show_help, "config": config,
    "tensorboard": tensorboard}
