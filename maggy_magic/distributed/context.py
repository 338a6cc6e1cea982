"""What a rank of a distributed (``dist``) run knows about itself and its peers.

A dist run is a *gang* of ``world_size`` trials with the same hyperparameters, one per
rank, started together by the driver. Inside each rank's trial the framework runtime
(:mod:`maggy_magic.distributed.torch`, :mod:`maggy_magic.distributed.tf`) gets a
:class:`DistContext` from :func:`current` and uses it to set up the framework's own communication:

- ``rank`` (0 is the chief), ``world_size``, ``is_chief``, ``attempt`` (0, then 1, 2, ...
  when the gang restarts after a failure), ``gang`` (the id shared by the ranks of one
  attempt);
- ``rendezvous(value)``: every rank sends a JSON value, every rank gets back the list of
  all values in rank order once all ranks arrived (a barrier with data, served by the
  driver; a rank that never arrives fails the whole gang after a timeout);
- ``addresses()``: ``"host:port"`` of every rank in rank order, each rank having reserved a
  free port on its own host (what ``TF_CONFIG`` and ``MASTER_ADDR``/``MASTER_PORT`` need);
  ``local_rank`` and ``local_world_size`` (ranks on the same host) come with it;
- checkpoints: ``checkpoint_dir`` (the same folder for every rank and attempt; on a host
  that does not share the driver's disk, the default one is a local folder whose recorded
  checkpoints are relayed, see :mod:`.checkpoints`), the chief's
  ``record_checkpoint(path)`` (a restart resumes from the last recorded one) and
  ``resume_from`` (a local copy of that checkpoint for a restarted attempt, else None).

Stdlib only: this module is imported on every worker, whatever the framework.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable, Dict, List, Optional

#: The context of the rank running in this process (set while its trial runs).
_CURRENT: Optional["DistContext"] = None
_LOCK = threading.Lock()


def current() -> Optional["DistContext"]:
    """The :class:`DistContext` of the dist trial running in this process, or None (e.g.
    while the same training function runs as an ordinary hyperparameter trial)."""
    return _CURRENT


def activate(context: Optional["DistContext"]) -> None:
    """Make ``context`` the one :func:`current` returns (None clears it). Used by the
    runner around the training function."""
    global _CURRENT
    with _LOCK:
        _CURRENT = context


class DistContext:
    """One rank's view of its gang (see the module docstring).

    ``exchange(key, value, timeout)`` and ``note(info)`` are provided by the worker loop:
    the first is the driver's rendezvous, the second records facts about the running
    trial (here: the chief's checkpoints) with the driver.
    """

    def __init__(self, *, rank: int, world_size: int, attempt: int, gang: str,
                 host: str, checkpoint_dir: Optional[str], resume_from: Optional[str],
                 exchange: Callable[[str, Any, Optional[float]], List[Any]],
                 note: Callable[[Dict[str, Any]], None]):
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.attempt = int(attempt)
        self.gang = str(gang)
        #: This worker's address as its peers can reach it (the local end of its
        #: connection to the driver).
        self.host = host
        self.checkpoint_dir = checkpoint_dir
        #: The checkpoint the chief of an earlier attempt recorded last (None at first).
        self.resume_from = resume_from
        self._exchange = exchange
        self._note = note
        self._addresses: Optional[List[str]] = None
        self._hostnames: Optional[List[str]] = None

    @property
    def is_chief(self) -> bool:
        """Rank 0: the rank whose metrics and result are the run's, and which writes
        checkpoints."""
        return self.rank == 0

    def rendezvous(self, value: Any, key: str = "default",
                   timeout: Optional[float] = None) -> List[Any]:
        """Send ``value`` (JSON-serialisable) and return every rank's value, in rank order,
        once all ``world_size`` ranks called ``rendezvous`` with the same ``key``.

        Calls with the same key form consecutive rounds. Raises
        :class:`~maggy_magic.errors.RendezvousError` if the gang fails meanwhile or no
        answer comes within ``timeout`` seconds (default: the run's rendezvous timeout).
        """
        return list(self._exchange(str(key), value, timeout))

    def reserve_port(self) -> int:
        """A TCP port that is free on this host now (bound and released; the framework
        binds it again moments later)."""
        return reserve_port(self.host)

    def addresses(self) -> List[str]:
        """``"host:port"`` of every rank, in rank order; each rank reserves a free port on
        its own host. The first call is a rendezvous (every rank must call it); later
        calls return the same list."""
        if self._addresses is None:
            mine = {"host": self.host, "port": self.reserve_port(),
                    "hostname": socket.gethostname()}
            everyone = self.rendezvous(mine, key="maggy-addresses")
            self._addresses = [f"{p['host']}:{p['port']}" for p in everyone]
            self._hostnames = [f"{p['hostname']}/{p['host']}" for p in everyone]
        return list(self._addresses)

    @property
    def local_rank(self) -> int:
        """This rank's index among the ranks on the same host (after :meth:`addresses`)."""
        names = self._host_list()
        return names[:self.rank].count(names[self.rank])

    @property
    def local_world_size(self) -> int:
        """How many ranks run on this host (after :meth:`addresses`)."""
        names = self._host_list()
        return names.count(names[self.rank])

    def _host_list(self) -> List[str]:
        if self._hostnames is None:
            self.addresses()
        assert self._hostnames is not None
        return self._hostnames

    # -- checkpoints ------------------------------------------------------------------
    def new_checkpoint_path(self, name: str = "checkpoint") -> Optional[str]:
        """A fresh file path in ``checkpoint_dir`` for the chief to write (None on other
        ranks, or when the run has no checkpoint directory)."""
        if not self.is_chief or not self.checkpoint_dir:
            return None
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        taken = len(os.listdir(self.checkpoint_dir))
        return os.path.join(self.checkpoint_dir,
                            f"{name}-a{self.attempt}-{taken:05d}")

    def record_checkpoint(self, path: str) -> None:
        """The chief tells the driver that ``path`` is complete: a restart of the gang
        resumes from the last path recorded. Ignored on other ranks."""
        if self.is_chief:
            self._note({"checkpoint": str(path)})


def reserve_port(host: str = "") -> int:
    """A TCP port free on ``host`` now (see :meth:`DistContext.reserve_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, 0))
        except OSError:
            sock.bind(("", 0))
        return int(sock.getsockname()[1])
