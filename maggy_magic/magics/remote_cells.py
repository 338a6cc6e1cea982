"""Where a ``%%maggy`` cell's body runs: in this kernel (the default) or in the Livy
session's namespace (``--cell remote``; the default in sparkmagic's PySpark kernel, whose
ordinary cells all run in that session).

:func:`runs_remote` decides, and :func:`line_config` builds the config of the line's
options alone (checked here, before anything is sent); the cluster runs the body and
finds the rest (:mod:`maggy_magic.backends.livy.remote_cell`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import ConfigError


def runs_remote(shell: Any, choice: Optional[str], options: Dict[str, Any]) -> bool:
    """Whether the cell body runs in the Livy session. ``choice`` is ``--cell`` (None: not
    given); ``options`` gets ``backend="livy"`` when the remote cell implies it."""
    from ..backends.livy.session import in_sparkmagic_kernel

    backend = options.get("backend")
    if choice is None:
        if not in_sparkmagic_kernel(shell) or (backend is not None and
                                               str(backend).lower() != "livy"):
            return False
        choice = "remote"
    if choice != "remote":
        return False
    if backend is None:
        options["backend"] = "livy"
    elif str(backend).lower() != "livy":
        raise ConfigError(f"--cell remote runs the cell in a Livy session, not with --backend "
                          f"{backend}; add --backend livy or drop --cell remote")
    return True


def line_config(command: str, options: Dict[str, Any], magic: Dict[str, Any]) -> Any:
    """The config of ``command`` from the line's options, checked as far as they go
    without the cell's names (those are found on the cluster)."""
    if command == "hpo":
        from ..config import HyperparameterOptConfig

        config = HyperparameterOptConfig(**options)
        config.validate()
        return config
    if command == "ablation":
        from ..config import AblationConfig

        config = AblationConfig(**options)
        config.validate_options()
        return config
    from ..distributed.config import TfDistributedConfig, TorchDistributedConfig

    classes = {"torch": TorchDistributedConfig, "tf": TfDistributedConfig}
    # a dist config's checks need its model: the cluster's builder makes them
    return classes[magic.get("framework") or "torch"](None, None, **options)
