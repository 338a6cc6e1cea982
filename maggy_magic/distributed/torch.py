"""PyTorch runtime of a dist run: DistributedDataParallel over the ranks of a gang.

On each rank :func:`session` sets ``MASTER_ADDR``/``MASTER_PORT`` (the chief's address and
the port it reserved, shared through the rendezvous), ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``, and (unless set) ``GLOO_SOCKET_IFNAME`` /
``NCCL_SOCKET_IFNAME`` to the interface holding the address peers reach; starts the
process group (gloo on CPU, nccl on GPU, with this rank's GPU selected: the first of
those it was given with ``gpus_per_trial``); builds the module
(an instance, or a class instantiated with the hyperparameters its constructor names),
moves it to the device and wraps it in ``DistributedDataParallel``; gives the rank its
shard of the training set; and destroys the process group when the training function
returns.

Helpers for the training function (they also work outside a dist run, so the same function
runs as a hyperparameter trial): :func:`sampler` / :func:`loader` (per-epoch shuffling
that differs per epoch and never overlaps between ranks), :func:`save_checkpoint` (the
chief writes, a restart resumes from it) and :func:`load_checkpoint`.

torch is imported only here (install ``maggy-magic[torch]``).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from typing import Any, Dict, Iterator, Optional

from ..errors import ConfigError
from ..resources import ASSIGNED_ENV
from .context import DistContext, current
from .netif import interface_of

#: How long a collective operation may wait for a peer before torch gives up (the driver
#: aborts a failed gang long before; this bounds a rank whose driver vanished).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


def _torch():
    try:
        import torch
    except ImportError:
        raise ConfigError("framework 'torch' needs PyTorch, which is not installed; install "
                          "maggy-magic[torch] (pip install 'maggy-magic[torch]')") from None
    return torch


# -- the driver side --------------------------------------------------------------------
def split_dataset(dataset: Any):
    """``(train_set, test_set or None)`` from ``[train, test]``, ``(train,)`` or ``train``."""
    if isinstance(dataset, (list, tuple)):
        if not 1 <= len(dataset) <= 2:
            raise ConfigError(f"dataset must be [train_set, test_set] or a training set, got "
                              f"a sequence of {len(dataset)} items")
        return dataset[0], (dataset[1] if len(dataset) == 2 else None)
    return dataset, None


def check(module: Any, dataset: Any) -> None:
    """Raise a one-line :class:`ConfigError` unless ``module`` and ``dataset`` fit."""
    torch = _torch()
    if module is None:
        raise ConfigError("TorchDistributedConfig needs module= (a torch.nn.Module instance "
                          "or class); %%maggy dist --module NAME")
    if not (isinstance(module, torch.nn.Module) or
            (isinstance(module, type) and issubclass(module, torch.nn.Module))):
        raise ConfigError(f"module must be a torch.nn.Module instance or class, got "
                          f"{type(module).__name__}")
    if dataset is None:
        raise ConfigError("TorchDistributedConfig needs dataset= ([train_set, test_set] or a "
                          "training set: map-style torch datasets); %%maggy dist --dataset "
                          "NAME")
    train, _ = split_dataset(dataset)
    if not (hasattr(train, "__len__") and hasattr(train, "__getitem__")):
        raise ConfigError(f"the training set must be a map-style dataset (with __len__ and "
                          f"__getitem__, e.g. a TensorDataset), got {type(train).__name__}")


# -- the rank side ----------------------------------------------------------------------
@contextlib.contextmanager
def session(context: DistContext, module: Any, dataset: Any, hparams: Dict[str, Any],
            shard: bool = True) -> Iterator[Dict[str, Any]]:
    """Set up this rank (see the module docstring); yields the injected arguments."""
    torch = _torch()
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    chief_host, chief_port = context.addresses()[0].rsplit(":", 1)
    local_rank = context.local_rank
    os.environ.update(MASTER_ADDR=chief_host, MASTER_PORT=chief_port,
                      RANK=str(context.rank), WORLD_SIZE=str(context.world_size),
                      LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(context.local_world_size))
    interface = interface_of(context.host)  # the one peers reach, not the host name's
    if interface is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
    use_gpu = torch.cuda.is_available()
    if use_gpu:
        # a rank given its own GPUs (gpus_per_trial) sees only them: the first is its
        # device; otherwise ranks on one host spread over the devices they all see
        own = bool(os.environ.get(ASSIGNED_ENV))
        device = torch.device("cuda", 0 if own else local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_gpu else "gloo", init_method="env://",
                            rank=context.rank, world_size=context.world_size,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        model = build_module(module, hparams).to(device)
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if use_gpu else None)
        train, test = split_dataset(dataset)
        if shard:
            train = rank_shard(train, context.rank, context.world_size)
        yield {"module": wrapped, "model": wrapped, "train_set": train, "test_set": test,
               "dataset": [train, test] if test is not None else train}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def build_module(module: Any, hparams: Dict[str, Any]):
    """``module`` itself, or ``module(**the hparams its constructor names)`` for a class."""
    if not isinstance(module, type):
        return module
    try:
        params = inspect.signature(module.__init__).parameters
    except (TypeError, ValueError):
        return module()
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return module(**hparams)
    return module(**{k: v for k, v in hparams.items() if k in params})


def rank_shard(dataset: Any, rank: int, world_size: int):
    """Rank ``rank``'s part of ``dataset``: items ``rank, rank + N, rank + 2N, ...``
    (disjoint between ranks; with N ranks and per-rank batch b, step k of all ranks
    together covers items ``k*N*b ... (k+1)*N*b - 1`` of the full set, like one process
    with batch N*b). A ``torch.utils.data.Subset`` marked as a rank's shard."""
    from torch.utils.data import Subset

    shard = Subset(dataset, list(range(rank, len(dataset), world_size)))
    shard.maggy_rank_shard = (rank, world_size)
    return shard


class _EpochSampler:
    """Shuffles a rank's own shard with a seed that changes with ``set_epoch``."""

    def __init__(self, size: int, shuffle: bool, seed: int):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.size))
        torch = _torch()
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def sampler(dataset: Any, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
    """A sampler with ``set_epoch`` for this rank.

    For the rank's shard (the ``train_set`` a dist run passes in) it shuffles within the
    shard; for a full dataset (``shard=False``) it is a ``DistributedSampler`` over this
    rank's part; outside a dist run, over the whole dataset.
    """
    context = current()
    if getattr(dataset, "maggy_rank_shard", None) is not None or context is None:
        return _EpochSampler(len(dataset), shuffle, seed)
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank,
                              shuffle=shuffle, seed=seed, drop_last=drop_last)


class EpochLoader:
    """A ``DataLoader`` over :func:`sampler` that calls ``set_epoch`` each time it is
    iterated (epoch 0, 1, ...), so every epoch is shuffled differently on every rank."""

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, **loader_options: Any):
        from torch.utils.data import DataLoader

        self.sampler = sampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                 drop_last=drop_last, **loader_options)
        self.epoch = 0

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def loader(dataset: Any, batch_size: int, shuffle: bool = True, seed: int = 0,
           **loader_options: Any) -> EpochLoader:
    """An :class:`EpochLoader` for this rank (see :func:`sampler`)."""
    return EpochLoader(dataset, batch_size, shuffle=shuffle, seed=seed, **loader_options)


def save_checkpoint(state: Any, name: str = "checkpoint") -> Optional[str]:
    """On the chief of a dist run, ``torch.save(state)`` into the run's checkpoint
    directory and record it (a restarted gang resumes from it); returns the path. Other
    ranks, and runs outside dist, write nothing and get None."""
    context = current()
    if context is None:
        return None
    path = context.new_checkpoint_path(name)
    if path is None:
        return None
    path += ".pt"
    tmp = path + ".tmp"
    _torch().save(state, tmp)
    os.replace(tmp, path)
    context.record_checkpoint(path)
    return path


def load_checkpoint(map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """The state of the checkpoint a restarted gang resumes from (on every rank), or None
    on a first attempt or outside a dist run. Loaded with ``weights_only`` (tensors,
    numbers, strings and containers; no arbitrary pickled objects) unless told
    otherwise."""
    context = current()
    if context is None or not context.resume_from:
        return None
    return _torch().load(context.resume_from, map_location=map_location,
                         weights_only=weights_only)
