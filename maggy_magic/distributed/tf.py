"""TensorFlow data-parallel training: the user's training function, unchanged, inside a
``tf.distribute.MultiWorkerMirroredStrategy`` that spans every rank of the gang.

What :func:`session` does on each rank, in a fresh worker process:

1. exchanges every rank's ``host:port`` (a port each rank reserved on its own host)
   through the context and sets ``TF_CONFIG``: ``cluster.worker`` lists the addresses in
   rank order, ``task`` is ``{"type": "worker", "index": rank}``; rank 0 is TF's chief;
2. sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, so ``tf.keras`` is
   tf-keras (Keras 2), whose ``model.fit`` trains under the strategy (Keras 3's ``fit``
   does not: keras-team/keras#20585);
3. creates the strategy; the training function is called inside ``strategy.scope()``:
   every model it builds there, with ``tf.keras`` or ``from tensorflow import keras``, is
   mirrored on all ranks and its ``model.fit`` all-reduces the gradients.

The contract (Maggy's ``TfDistributedConfig(model, dataset, process_data, ...,
hparams)`` names):

* ``hparams``: fixed hyperparameters, injected by name like a trial's.
* ``model``: optional; a Keras model class or a function that returns a (compiled)
  model. It is called inside the strategy's scope with the hyperparameters it names, and
  the model is passed as the argument ``model``. A model built beforehand is refused: its
  variables would not be mirrored.
* ``dataset``: optional; one item or a list ``[train, test]`` injected as ``train_set``
  and ``test_set``. An item is a tuple of arrays ``(x, y)`` or a function, called on each
  rank, that returns such a tuple or a ``tf.data.Dataset``. Each becomes an unbatched
  ``tf.data.Dataset`` whose auto-shard policy is ``DATA``: batch it with the *global*
  batch size as on one machine; ``model.fit`` gives each rank a disjoint share of every
  global batch. Without ``dataset`` the function loads its own data; ``model.fit`` on
  arrays shards the same way. With ``process_data`` (:class:`DataFromPaths`), each rank
  first calls ``process_data(dataset)`` and what it returns is the dataset.
* Checkpoints: ``dist_context.checkpoint_dir`` (``dist_context`` is injected by name) is
  the same directory on every rank and every attempt, so every rank can restore from it
  (it must be on a file system all ranks see), e.g. with
  ``tf.keras.callbacks.BackupAndRestore(dist_context.checkpoint_dir)``. TensorFlow's
  multi-worker-aware writers
  (``tf.keras.callbacks.BackupAndRestore``, ``ModelCheckpoint``,
  ``tf.train.CheckpointManager``) write the real files on the chief only; the other ranks
  write to a ``workertemp_<rank>`` directory that is discarded.
* The chief's return value is the run's result.

TensorFlow is imported here only, and only inside :func:`session`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import sys
from typing import Any, Callable, Dict, Iterator, List

from ..errors import DistTrainingError

LEGACY_KERAS = "TF_USE_LEGACY_KERAS"


# -- checks that run on the driver, before any worker starts (stdlib only) ------------
def check(model: Any, dataset: Any) -> None:
    """Raise :class:`DistTrainingError` (a ConfigError) for a model or dataset that does
    not follow the contract above."""
    check_model(model)
    check_dataset(dataset)


def check_model(model: Any) -> None:
    """Raise :class:`DistTrainingError` unless ``model`` is None, a class or a function."""
    if model is None or isinstance(model, type) or inspect.isroutine(model):
        return
    if hasattr(model, "fit") or not callable(model):
        raise DistTrainingError(
            f"model must be a Keras model class or a function that builds the model (it is "
            f"built inside the strategy's scope on every rank), got a built "
            f"{type(model).__name__}; pass its class or a function that returns it")


class DataFromPaths:
    """Maggy's ``process_data``: ``dataset`` (paths, usually) is read on every rank, where
    the data lives, by ``process_data(dataset)``; what it returns follows the contract
    above. Only the paths travel."""

    def __init__(self, process_data: Any, dataset: Any):
        self.process_data, self.dataset = process_data, dataset

    def load(self) -> Any:
        value = self.process_data(self.dataset)
        try:
            check_dataset(value)
        except DistTrainingError as exc:
            raise DistTrainingError(f"process_data returned data that does not fit: {exc}") \
                from None
        return value


def check_dataset(dataset: Any) -> None:
    """Raise :class:`DistTrainingError` unless ``dataset`` follows the contract above."""
    if dataset is None or isinstance(dataset, DataFromPaths):
        return
    items = dataset if isinstance(dataset, list) else [dataset]
    if not 1 <= len(items) <= 2:
        raise DistTrainingError(f"dataset must be one item or a list [train, test], got a "
                                f"list of {len(items)}")
    for item in items:
        if callable(item) or _is_arrays(item):
            continue
        raise DistTrainingError(
            f"a dataset item must be a tuple of arrays (x, y) or a function that returns one "
            f"or a tf.data.Dataset, got {type(item).__name__}")


def _is_arrays(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) > 0 and \
        all(hasattr(part, "shape") and hasattr(part, "dtype") for part in item)


# -- one rank's session ---------------------------------------------------------------
def tf_config(workers: List[str], rank: int) -> Dict[str, Any]:
    """``TF_CONFIG`` for ``rank`` of a cluster of ``workers`` (addresses in rank order)."""
    if not 0 <= rank < len(workers):
        raise ValueError(f"rank {rank} outside a cluster of {len(workers)}")
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": rank}}


@contextlib.contextmanager
def session(context: Any, model: Any, dataset: Any, hparams: Dict[str, Any],
            shard: bool = True) -> Iterator[Dict[str, Any]]:
    """One rank of a multi-worker TensorFlow job, around the call of the training function.

    ``context`` is the rank's :class:`~maggy_magic.distributed.context.DistContext`; every rank
    enters together (``addresses()`` is a rendezvous). Yields the arguments to inject
    (``model``, ``train_set``, ``test_set``); the training function must be called inside
    the ``with`` block, which is inside the strategy's scope. Must run before this process
    initialises TensorFlow. ``shard=False`` gives every rank the whole dataset.
    """
    _prefer_legacy_keras()
    os.environ["TF_CONFIG"] = json.dumps(tf_config(context.addresses(), context.rank))

    import tensorflow as tf

    _check_keras(tf)
    if isinstance(dataset, DataFromPaths):
        dataset = dataset.load()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    try:
        with strategy.scope():
            injected: Dict[str, Any] = {}
            if model is not None:
                injected["model"] = _call_with(model, hparams)
            if dataset is not None:
                items = dataset if isinstance(dataset, list) else [dataset]
                for name, item in zip(("train_set", "test_set"), items):
                    injected[name] = _as_dataset(tf, item, shard)
            try:
                yield injected
            except Exception as exc:
                if "PerReplica" in str(exc) and _keras3_in_use():
                    raise DistTrainingError(
                        "Keras 3's model.fit cannot train under MultiWorkerMirroredStrategy; "
                        "build the model with tf.keras (or `from tensorflow import keras`), "
                        "which is tf-keras in TensorFlow dist workers") from exc
                raise
    finally:
        if not context.is_chief:
            discard_worker_temp(getattr(context, "checkpoint_dir", None), context.rank)


def discard_worker_temp(checkpoint_dir: Any, rank: int) -> None:
    """Remove the ``workertemp_<rank>`` directories TensorFlow's writers left for this
    non-chief rank anywhere under ``checkpoint_dir``, and the directories that held only
    them, so the checkpoint directory holds the chief's files only."""
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        return
    root = os.path.abspath(checkpoint_dir)
    mine = [os.path.join(parent, f"workertemp_{rank}") for parent, dirs, _ in os.walk(root)
            if f"workertemp_{rank}" in dirs]
    for path in mine:
        shutil.rmtree(path, ignore_errors=True)
        parent = os.path.dirname(path)
        while parent != root:
            try:
                os.rmdir(parent)  # only if nothing else is left in it
            except OSError:
                break
            parent = os.path.dirname(parent)


def _prefer_legacy_keras() -> None:
    if "tensorflow" in sys.modules and os.environ.get(LEGACY_KERAS) != "1":
        raise DistTrainingError(
            "TensorFlow was imported in this worker before dist training set it up; "
            "TensorFlow dist runs in fresh worker processes: do not import it at module "
            "level of code the worker loads before the training function")
    os.environ[LEGACY_KERAS] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _check_keras(tf: Any) -> None:
    if not str(getattr(tf.keras, "__name__", "")).startswith("tf_keras"):
        raise DistTrainingError(
            "tf.keras is Keras 3 here, but TensorFlow dist needs tf-keras (Keras 2) for "
            "model.fit: pip install tf-keras matching your TensorFlow version")


def _keras3_in_use() -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and str(getattr(keras, "__version__", "")).startswith("3.")


def _call_with(factory: Callable, hparams: Dict[str, Any]) -> Any:
    """``factory(**the hyperparameters it takes)`` (all of them if it takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return factory()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return factory(**hparams)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return factory(**{k: v for k, v in hparams.items() if k in names})


def _as_dataset(tf: Any, item: Any, shard: bool) -> Any:
    """``item`` (arrays or a function returning arrays or a dataset) as an unbatched
    ``tf.data.Dataset`` that multi-worker input pipelines shard by element (or not at
    all: ``shard=False``)."""
    value = item() if callable(item) else item
    if isinstance(value, list):
        value = tuple(value)
    if _is_arrays(value):
        value = tf.data.Dataset.from_tensor_slices(value)
    if not isinstance(value, tf.data.Dataset):
        raise DistTrainingError(
            f"the dataset function returned {type(value).__name__}; return a tuple of "
            "arrays (x, y) or a tf.data.Dataset")
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.DATA if shard else policy.OFF
    return value.with_options(options)


# -- helpers for the training function ------------------------------------------------
def backup_and_restore(name: str = "backup") -> Any:
    """A ``tf.keras`` callback for ``model.fit`` that makes a dist run survive a lost rank:
    it backs up the training state after every epoch (the chief writes
    ``<checkpoint_dir>/<name>``, other ranks a temporary copy) and records it with the
    driver; when the gang restarts, ``fit`` resumes from the last backed-up epoch. The
    backup is deleted when ``fit`` completes. Outside a dist run (or without a checkpoint
    directory) it does nothing, so the same function runs on a laptop."""
    import tensorflow as tf

    from .context import current

    context = current()
    if context is None or not context.checkpoint_dir:
        return tf.keras.callbacks.Callback()
    directory = os.path.join(context.checkpoint_dir, name)

    class RecordedBackup(tf.keras.callbacks.BackupAndRestore):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            super().on_epoch_end(epoch, logs)
            context.record_checkpoint(directory)

    return RecordedBackup(directory)
