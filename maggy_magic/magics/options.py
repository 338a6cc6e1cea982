"""The options of the ``%%maggy`` and ``%maggy`` lines: what each one sets and how it reads.

One table (:data:`OPTIONS`) says every option's flags, the config keyword it sets (the
Python API's names: ``--trials`` is ``num_trials``, ``--metric`` is ``optimization_key``...)
and the kind of value it takes. The parser, the help text and ``%maggy config``'s echo of
the session defaults are all made from it, so they cannot disagree. The rules of which
options a kind of experiment takes (:data:`KIND_OPTIONS`), which ones the magic consumes
itself (:data:`MAGIC_OPTIONS`) and which become livy backend options
(:data:`LIVY_OPTIONS`) live here too.

IPython expands ``$name`` and ``{expression}`` in the line before the magic sees it; a
value left as typed means the notebook had no value for it, and is an error rather than
a value. Every mistake is a one-line :class:`~maggy_magic.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import ast
import shlex
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import ConfigError, closest, did_you_mean


class Option:
    """One command-line option: its flags, the config keyword it sets, how to parse it.

    ``kind`` is one of ``int``, ``float``, ``str``, ``identifier`` (a Python name),
    ``choice`` (one of ``choices()``, read lower-case), ``keyvalue`` (repeatable
    ``key=value``, collected into a dict) or ``switch`` (alone: True; ``on``/``off``:
    True/False; any other value as text). ``per_cell`` options name things of one cell
    and cannot be session defaults."""

    def __init__(self, flags: Tuple[str, ...], dest: str, kind: str, help: str,
                 choices: Optional[Callable[[], Any]] = None, per_cell: bool = False):
        self.flags, self.dest, self.kind, self.help = flags, dest, kind, help
        self.choices, self.per_cell = choices, per_cell

    @property
    def name(self) -> str:
        """The option's main flag, the one that messages name."""
        return self.flags[0]


# the choices of some options are registries whose modules are imported only when asked
def _optimizers():
    from ..optimizers import OPTIMIZERS
    return OPTIMIZERS


def _earlystops():
    from ..earlystop import EARLYSTOPS
    return EARLYSTOPS


def _backends():
    from ..backends import BACKENDS
    return BACKENDS


def _ui_modes():
    from ..ui import UI_MODES
    return UI_MODES


def _ablators():
    from ..ablation import ABLATORS
    return ABLATORS


#: Every option, in the order that ``%maggy help`` lists them.
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
    Option(("--time-budget",), "time_budget", "str",
           "end the run gracefully after this long: 90s, 30m, 2h, 1h30m (per session)"),
    Option(("--target",), "target", "float",
           "end the search once a trial's metric reaches this (>= max, <= min)"),
    Option(("--workers",), "workers", "int", "parallel workers (default: CPUs, <= trials)"),
    Option(("--gpus-per-trial",), "gpus_per_trial", "float",
           "GPUs per trial (dist: per rank): 1, 2, ... or 0.5, 0.25 (trials share a GPU)"),
    Option(("--cpus-per-trial",), "cpus_per_trial", "int",
           "CPU cores per trial (dist: per rank); sizes worker thread pools"),
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
    Option(("--driver-host",), "driver_host", "str",
           "address workers reach the driver at (spark: spark.driver.host)"),
    Option(("--driver-bind",), "driver_bind", "str",
           "address the driver listens on (default --driver-host; 0.0.0.0: all)"),
    Option(("--driver-port",), "driver_port", "str",
           "driver's port or range, e.g. 50000 or 50000-50100 (first free one)"),
    Option(("--storage",), "storage", "str",
           "shared storage URI for trial files and checkpoints (file://, hdfs://, s3a://)"),
    Option(("--files-limit-mb",), "files_limit_mb", "float",
           "MiB of files per trial that travel to the driver (default 256)"),
    Option(("--mlflow",), "mlflow", "switch",
           "log to MLflow: --mlflow URI, or --mlflow alone for $MLFLOW_TRACKING_URI "
           "(--mlflow off: not this cell)"),
    Option(("--session",), "livy_session", "str",
           "livy: name of this kernel's sparkmagic session to run on"),
    Option(("--url",), "livy_url", "str", "livy: URL of a Livy server to start a session on"),
    Option(("--auth",), "livy_auth", "choice", "livy: none, basic or kerberos (password: "
           "$MAGGY_LIVY_PASSWORD or sparkmagic's config)", lambda: ("none", "basic", "kerberos")),
    Option(("--user",), "livy_user", "str", "livy: user name for basic auth"),
    Option(("--cell",), "cell", "choice", "livy: where the cell body runs: local (this kernel, "
           "its names shipped) or remote (the Livy session's namespace; the default in "
           "sparkmagic's PySpark kernel)", lambda: ("local", "remote")),
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
#: The words a ``switch`` option reads as on or off.
SWITCH_WORDS = {"on": True, "true": True, "yes": True, "off": False, "false": False,
                "no": False}
#: Options that are not config keywords; the magic consumes them (names of the cell's
#: variables, the output variable, the display, the dist framework).
MAGIC_OPTIONS = ("fn", "space", "study", "output", "ui", "framework", "model", "dataset",
                 "hparams", "cell")
#: Options that become livy backend options (``--session`` is ``session``...).
LIVY_OPTIONS = {"livy_session": "session", "livy_url": "url", "livy_auth": "auth",
                "livy_user": "user"}
#: Options that only one experiment kind takes. Given on the line of another kind they
#: are an error; as session defaults (``%maggy config``) other kinds ignore them.
KIND_OPTIONS = {"hpo": ("num_trials", "optimizer", "optimizer_options", "es_policy",
                        "es_interval", "es_min", "space", "time_budget", "target"),
                "ablation": ("study", "ablator", "time_budget"),
                "dist": ("framework", "model", "dataset", "hparams", "max_restarts")}


def option_for(dest: str) -> Option:
    """The option that sets the config keyword ``dest`` (a key of :func:`parse_options`'s
    result), for messages that name its flag."""
    return _BY_DEST[dest]


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line ConfigError instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}; %maggy help lists the options")


def _parser(prog: str) -> _Parser:
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    for option in OPTIONS:
        action = "append" if option.kind == "keyvalue" else "store"
        more = {"nargs": "?", "const": True} if option.kind == "switch" else {}
        parser.add_argument(*option.flags, dest=option.dest, action=action, default=None,
                            **more)
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
    if option.kind == "switch" and raw is True:
        return True
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
    if option.kind == "switch" and text.lower() in SWITCH_WORDS:
        return SWITCH_WORDS[text.lower()]
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
        elif option.kind == "switch" and isinstance(value, bool):
            words.append(option.name if value else f"{option.name} off")
        else:
            words.append(f"{option.name} {shlex.quote(str(value))}")
    return " ".join(words)


def options_for(kind: str, options: Dict[str, Any], defaults: Dict[str, Any]) -> Dict[str, Any]:
    """The session ``defaults`` overridden by a ``%%maggy kind`` line's ``options``,
    without the options of other experiment kinds (an error when given on this line)."""
    own = set(KIND_OPTIONS.get(kind, ()))
    foreign = {dest for other, dests in KIND_OPTIONS.items() if other != kind
               for dest in dests} - own
    for dest in options:
        if dest in foreign:
            raise ConfigError(f"{_BY_DEST[dest].name} does not apply to %%maggy "
                              f"{kind}; remove it (%maggy help lists the options)")
    defaults = {k: v for k, v in defaults.items() if k not in foreign}
    return {**defaults, **options}


def livy_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """``--session``/``--url``/``--auth``/``--user`` moved into the livy backend options
    (``options`` is changed and returned); an error unless the backend is livy."""
    livy = {key: options.pop(dest) for dest, key in LIVY_OPTIONS.items() if dest in options}
    if livy:
        if str(options.get("backend", "local")).lower() != "livy":
            flag = _BY_DEST[next(d for d in LIVY_OPTIONS if LIVY_OPTIONS[d] in livy)].name
            raise ConfigError(f"{flag} applies to --backend livy; add --backend livy or "
                              f"remove {flag}")
        options["backend_options"] = {**options.get("backend_options", {}), **livy}
    return options


#: The head of ``%maggy help``; the options follow it.
HELP = """\
%%maggy hpo [options]      run the cell's training function as a hyperparameter search
%%maggy ablation [options] run the cell's AblationStudy: the base model and data, then
                           each without one feature, layer, layer group or custom model
%%maggy dist --workers N --framework torch|tf [--model M --dataset D --hparams H]
                           data-parallel training of the cell's training function: one
                           rank per worker, the chief's (rank 0) result is the run's
%maggy list [--root DIR] [--name NAME]   runs with their state and best metric (and
                           the livy runs still going on their sessions)
%maggy show RUN            summary (and dashboard) of a run: a run id, NAME/RUN_ID,
                           'latest' or a run directory
%maggy attach RUN [-o VAR] follow again a run going on a Livy session (after a kernel
                           restart): its live dashboard from the start, then its result
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
    """The text of ``%maggy help``: the commands, then every option with its help."""
    lines = [HELP]
    for option in OPTIONS:
        flags = ", ".join(option.flags)
        lines.append(f"  {flags:<18} {option.help}")
    lines.append("  -h, --help         this text")
    return "\n".join(lines)
