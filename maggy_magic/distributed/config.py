"""Configs of data-parallel training runs, with Maggy's names and argument order.

``TorchDistributedConfig(module, dataset, hparams, backend, mixed_precision,
zero_lvl, deepspeed_config, name, hb_interval, description)`` (``backend``: Maggy's, the
framework, ``"torch"``) and
``TfDistributedConfig(model, dataset, process_data, mixed_precision, name, hb_interval,
description, hparams)`` are Maggy's signatures; everything after them is keyword-only:
``workers`` (the world size, default 2), ``optimization_key``, ``direction``,
``max_restarts`` (restarts of the gang from the chief's last checkpoint, default 0),
``checkpoint_dir`` (shared by every rank; default ``<run dir>/checkpoints``), ``shard``
(give each rank its own part of the training set, default True), ``rendezvous_timeout``,
``abort_timeout`` and the run options every experiment has (``run_on``, where the ranks
run, also read from a place given as ``backend=``; backend_options,
root, ``gpus_per_trial`` / ``cpus_per_trial`` per rank, ...).

A dist run is one *gang* of ``workers`` trials (see :mod:`maggy_magic.distributed.plan`) through
the same driver, worker loop and backends as any experiment.
"""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any, Callable, Dict, Optional

from ..config import RunOptions
from ..errors import ConfigError, did_you_mean
from ..validation import nonnegative_int, positive_number, validate_common
from . import FRAMEWORKS


class DistributedConfig(RunOptions):
    """What the two framework configs share; use one of them."""

    kind = "dist"
    #: A dist run restarts itself from checkpoints (max_restarts) instead of resuming.
    resumable = False
    framework = ""
    #: Settings the driver reads; fixed: no rank is ever stopped early or retried alone.
    es_policy, es_interval, es_min = "none", 1.0, 0

    def __init__(self, model: Any, dataset: Any, hparams: Optional[Dict[str, Any]], *,
                 name: str, hb_interval: float, description: str,
                 workers: Optional[int] = 2, optimization_key: str = "metric",
                 direction: str = "max", max_restarts: int = 0,
                 checkpoint_dir: Optional[str] = None, shard: bool = True,
                 rendezvous_timeout: float = 300.0, abort_timeout: float = 10.0,
                 **options: Any):
        super().__init__(workers=workers, **options)
        self.model = model
        self.dataset = dataset
        self.hparams = {} if hparams is None else hparams
        self.name = name
        self.hb_interval = hb_interval
        self.description = description
        self.optimization_key = optimization_key
        self.direction = direction
        self.max_restarts = max_restarts
        self.checkpoint_dir = checkpoint_dir
        self.shard = shard
        self.rendezvous_timeout = rendezvous_timeout
        self.abort_timeout = abort_timeout

    @property
    def num_trials(self) -> int:
        return self.workers or 0

    @property
    def result_class(self):
        from .result import DistResult

        return DistResult

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for the first invalid setting."""
        validate_common(self)
        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"unknown framework {self.framework!r}; "
                              f"{did_you_mean(str(self.framework), FRAMEWORKS)}")
        if self.workers is None or self.workers < 2:
            raise ConfigError(f"distributed training needs workers >= 2 (one per rank), got "
                              f"{self.workers!r}; for one process, run the function directly")
        if self.framework == "torch" and self.gpus_per_trial is not None and \
                self.gpus_per_trial < 1:
            raise ConfigError(f"torch distributed training needs a GPU per rank (NCCL refuses "
                              f"two ranks on one device), got gpus_per_trial="
                              f"{self.gpus_per_trial:g}; set --gpus-per-trial 1 or more, or "
                              "leave it unset for CPU ranks")
        nonnegative_int("max_restarts", self.max_restarts)
        positive_number("rendezvous_timeout", self.rendezvous_timeout)
        positive_number("abort_timeout", self.abort_timeout)
        if not isinstance(self.shard, bool):
            raise ConfigError(f"shard must be True or False, got {self.shard!r}")
        if self.resume:
            raise ConfigError("a dist run cannot be resumed; restart it (use max_restarts "
                              "and checkpoints to survive failures within a run)")
        if not isinstance(self.hparams, dict):
            raise ConfigError(f"hparams must be a dict of hyperparameter values, got "
                              f"{type(self.hparams).__name__}")
        try:
            json.dumps(self.hparams)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"hparams must hold JSON values (numbers, strings, lists): "
                              f"{exc}") from None
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise ConfigError(f"checkpoint_dir must be a path, got "
                              f"{type(self.checkpoint_dir).__name__}")
        importlib.import_module(FRAMEWORKS[self.framework]).check(self.model, self.dataset)

    def check_backend(self, backend: Any) -> None:
        """Every rank runs at once: the backend must be able to run ``workers`` together."""
        capacity = backend.capacity() if hasattr(backend, "capacity") else None
        if capacity is not None and self.workers > capacity:
            raise ConfigError(f"distributed training runs all {self.workers} ranks at once "
                              f"but the {backend.name} backend can run {capacity} worker(s) "
                              f"together; set workers <= {capacity} or add executors")

    def make_optimizer(self) -> Any:
        from .plan import DistPlan

        return DistPlan(self.workers, self.hparams, max_restarts=self.max_restarts,
                        checkpoint_dir=self.checkpoint_dir, framework=self.framework)

    def trial_function(self, train_fn: Callable, optimizer: Any) -> Callable:
        """The :class:`~maggy_magic.distributed.runner.DistRunner` around ``train_fn``, once its
        arguments fit the hyperparameters and what a rank injects."""
        from ..trainfn import check_signature
        from .runner import INJECTED, DistRunner

        # hyperparameters that build the model (its constructor's arguments) need not be
        # arguments of the training function too
        built = _constructor_names(self.model, self.hparams)
        check_signature(train_fn, [k for k in self.hparams if k not in built],
                        extras=tuple(INJECTED) + tuple(built))
        return DistRunner(self.framework, train_fn, self.model, self.dataset, self.shard)

    def to_dict(self) -> Dict[str, Any]:
        """What the run directory and the ``run_started`` event record (JSON only)."""
        backend = self.backend if self.backend is None or isinstance(self.backend, str) \
            else type(self.backend).__name__
        return {"kind": self.kind, "name": self.name, "description": self.description,
                "framework": self.framework, "optimizer": "dist",
                "hparams": self.hparams, "num_trials": self.num_trials,
                "optimization_key": self.optimization_key, "direction": self.direction,
                "es_policy": self.es_policy, "hb_interval": self.hb_interval,
                "backend": backend, "workers": self.workers,
                "max_restarts": self.max_restarts, "checkpoint_dir": self.checkpoint_dir,
                "shard": self.shard, "seed": self.seed, **self.resources_dict()}


def _unsupported(**given: Any) -> None:
    for key, value in given.items():
        if value not in (None, False, 0):
            raise ConfigError(f"{key} is not supported by maggy-magic's distributed "
                              f"training; drop it (got {value!r})")


class TorchDistributedConfig(DistributedConfig):
    """PyTorch DistributedDataParallel over ``workers`` ranks (gloo on CPU, nccl on GPU).

    ``module``: a ``torch.nn.Module`` instance, or its class (instantiated on each rank
    with the hyperparameters its constructor names); the training function gets it wrapped
    in DDP as ``module`` (or ``model``). ``dataset``: ``[train_set, test_set]`` or a
    training set alone (map-style torch datasets); each rank's ``train_set`` is its
    disjoint shard (rank r gets items r, r + N, r + 2N, ...).

    ``backend`` keeps Maggy's meaning, the training framework: ``"torch"`` (the default;
    ``"deepspeed"`` is a one-line "not supported"). Where the ranks run is ``run_on=``
    (``"local"``, ``"spark"``, ``"livy"``), the name every config takes; a place given as
    ``backend=`` (``backend="spark"``) is read as ``run_on`` too, since no framework has
    such a name.
    """

    framework = "torch"

    def __init__(self, module: Any = None, dataset: Any = None,
                 hparams: Optional[Dict[str, Any]] = None, backend: str = "torch",
                 mixed_precision: bool = False, zero_lvl: int = 0,
                 deepspeed_config: Any = None, name: str = "torchDist", hb_interval: float = 1,
                 description: str = "", **options: Any):
        _unsupported(mixed_precision=mixed_precision, zero_lvl=zero_lvl,
                     deepspeed_config=deepspeed_config)
        if backend == "deepspeed":
            raise ConfigError("backend='deepspeed' (DeepSpeed ZeRO) is not supported by "
                              "maggy-magic's distributed training; use backend='torch' "
                              "(DistributedDataParallel)")
        if backend != "torch":  # a place: where the ranks run
            if options.get("run_on") not in (None, backend):
                raise ConfigError(f"backend={backend!r} and run_on={options['run_on']!r} "
                                  "both say where the ranks run; give run_on only (backend "
                                  "is the framework: 'torch')")
            options["run_on"] = backend
        super().__init__(module, dataset, hparams, name=name, hb_interval=hb_interval,
                         description=description, **options)

    @property
    def module(self) -> Any:
        return self.model


class TfDistributedConfig(DistributedConfig):
    """TensorFlow MultiWorkerMirroredStrategy over ``workers`` ranks (see
    :mod:`maggy_magic.distributed.tf`). ``model``: a Keras model, or a function / class building
    one; ``dataset``: ``[train_set, test_set]`` or a training set alone; with
    ``process_data`` (Maggy's), ``dataset`` is what it reads (paths, usually): every rank
    calls ``process_data(dataset)`` where the data lives, and what that returns is the
    dataset. Maggy's argument order: ``(model, dataset, process_data, mixed_precision,
    name, hb_interval, description, hparams)``."""

    framework = "tf"

    def __init__(self, model: Any = None, dataset: Any = None, process_data: Any = None,
                 mixed_precision: bool = False, name: str = "tfDist", hb_interval: float = 1,
                 description: str = "", hparams: Optional[Dict[str, Any]] = None,
                 **options: Any):
        _unsupported(mixed_precision=mixed_precision)
        if process_data is not None:
            from .tf import DataFromPaths

            if not callable(process_data):
                raise ConfigError(f"process_data must be a function that reads dataset and "
                                  f"returns the data, got {type(process_data).__name__}")
            dataset = DataFromPaths(process_data, dataset)
        super().__init__(model, dataset, hparams, name=name, hb_interval=hb_interval,
                         description=description, **options)


def _constructor_names(model: Any, hparams: Dict[str, Any]) -> set:
    """The hyperparameters a model class or factory takes when it is built for a rank."""
    if not callable(model):
        return set()
    try:
        target = model.__init__ if isinstance(model, type) else model
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return set(hparams)
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name in hparams}
