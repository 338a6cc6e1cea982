"""Building an experiment from a ``%%maggy hpo|ablation|dist`` cell.

Each builder checks the options first (mistakes surface before the cell body runs), runs
the body in the notebook (:func:`maggy_magic.capture.run_cell`), finds what the
experiment needs among the names the cell defined or the notebook already had (the
training function, the Searchspace, the AblationStudy, the dist model and dataset), checks
the training function against it and returns ``(config, train_fn)``. Running it is the
magic's job (:class:`maggy_magic.magics.MaggyMagics`).

Builders are plain functions of the shell, the config keywords of the line (``options``,
see :mod:`.options`), the options the magic consumes (``magic``: ``fn``, ``space``...) and
the cell's source; the frameworks and configs they need are imported when they run.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from .errors import ConfigError

#: What a builder returns: the experiment's config and the training function.
Experiment = Tuple[Any, Callable[..., Any]]


def build_hpo(shell: Any, options: Dict[str, Any], magic: Dict[str, Any],
              cell: str) -> Experiment:
    """A hyperparameter search: the cell's Searchspace (``--space``; none needed by an
    optimizer that runs once) and training function (``--fn``) taking its names."""
    from . import capture
    from .config import HyperparameterOptConfig
    from .optimizers import get_optimizer
    from .optimizers.singlerun import SingleRun
    from .trainfn import check_signature

    config = HyperparameterOptConfig(**options)
    config.validate()  # option mistakes surface before the cell body runs
    optimizer = get_optimizer(config.optimizer, **config.optimizer_options)

    namespace = shell.user_ns
    captured = capture.run_cell(shell, cell)
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
    return config, train_fn


def build_ablation(shell: Any, options: Dict[str, Any], magic: Dict[str, Any],
                   cell: str) -> Experiment:
    """An ablation study: the cell's AblationStudy (``--study``) and a training function
    (``--fn``) that takes what the study hands it; the study's own generators are not
    candidates."""
    from . import capture
    from .ablation.runner import check_train_fn
    from .config import AblationConfig

    config = AblationConfig(**options)
    config.validate_options()  # option mistakes surface before the cell body runs

    namespace = shell.user_ns
    captured = capture.run_cell(shell, cell)
    study = capture.find_study(captured, namespace, magic.get("study"))
    config.ablation_study = study
    train_fn = capture.find_train_fn(
        captured, namespace, magic.get("fn"), lambda fn: check_train_fn(fn, study),
        exclude=study.generators())
    return config, train_fn


def build_dist(shell: Any, options: Dict[str, Any], magic: Dict[str, Any],
               cell: str) -> Experiment:
    """Data-parallel training with ``--framework`` (torch unless given): the notebook's
    model, dataset and hyperparameter dict (``--model``/``--dataset``/``--hparams`` or
    their default names) and a training function taking them."""
    from . import capture
    from .distributed.config import TfDistributedConfig, TorchDistributedConfig
    from .distributed.runner import INJECTED
    from .trainfn import check_signature

    # parse_options has checked the name against the --framework choices
    classes = {"torch": TorchDistributedConfig, "tf": TfDistributedConfig}
    framework = magic.get("framework") or "torch"
    namespace = shell.user_ns
    captured = capture.run_cell(shell, cell)
    # a TensorFlow training function may build its model and load its data itself
    own = framework == "tf"
    model = _variable(namespace, magic.get("model"), ("model", "module"), "--model",
                      required=not own)
    dataset = _variable(namespace, magic.get("dataset"), ("dataset",), "--dataset",
                        required=not own)
    hparams = _variable(namespace, magic.get("hparams"), ("hparams",), "--hparams",
                        required=False)
    config = classes[framework](model, dataset, hparams=hparams, **options)
    config.validate()
    names = list(config.hparams)
    train_fn = capture.find_train_fn(
        captured, namespace, magic.get("fn"),
        lambda fn: check_signature(fn, names, extras=INJECTED),
        exclude=[model] if callable(model) and not isinstance(model, type) else [])
    return config, train_fn


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


#: The cell subcommands (``%%maggy hpo``...) and the builder of each one's experiment.
CELL_COMMANDS: Dict[str, Callable[[Any, Dict[str, Any], Dict[str, Any], str], Experiment]] = {
    "hpo": build_hpo, "ablation": build_ablation, "dist": build_dist}
