"""The IPython magics: ``%%maggy hpo|ablation|dist [options]`` and ``%maggy ...``.

IPython glue only: parse the line, run the cell body (:mod:`.capture`), build the
experiment config, run it with a live display (:mod:`.ui`) and return the result.

Options follow the Python API's names (``--trials`` is ``num_trials``, ``--metric`` is
``optimization_key``...; ``%maggy help`` lists them). IPython expands ``$name`` and
``{expression}`` in the line before this module sees it, so every option can take a
notebook variable, and a papermill parameters cell drives the run. Mistakes give a
one-line :class:`~maggy_magic.errors.MaggyError` that names the closest valid choice; the
notebook shows such errors as one line instead of a traceback.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from IPython.core.magic import Magics, line_cell_magic, magics_class

from . import runs
from .errors import ConfigError, ExperimentInterrupted, MaggyError, closest, did_you_mean

#: Cell subcommands and whether they exist yet.
CELL_COMMANDS = {"hpo": True, "ablation": True, "dist": True}
#: Line subcommands.
LINE_COMMANDS = ("list", "show", "stop", "help", "config", "tensorboard")


class Option:
    """One command-line option: its flags, the config keyword it sets, how to parse it."""

    def __init__(self, flags: Tuple[str, ...], dest: str, kind: str, help: str,
                 choices: Optional[Callable[[], Any]] = None, per_cell: bool = False):
        self.flags, self.dest, self.kind, self.help = flags, dest, kind, help
        self.choices, self.per_cell = choices, per_cell

    @property
    def name(self) -> str:
        return self.flags[0]


def _optimizers():
    from .optimizers import OPTIMIZERS
    return OPTIMIZERS


def _earlystops():
    from .earlystop import EARLYSTOPS
    return EARLYSTOPS


def _backends():
    from .backends import BACKENDS
    return BACKENDS


def _ui_modes():
    from .ui import UI_MODES
    return UI_MODES


def _ablators():
    from .ablation import ABLATORS
    return ABLATORS


OPTIONS: List[Option] = [
    Option(("--trials",), "num_trials", "int", "number of trials (num_trials)"),
    Option(("--optimizer",), "optimizer", "choice",
           "randomsearch, gridsearch, asha, hyperband, bohb, de, tpe, gp, none",
           _optimizers),
    Option(("--metric",), "optimization_key", "str",
           "key of the returned dict to optimize (optimization_key)"),
    Option(("--direction",), "direction", "choice", "max or min",
           lambda: ("max", "min")),
    Option(("--es-policy",), "es_policy", "choice", "early stopping: median or none",
           _earlystops),
    Option(("--es-interval",), "es_interval", "float", "seconds between early-stop checks"),
    Option(("--es-min",), "es_min", "int", "finished trials before early stopping starts"),
    Option(("--workers",), "workers", "int", "parallel workers (default: CPUs, <= trials)"),
    Option(("--backend",), "backend", "choice", "where trials run: local, spark or livy",
           _backends),
    Option(("--name",), "name", "str", "experiment name (its folder under --root)"),
    Option(("--description",), "description", "str", "free text kept with the run"),
    Option(("--resume",), "resume", "str", "run id (or 'latest') of a run to continue",
           per_cell=True),
    Option(("--seed",), "seed", "int", "random seed of the optimizer"),
    Option(("--max-failures",), "max_failures", "int", "failed trials tolerated"),
    Option(("--max-retries",), "max_retries", "int", "re-runs of a trial whose worker died"),
    Option(("--hb-interval",), "hb_interval", "float", "seconds between worker heartbeats"),
    Option(("--hb-timeout",), "hb_timeout", "float", "silence before a worker is lost"),
    Option(("--root",), "root", "str", "folder of run directories (maggy_experiments)"),
    Option(("--opt",), "optimizer_options", "keyvalue",
           "optimizer option key=value (repeatable), e.g. --opt reduction_factor=3"),
    Option(("--backend-opt",), "backend_options", "keyvalue",
           "backend option key=value (repeatable)"),
    Option(("--session",), "livy_session", "str",
           "livy: name of this kernel's sparkmagic session to run on"),
    Option(("--url",), "livy_url", "str", "livy: URL of a Livy server to start a session on"),
    Option(("--auth",), "livy_auth", "choice", "livy: none, basic or kerberos (password: "
           "$MAGGY_LIVY_PASSWORD or sparkmagic's config)", lambda: ("none", "basic", "kerberos")),
    Option(("--user",), "livy_user", "str", "livy: user name for basic auth"),
    Option(("--fn",), "fn", "identifier", "name of the training function", per_cell=True),
    Option(("--space",), "space", "identifier", "name of the Searchspace", per_cell=True),
    Option(("--study",), "study", "identifier", "name of the AblationStudy (ablation)",
           per_cell=True),
    Option(("--ablator",), "ablator", "choice", "ablation policy: loco", _ablators),
    Option(("--framework",), "framework", "choice", "dist: torch or tf",
           lambda: ("torch", "tf")),
    Option(("--model", "--module"), "model", "identifier",
           "dist: name of the model/module (default: model or module)", per_cell=True),
    Option(("--dataset",), "dataset", "identifier",
           "dist: name of the dataset (default: dataset)", per_cell=True),
    Option(("--hparams",), "hparams", "identifier",
           "dist: name of the hyperparameter dict (default: hparams, if defined)",
           per_cell=True),
    Option(("--max-restarts",), "max_restarts", "int",
           "dist: restarts of the gang from the chief's last checkpoint"),
    Option(("-o", "--output"), "output", "identifier",
           "notebook variable that receives the result", per_cell=True),
    Option(("--ui",), "ui", "choice", "auto (dashboard if widgets work), widget, text, or "
           "papermill (both)",
           _ui_modes),
]
_BY_DEST = {o.dest: o for o in OPTIONS}
#: Options that are not config keywords; the magic consumes them.
_MAGIC_ONLY = ("fn", "space", "study", "output", "ui", "framework", "model", "dataset",
               "hparams")
#: Options that become livy backend options (``--session`` is ``session``...).
_LIVY = {"livy_session": "session", "livy_url": "url", "livy_auth": "auth",
         "livy_user": "user"}
#: Options that only one experiment kind takes. Given on the line of another kind they
#: are an error; as session defaults (``%maggy config``) other kinds ignore them.
_ONLY = {"hpo": ("num_trials", "optimizer", "optimizer_options", "es_policy", "es_interval",
                 "es_min", "space"),
         "ablation": ("study", "ablator"),
         "dist": ("framework", "model", "dataset", "hparams", "max_restarts")}


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line ConfigError instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}; %maggy help lists the options")


def _parser(prog: str) -> _Parser:
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    for option in OPTIONS:
        action = "append" if option.kind == "keyvalue" else "store"
        parser.add_argument(*option.flags, dest=option.dest, action=action, default=None)
    parser.add_argument("-h", "--help", dest="help", action="store_true")
    return parser


def parse_options(tokens: List[str], prog: str) -> Dict[str, Any]:
    """The options in ``tokens`` as config keywords (only those given), converted and
    checked; ``help=True`` when asked for help. Raises :class:`ConfigError`."""
    parser = _parser(prog)
    namespace, extra = parser.parse_known_args(tokens)
    if extra:
        word = extra[0]
        if word.startswith("-"):
            flags = [f for o in OPTIONS for f in o.flags if f.startswith("--")]
            hint = closest(word.split("=")[0], flags)
            raise ConfigError(f"unknown option {word!r} for {prog}"
                              + (f"; did you mean {hint!r}?" if hint else "")
                              + " (%maggy help lists the options)")
        raise ConfigError(f"unexpected argument {word!r} for {prog}; options take the form "
                          "--name value (%maggy help lists them)")
    options: Dict[str, Any] = {}
    for dest, raw in vars(namespace).items():
        if dest == "help":
            if raw:
                options["help"] = True
        elif raw is not None:
            options[dest] = _convert(_BY_DEST[dest], raw)
    return options


def _convert(option: Option, raw: Any) -> Any:
    flag = option.name
    if option.kind == "keyvalue":
        return dict(_key_value(flag, item) for item in raw)
    text = str(raw).strip()
    _check_expanded(flag, text)
    if option.kind == "int":
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None or not number.is_integer():
            raise ConfigError(f"{flag} takes a whole number, got {text!r}")
        return int(number)
    if option.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{flag} takes a number, got {text!r}") from None
    if option.kind == "identifier":
        if not text.isidentifier():
            raise ConfigError(f"{flag} takes a Python name, got {text!r}")
        return text
    if option.kind == "choice":
        choices = [str(c) for c in option.choices()]
        if text.lower() not in choices:
            raise ConfigError(f"unknown {flag} value {text!r}; "
                              f"{did_you_mean(text.lower(), choices)}")
        return text.lower()
    return text


def _check_expanded(flag: str, text: str) -> None:
    """IPython leaves the whole line as typed when a ``$name`` or ``{expression}`` in it
    cannot be evaluated; say so instead of using the text as a value."""
    if (text.startswith("$") and text[1:].isidentifier()) or \
            (text.startswith("{") and text.endswith("}")):
        raise ConfigError(f"{flag} {text}: the notebook has no value for it (every $name and "
                          "{expression} on the line must evaluate); define it before this cell")


def _key_value(flag: str, item: str) -> Tuple[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip()
    _check_expanded(flag, value.strip())
    if not sep or not key.isidentifier():
        raise ConfigError(f"{flag} takes key=value (e.g. {flag} reduction_factor=3), "
                          f"got {item!r}")
    try:
        return key, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key, value.strip()


def format_options(options: Dict[str, Any]) -> str:
    """Options back as a command line (``%maggy config`` shows the session defaults)."""
    words = []
    for dest, value in options.items():
        option = _BY_DEST[dest]
        if option.kind == "keyvalue":
            words += [f"{option.name} {k}={v!r}" for k, v in value.items()]
        else:
            words.append(f"{option.name} {shlex.quote(str(value))}")
    return " ".join(words)


HELP = """\
%%maggy hpo [options]      run the cell's training function as a hyperparameter search
%%maggy ablation [options] run the cell's AblationStudy: the base model and data, then
                           each without one feature, layer, layer group or custom model
%%maggy dist --workers N --framework torch|tf [--model M --dataset D --hparams H]
                           data-parallel training of the cell's training function: one
                           rank per worker, the chief's (rank 0) result is the run's
%maggy list [--root DIR] [--name NAME]   runs with their state and best metric
%maggy show RUN            summary (and dashboard) of a run: a run id, NAME/RUN_ID,
                           'latest' or a run directory
%maggy tensorboard RUN     the command that opens a run in TensorBoard (trials' logs
                           from tensorboard.logdir() and the HParams summary)
%maggy stop                stop the run in progress gracefully
%maggy config [options]    session defaults for every %%maggy cell; --reset clears them
%maggy help                this text

The cell defines the training function (arguments injected by name: the hyperparameters,
reporter, hparams, budget) and a Searchspace (hpo), or an AblationStudy and a training
function taking model_function / dataset_function (or model / dataset) and reporter
(ablation); functions and constants from earlier cells travel with it. The cell
returns the result (also bound with -o VAR). While a cell runs, stop it with the
dashboard's Stop button or the kernel's interrupt (resumable with --resume RUN_ID).

Options ($var and {expression} take notebook values):
"""


def help_text() -> str:
    lines = [HELP]
    for option in OPTIONS:
        flags = ", ".join(option.flags)
        lines.append(f"  {flags:<18} {option.help}")
    lines.append("  -h, --help         this text")
    return "\n".join(lines)


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
        if not CELL_COMMANDS[command]:
            raise MaggyError(f"%%maggy {command} is not available yet; use %%maggy hpo or "
                             "%%maggy ablation")
        options = parse_options(args, f"%%maggy {command}")
        if options.pop("help", False):
            print(help_text())
            return None
        options = _livy_options(self._options_for(command, options))
        magic = {key: options.pop(key) for key in _MAGIC_ONLY if key in options}
        return getattr(self, f"_{command}")(options, magic, cell)

    def _options_for(self, command: str, options: Dict[str, Any]) -> Dict[str, Any]:
        """The session defaults overridden by ``options``, without the options of other
        experiment kinds (an error when given on this line)."""
        own = set(_ONLY.get(command, ()))
        foreign = {dest for kind, dests in _ONLY.items() if kind != command
                   for dest in dests} - own
        for dest in options:
            if dest in foreign:
                raise ConfigError(f"{_BY_DEST[dest].name} does not apply to %%maggy "
                                  f"{command}; remove it (%maggy help lists the options)")
        defaults = {k: v for k, v in self.defaults.items() if k not in foreign}
        return {**defaults, **options}

    def _hpo(self, options: Dict[str, Any], magic: Dict[str, Any], cell: str) -> Any:
        from . import capture
        from .config import HyperparameterOptConfig
        from .optimizers import get_optimizer
        from .optimizers.singlerun import SingleRun
        from .trainfn import check_signature

        config = HyperparameterOptConfig(**options)
        config.validate()  # option mistakes surface before the cell body runs
        optimizer = get_optimizer(config.optimizer, **config.optimizer_options)

        namespace = self.shell.user_ns
        captured = capture.run_cell(self.shell, cell)
        config.searchspace = capture.find_searchspace(
            captured, namespace, magic.get("space"),
            required=not isinstance(optimizer, SingleRun))
        names = list(config.searchspace.keys())
        conditional = config.searchspace.conditional_names()
        train_fn = capture.find_train_fn(
            captured, namespace, magic.get("fn"),
            lambda fn: check_signature(fn, names, budget=optimizer.uses_budget,
                                       conditional=conditional))
        check_signature(train_fn, names, budget=optimizer.uses_budget, conditional=conditional)
        return self._run(config, train_fn, magic, cell)

    def _ablation(self, options: Dict[str, Any], magic: Dict[str, Any], cell: str) -> Any:
        from . import capture
        from .ablation.runner import check_train_fn
        from .config import AblationConfig

        config = AblationConfig(**options)
        config.validate_options()  # option mistakes surface before the cell body runs

        namespace = self.shell.user_ns
        captured = capture.run_cell(self.shell, cell)
        study = capture.find_study(captured, namespace, magic.get("study"))
        config.ablation_study = study
        train_fn = capture.find_train_fn(
            captured, namespace, magic.get("fn"), lambda fn: check_train_fn(fn, study),
            exclude=study.generators())
        return self._run(config, train_fn, magic, cell)

    def _dist(self, options: Dict[str, Any], magic: Dict[str, Any], cell: str) -> Any:
        from . import capture
        from .distributed.config import TfDistributedConfig, TorchDistributedConfig
        from .distributed.runner import INJECTED
        from .trainfn import check_signature

        classes = {"torch": TorchDistributedConfig, "tf": TfDistributedConfig}
        framework = magic.get("framework") or "torch"
        if framework not in classes:
            raise ConfigError(f"unknown framework {framework!r}; "
                              f"{did_you_mean(framework, classes)}")
        namespace = self.shell.user_ns
        captured = capture.run_cell(self.shell, cell)
        # a TensorFlow training function may build its model and load its data itself
        own = framework == "tf"
        model = _variable(namespace, magic.get("model"), ("model", "module"), "--model",
                          required=not own)
        dataset = _variable(namespace, magic.get("dataset"), ("dataset",), "--dataset",
                            required=not own)
        hparams = _variable(namespace, magic.get("hparams"), ("hparams",), "--hparams",
                            required=False)
        config = classes[framework](model, dataset, hparams, **options)
        config.validate()
        names = list(config.hparams)
        train_fn = capture.find_train_fn(
            captured, namespace, magic.get("fn"),
            lambda fn: check_signature(fn, names, extras=INJECTED),
            exclude=[model] if callable(model) and not isinstance(model, type) else [])
        return self._run(config, train_fn, magic, cell)

    def _run(self, config: Any, train_fn: Any, magic: Dict[str, Any], cell: str) -> Any:
        """Run the experiment with a live display; bind and return its result."""
        from . import ui
        from .experiment import run

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
                result = run(train_fn, config, listeners=[display], on_driver=on_driver,
                             wait=display.wait, source=cell)
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
        if command in ("", "help", "-h", "--help"):
            print(help_text())
            return None
        if command not in LINE_COMMANDS:
            raise ConfigError(f"unknown %maggy command {command!r}; "
                              f"{did_you_mean(command, LINE_COMMANDS)}")
        return getattr(self, f"_{command}")(args)

    def _config(self, args: List[str]) -> None:
        if args == ["--reset"]:
            self.defaults = {}
            print("maggy-magic: session defaults cleared")
            return
        options = parse_options(args, "%maggy config")
        if options.pop("help", False):
            print(help_text())
            return
        for dest in options:
            if _BY_DEST[dest].per_cell:
                raise ConfigError(f"{_BY_DEST[dest].name} applies to one cell; put it on the "
                                  "%%maggy line")
        self.defaults.update(options)
        shown = format_options(self.defaults) or "(none)"
        print(f"maggy-magic session defaults: {shown}")

    def _stop(self, args: List[str]) -> None:
        if args:
            raise ConfigError(f"%maggy stop takes no arguments, got {' '.join(args)!r}")
        if not self.running:
            print("maggy-magic: no experiment is running in this kernel (while a %%maggy cell "
                  "runs, use the dashboard's Stop button or interrupt the kernel)")
            return
        for run_id, driver in list(self.running.items()):
            driver.request_stop("stopped with %maggy stop")
            print(f"maggy-magic: stopping run {run_id}")

    def _list(self, args: List[str]) -> Any:
        root, name = self._root_and_name(args, "%maggy list")
        table = runs.runs_table(root, name, running=set(self.running))
        if table is None:
            print(f"maggy-magic: no runs under {root}")
        return table

    def _show(self, args: List[str]) -> Any:
        from . import ui

        ref, rest = (args[0], args[1:]) if args and not args[0].startswith("-") else \
            (None, args)
        if ref is None:
            raise ConfigError("%maggy show needs a run: a run id, NAME/RUN_ID, 'latest' or a "
                              "run directory (%maggy list shows them)")
        root, name = self._root_and_name(rest, "%maggy show")
        path = runs.find_run(root, ref, name)
        result = runs.load_result(path, running=set(self.running))
        ui.replay(path, f"{result.name} {result.run_id}")
        return result

    def _tensorboard(self, args: List[str]) -> None:
        from .tensorboard import how_to_open

        ref, rest = (args[0], args[1:]) if args and not args[0].startswith("-") else \
            (None, args)
        if ref is None:
            raise ConfigError("%maggy tensorboard needs a run: a run id, NAME/RUN_ID, 'latest' "
                              "or a run directory (%maggy list shows them)")
        root, name = self._root_and_name(rest, "%maggy tensorboard")
        print(how_to_open(runs.find_run(root, ref, name)))

    def _root_and_name(self, args: List[str], prog: str) -> Tuple[str, Optional[str]]:
        options = parse_options(args, prog)
        unknown = set(options) - {"root", "name"}
        if unknown:
            raise ConfigError(f"{prog} takes only --root and --name, got "
                              f"{_BY_DEST[sorted(unknown)[0]].name}")
        root = options.get("root") or self.defaults.get("root") or "maggy_experiments"
        return root, options.get("name")

    def close(self) -> None:
        """Stop the runs in progress (the extension is being unloaded)."""
        for driver in list(self.running.values()):
            driver.request_stop("the extension was unloaded")


def _livy_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """``--session``/``--url``/``--auth``/``--user`` moved into the livy backend options."""
    livy = {key: options.pop(dest) for dest, key in _LIVY.items() if dest in options}
    if livy:
        if str(options.get("backend", "local")).lower() != "livy":
            flag = _BY_DEST[next(d for d in _LIVY if _LIVY[d] in livy)].name
            raise ConfigError(f"{flag} applies to --backend livy; add --backend livy or "
                              f"remove {flag}")
        options["backend_options"] = {**options.get("backend_options", {}), **livy}
    return options


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


__all__ = ["MaggyMagics", "OPTIONS", "parse_options", "help_text"]


def _variable(namespace: Dict[str, Any], name: Optional[str], defaults: tuple, flag: str,
              required: bool = True) -> Any:
    """The notebook variable ``name`` (or the first of ``defaults`` that exists)."""
    if name:
        if name not in namespace:
            raise ConfigError(f"{flag} {name!r} is not defined in the notebook; define it "
                              "in the cell or pass the right name")
        return namespace[name]
    for default in defaults:
        if default in namespace:
            return namespace[default]
    if not required:
        return None
    raise ConfigError(f"%%maggy dist needs a variable {' or '.join(defaults)} (or "
                      f"{flag} NAME) defined in the notebook")
