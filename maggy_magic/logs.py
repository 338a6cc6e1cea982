"""The package's logger.

Some libraries a notebook loads beside this one reconfigure logging with
``logging.config.dictConfig`` (sparkmagic does, on import), which by default disables
every logger that already exists. :func:`logger` gives the named logger enabled again each
time it is asked for, so those messages are not silently dropped.
"""

from __future__ import annotations

import logging


def logger(name: str = "maggy_magic") -> logging.Logger:
    """``logging.getLogger(name)``, re-enabled if another library's config disabled it."""
    log = logging.getLogger(name)
    log.disabled = False
    return log
