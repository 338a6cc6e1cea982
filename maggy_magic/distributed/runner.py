"""The trial function of a dist run: sets up one rank, then calls the user's function.

:class:`DistRunner` is what the workers call for each rank's trial (the experiment
serialises it once, with the user's training function, model and dataset inside). On
the rank it builds the :class:`~maggy_magic.distributed.context.DistContext` from the trial's
``info`` and the worker loop's ``trial_context``, opens the framework's session (process
group, strategy, sharded data) and calls the training function with its arguments injected
by name, exactly as a hyperparameter trial would be called, plus what the framework adds.

A framework runtime is a module with ``check(model, dataset) -> None`` (driver side,
raises :class:`~maggy_magic.errors.ConfigError`) and ``session(context, model, dataset,
hparams, shard)``, a context manager yielding the extra arguments (``model``/``module``,
``train_set``, ``test_set``, ``dataset``) and tearing the framework's communication down.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

from . import FRAMEWORKS
from .checkpoints import check_visible, needs_check, rank_paths, recorder
from .context import DistContext, activate

#: Argument names the training function of a dist run may take besides hyperparameters,
#: ``hparams`` and ``reporter``.
INJECTED = ("model", "module", "train_set", "test_set", "dataset", "dist_context")


class DistRunner:
    """Picklable: holds the framework name, the training function, model and dataset."""

    def __init__(self, framework: str, train_fn: Callable, model: Any, dataset: Any,
                 shard: bool = True):
        self.framework = framework
        self.train_fn = train_fn
        self.model = model
        self.dataset = dataset
        self.shard = shard
        self.__name__ = getattr(train_fn, "__name__", "train_fn")
        self.__module__ = getattr(train_fn, "__module__", __name__)

    def __call__(self, hparams: Dict[str, Any], reporter: Any, trial_context: Any) -> Any:
        from ..trainfn import build_kwargs

        info = trial_context.info
        # on a host that does not share the driver's disk: a local checkpoint_dir, and the
        # checkpoint to resume from fetched into it (see .checkpoints)
        checkpoint_dir, resume_from = rank_paths(trial_context, info)
        context = DistContext(
            rank=info["rank"], world_size=info["world_size"], attempt=info.get("attempt", 0),
            gang=info.get("gang", ""), host=trial_context.host,
            checkpoint_dir=checkpoint_dir, resume_from=resume_from,
            exchange=lambda key, value, timeout: trial_context.rendezvous(key, value, timeout),
            note=recorder(trial_context))
        if needs_check(trial_context, info.get("checkpoint_dir")):  # the user's own
            check_visible(context, checkpoint_dir)
        runtime = importlib.import_module(FRAMEWORKS[self.framework])
        activate(context)
        try:
            with runtime.session(context, self.model, self.dataset, dict(hparams),
                                 self.shard) as injected:
                extras = dict(injected, dist_context=context)
                kwargs = build_kwargs(self.train_fn, hparams, reporter, extras=extras)
                return self.train_fn(**kwargs)
        finally:
            activate(None)
