"""Experiment configurations, with Maggy's names and argument order.

``HyperparameterOptConfig(num_trials, optimizer, searchspace, optimization_key, direction,
es_interval, es_min, es_policy, name, description, hb_interval, model, dataset)`` is
Maggy's signature; everything after it is keyword-only and specific to maggy-magic
(backend, workers, fault tolerance, run directory, resume, ``gpus_per_trial`` and
``cpus_per_trial``: what each trial gets, see :mod:`maggy_magic.resources`; the stop
conditions ``time_budget`` and ``target``, see :mod:`maggy_magic.driver.stopping`;
``mlflow``: MLflow tracking, see :mod:`maggy_magic.tracking`).
``AblationConfig(ablation_study, ablator, direction, name, description, hb_interval,
model, dataset)`` likewise.

Each config tells the experiment what it runs: ``make_optimizer()`` gives the optimizer
(or ablator) the driver asks for trials, and ``trial_function(train_fn, optimizer)``
checks the training function and returns what the workers call for each trial (the
training function itself for a search; a wrapper that builds each trial's model and
dataset for an ablation study). The driver, the worker loop and the backends stay the
same for every kind.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from .errors import ConfigError, did_you_mean
from .resources import cpus_option, gpus_option
from .searchspace import Searchspace
from .tracking import tracking_option
from .validation import (
    address_option,
    duration_option,
    nonnegative_int,
    port_option,
    positive_int,
    positive_number,
    target_option,
    tls_option,
    validate_common,
)


class RunOptions:
    """Options every experiment kind shares (where and how to run, fault tolerance)."""

    def __init__(self, *, backend: Any = "local", workers: Optional[int] = None,
                 max_failures: int = 0, max_retries: int = 2, hb_timeout: float = 60.0,
                 stop_grace: float = 30.0, seed: Optional[int] = None,
                 resume: Optional[str] = None, root: str = "maggy_experiments",
                 run_id: Optional[str] = None, backend_options: Optional[dict] = None,
                 tls: Any = "auto", driver_host: Optional[str] = None,
                 driver_bind: Optional[str] = None, driver_port: Any = None,
                 storage: Optional[str] = None, files_limit_mb: float = 256,
                 gpus_per_trial: Optional[float] = None,
                 cpus_per_trial: Optional[int] = None, run_on: Optional[str] = None,
                 mlflow: Any = None):
        if run_on is not None and backend not in ("local", run_on):
            raise ConfigError(f"backend={backend!r} and run_on={run_on!r} both say where "
                              "trials run; give one of them")
        #: Where trials run (``run_on=`` is the same: the name that cannot collide with
        #: Maggy's ``TorchDistributedConfig(backend="torch")``, the training framework).
        self.backend = backend if run_on is None else run_on
        self.workers = workers
        self.max_failures = max_failures
        self.max_retries = max_retries
        self.hb_timeout = hb_timeout
        self.stop_grace = stop_grace
        self.seed = seed
        self.resume = resume
        self.root = root
        self.run_id = run_id
        self.backend_options = dict(backend_options or {})
        #: TLS on the driver's socket: True, False or "auto" (on unless it binds loopback).
        self.tls = tls
        #: Shared storage (a URI fsspec opens) for the files of workers that do not share
        #: the driver's disk, and how many MiB of files per trial (or per recorded
        #: checkpoint) may otherwise travel to the driver over the wire.
        self.storage, self.files_limit_mb = storage, files_limit_mb
        #: The driver's address as workers are told it (default: the backend's, e.g.
        #: spark.driver.host), the address it listens on (default: driver_host; 0.0.0.0
        #: for every interface) and its port or port range (default: any free port).
        self.driver_host, self.driver_bind, self.driver_port = \
            driver_host, driver_bind, driver_port
        #: Devices per trial (a whole number, or 1/n: n trials share one device) and CPU
        #: cores per trial (see :mod:`maggy_magic.resources`); None: no request.
        self.gpus_per_trial, self.cpus_per_trial = gpus_per_trial, cpus_per_trial
        #: MLflow tracking (see :mod:`maggy_magic.tracking`): a tracking URI, True
        #: ($MLFLOW_TRACKING_URI), False, or None ($MAGGY_MAGIC_MLFLOW decides); after
        #: ``validate``, the URI or False.
        self.mlflow = mlflow

    def resources_dict(self) -> Dict[str, Any]:
        """The resource request as ``to_dict`` records it."""
        return {"gpus_per_trial": self.gpus_per_trial, "cpus_per_trial": self.cpus_per_trial}

    def validate_run_options(self) -> None:
        if self.workers is not None:
            positive_int("workers", self.workers)
        self.tls = tls_option(self.tls)
        self.gpus_per_trial = gpus_option(self.gpus_per_trial)
        self.cpus_per_trial = cpus_option(self.cpus_per_trial)
        if isinstance(self.files_limit_mb, bool) or \
                not isinstance(self.files_limit_mb, (int, float)) or \
                not 0 < self.files_limit_mb < float("inf"):
            raise ConfigError(f"files_limit_mb must be a positive number of MiB, got "
                              f"{self.files_limit_mb!r}")
        if self.storage is not None:
            from .storage import check

            self.storage = check(self.storage)
        self.mlflow = tracking_option(self.mlflow) or False
        self.driver_host = address_option("driver_host", self.driver_host)
        self.driver_bind = address_option("driver_bind", self.driver_bind)
        self.driver_port = port_option("driver_port", self.driver_port)
        nonnegative_int("max_failures", self.max_failures)
        nonnegative_int("max_retries", self.max_retries)
        positive_number("hb_timeout", self.hb_timeout)
        positive_number("stop_grace", self.stop_grace)
        if self.seed is not None and (isinstance(self.seed, bool) or
                                      not isinstance(self.seed, int)):
            raise ConfigError(f"seed must be an integer or None, got {self.seed!r}")


class HyperparameterOptConfig(RunOptions):
    """A hyperparameter search: which optimizer explores which space, for how long."""

    kind = "hpo"

    def __init__(self, num_trials: int = 1, optimizer: Any = "randomsearch",
                 searchspace: Optional[Searchspace] = None, optimization_key: str = "metric",
                 direction: str = "max", es_interval: float = 1, es_min: int = 10,
                 es_policy: Any = "median", name: str = "HPOptimization",
                 description: str = "", hb_interval: float = 1, model: Any = None,
                 dataset: Any = None, *, time_budget: Any = None,
                 target: Optional[float] = None, **options: Any):
        optimizer_options = options.pop("optimizer_options", None) or {}
        super().__init__(**options)
        self.num_trials = num_trials
        #: Stop conditions (see :mod:`maggy_magic.driver.stopping`): seconds (or "90s",
        #: "30m", "1h30m") this session of the run may take, and the metric value that
        #: ends the search once a trial reaches it (>= for max, <= for min).
        self.time_budget, self.target = time_budget, target
        self.optimizer = optimizer
        self.optimizer_options = dict(optimizer_options)
        self.searchspace = searchspace if searchspace is not None else Searchspace()
        self.optimization_key = optimization_key
        self.direction = direction
        self.es_interval = es_interval
        self.es_min = es_min
        self.es_policy = es_policy
        self.name = name
        self.description = description
        self.hb_interval = hb_interval
        self.model = model
        self.dataset = dataset

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for the first invalid setting."""
        positive_int("num_trials", self.num_trials)
        if not isinstance(self.searchspace, Searchspace):
            raise ConfigError(f"searchspace must be a Searchspace, got "
                              f"{type(self.searchspace).__name__}")
        positive_number("es_interval", self.es_interval)
        nonnegative_int("es_min", self.es_min)
        self.time_budget = duration_option("time_budget", self.time_budget)
        self.target = target_option("target", self.target)
        validate_common(self)

    def make_optimizer(self) -> Any:
        """The optimizer, set up for this search and checked against the search space."""
        from .optimizers import get_optimizer

        optimizer = get_optimizer(self.optimizer, **self.optimizer_options)
        optimizer.searchspace = self.searchspace
        optimizer.num_trials = self.num_trials
        optimizer.direction = self.direction
        optimizer.seed = self.seed
        optimizer.validate(self.searchspace)
        return optimizer

    def trial_function(self, train_fn: Callable, optimizer: Any) -> Callable:
        """``train_fn`` itself, once its arguments fit the search space."""
        from .trainfn import check_signature

        check_signature(train_fn, self.searchspace.keys(), budget=optimizer.uses_budget,
                        conditional=self.searchspace.conditional_names())
        return train_fn

    def to_dict(self) -> Dict[str, Any]:
        """What the run directory and the ``run_started`` event record (JSON only)."""
        def named(x: Any) -> Any:
            return x if x is None or isinstance(x, str) else type(x).__name__

        return {"kind": self.kind, "name": self.name, "description": self.description,
                "num_trials": self.num_trials, "optimizer": named(self.optimizer),
                "optimizer_options": self.optimizer_options,
                "searchspace": self.searchspace.to_dict(),
                "optimization_key": self.optimization_key, "direction": self.direction,
                "es_policy": named(self.es_policy), "es_interval": self.es_interval,
                "es_min": self.es_min, "hb_interval": self.hb_interval,
                "backend": named(self.backend), "workers": self.workers,
                "max_failures": self.max_failures, "max_retries": self.max_retries,
                "seed": self.seed, "time_budget": self.time_budget, "target": self.target,
                **self.resources_dict()}


class AblationConfig(RunOptions):
    """An ablation study: the base trial and one trial without each component.

    The study decides the trials (so there is no ``num_trials``) and no trial is stopped
    early: each one's final metric is compared with the base's. ``time_budget`` ends the
    study gracefully after that long (as for a search); there is no ``target``, since
    every component's trial is the point of a study.
    """

    kind = "ablation"
    #: Settings the driver reads; fixed for ablation studies.
    num_trials: Optional[int] = None
    es_policy, es_interval, es_min = "none", 1.0, 0

    def __init__(self, ablation_study: Any = None, ablator: Any = "loco",
                 direction: str = "max", name: str = "ablationStudy", description: str = "",
                 hb_interval: float = 1, model: Any = None, dataset: Any = None, *,
                 optimization_key: str = "metric", ablator_options: Optional[dict] = None,
                 time_budget: Any = None, **options: Any):
        super().__init__(**options)
        self.ablation_study = ablation_study
        self.time_budget = time_budget
        self.ablator = ablator
        self.ablator_options = dict(ablator_options or {})
        self.direction = direction
        self.name = name
        self.description = description
        self.hb_interval = hb_interval
        self.model = model
        self.dataset = dataset
        self.optimization_key = optimization_key

    def validate_options(self) -> None:
        """Check every setting but the study (the magic checks its options before it runs
        the cell that defines the study)."""
        self.time_budget = duration_option("time_budget", self.time_budget)
        validate_common(self)
        from .ablation import ABLATORS, AbstractAblator

        spec = self.ablator
        if isinstance(spec, str):
            if spec.strip().lower() not in ABLATORS:
                raise ConfigError(f"unknown ablator {spec!r}; "
                                  f"{did_you_mean(spec.strip().lower(), ABLATORS)}")
        elif not isinstance(spec, AbstractAblator) and not (
                isinstance(spec, type) and issubclass(spec, AbstractAblator)):
            raise ConfigError(f"ablator must be a name ({', '.join(ABLATORS)}) or an "
                              f"AbstractAblator, got {type(spec).__name__}")

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for the first invalid setting."""
        from .ablation import AblationStudy

        self.validate_options()
        if not isinstance(self.ablation_study, AblationStudy):
            raise ConfigError(f"ablation_study must be an AblationStudy, got "
                              f"{type(self.ablation_study).__name__}")
        self.ablation_study.validate()

    def make_optimizer(self) -> Any:
        """The ablator, set up for this study."""
        from .ablation import get_ablator

        ablator = get_ablator(self.ablator, self.ablation_study, **self.ablator_options)
        ablator.direction = self.direction
        ablator.seed = self.seed
        return ablator

    def trial_function(self, train_fn: Callable, optimizer: Any) -> Callable:
        """A picklable wrapper that gives ``train_fn`` each trial's model and dataset,
        after building every layer ablation once (see :mod:`maggy_magic.ablation.runner`)."""
        from .ablation.runner import prepare

        return prepare(optimizer.ablation_study, train_fn)

    def to_dict(self) -> Dict[str, Any]:
        """What the run directory and the ``run_started`` event record (JSON only)."""
        return {"kind": self.kind, "name": self.name, "description": self.description,
                "optimizer": _named(self.ablator), "ablator": _named(self.ablator),
                "ablator_options": self.ablator_options,
                "study": self.ablation_study.to_dict() if self.ablation_study is not None
                else None,
                "optimization_key": self.optimization_key, "direction": self.direction,
                "es_policy": self.es_policy, "hb_interval": self.hb_interval,
                "backend": _named(self.backend), "workers": self.workers,
                "max_failures": self.max_failures, "max_retries": self.max_retries,
                "seed": self.seed, "time_budget": self.time_budget, **self.resources_dict()}


def _named(x: Any) -> Any:
    return x if x is None or isinstance(x, str) else \
        (x.__name__ if isinstance(x, type) else type(x).__name__)


def __getattr__(name: str) -> Any:
    """Maggy's ``from maggy.config import TorchDistributedConfig, TfDistributedConfig``:
    the dist configs live in :mod:`maggy_magic.distributed.config` (which imports this
    module), loaded when first asked for here."""
    if name in ("TorchDistributedConfig", "TfDistributedConfig"):
        from .distributed import config as dist_config

        return getattr(dist_config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
