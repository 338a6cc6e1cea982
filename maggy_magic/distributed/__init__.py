"""Data-parallel training (``%%maggy dist``): one gang of ranks running the same training
function, set up for each framework.

- :mod:`.context`: what a rank knows (rank, peers, rendezvous, checkpoints); stdlib only.
- :mod:`.plan`: the optimizer that hands the driver one gang (and restarts it).
- :mod:`.runner`: the picklable trial function that wraps the user's training function.
- :mod:`.config`: ``TorchDistributedConfig`` / ``TfDistributedConfig``.
- :mod:`.torch`, :mod:`.tf`: the framework runtimes (imported only on use).
"""

from __future__ import annotations

#: Framework name → module of its runtime (``check`` on the driver, ``session`` on ranks).
FRAMEWORKS = {"torch": "maggy_magic.distributed.torch", "tf": "maggy_magic.distributed.tf"}
