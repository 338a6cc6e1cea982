"""The livy backend: run an experiment on a remote Spark cluster through Apache Livy.

Modules: :mod:`.settings` (options and sparkmagic's config), :mod:`.client` (REST),
:mod:`.session` (which session), :mod:`.bootstrap` (install maggy_magic there, uploads),
:mod:`.statements` (the code sent), :mod:`.bundle` (what travels), :mod:`.remote` (what
runs on the cluster), :mod:`.backend` (the run, seen from the kernel). Importing this
package imports none of them.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError, did_you_mean


def create(**options: Any) -> Any:
    """The registry's factory: check option names, then build the backend."""
    from .settings import OPTIONS

    for key in options:
        if key not in OPTIONS:
            raise ConfigError(f"unknown livy backend option {key!r}; "
                              f"{did_you_mean(key, OPTIONS)}")
    from .backend import LivyBackend

    return LivyBackend(**options)
