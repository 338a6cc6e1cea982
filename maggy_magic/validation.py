"""Checks of experiment option values, shared by every config class: each raises a
one-line :class:`~maggy_magic.errors.ConfigError` that names the option and says what it
takes."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError, did_you_mean


def validate_common(config: Any) -> None:
    """Check (and normalise) what every experiment config has: direction, optimization
    key, heartbeat interval, name and the run options (``config.validate_run_options``)."""
    direction = str(config.direction).lower()
    if direction not in ("max", "min"):
        raise ConfigError(f"direction must be 'max' or 'min', got {config.direction!r}; "
                          f"{did_you_mean(direction, ('max', 'min'))}")
    config.direction = direction
    if not isinstance(config.optimization_key, str) or not config.optimization_key:
        raise ConfigError(f"optimization_key must be a non-empty string, got "
                          f"{config.optimization_key!r}")
    positive_number("hb_interval", config.hb_interval)
    if not isinstance(config.name, str) or not config.name.strip():
        raise ConfigError(f"name must be a non-empty string, got {config.name!r}")
    config.validate_run_options()


def tls_option(value: Any) -> Any:
    """``tls`` is True, False or "auto" (any case); returns the normalised value."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "true", "false", "on", "off"):
        return {"auto": "auto", "true": True, "on": True}.get(value.lower(), False)
    raise ConfigError(f"tls must be True, False or 'auto' (TLS unless the driver binds a "
                      f"loopback address), got {value!r}")


def positive_int(name: str, value: Any) -> None:
    """``value`` of option ``name`` must be an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def nonnegative_int(name: str, value: Any) -> None:
    """``value`` of option ``name`` must be an integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")


def positive_number(name: str, value: Any) -> None:
    """``value`` of option ``name`` must be a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
