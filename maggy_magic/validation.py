"""Checks of experiment option values, shared by every config class: each raises a
one-line :class:`~maggy_magic.errors.ConfigError` that names the option and says what it
takes."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any, Optional, Tuple

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


#: A host name: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def address_option(name: str, value: Any) -> Optional[str]:
    """``value`` of option ``name`` (``driver_host``, ``driver_bind``) is None or an IP
    address / host name; returns it stripped (an IPv6 address without brackets)."""
    if value is None:
        return None
    flag = "--" + name.replace("_", "-")
    text = value.strip() if isinstance(value, str) else ""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if text.count(":") == 1 and text.rsplit(":", 1)[1].isdigit():
        raise ConfigError(f"{name} ({flag}) takes an address without a port, got {value!r}; "
                          "give the port as driver_port (--driver-port)")
    if not text or re.fullmatch(r"[0-9.]+", text) or len(text) > 253 or \
            not _HOSTNAME.fullmatch(text):
        raise ConfigError(f"{name} ({flag}) must be an IP address or a host name (e.g. "
                          f"192.0.2.5, 0.0.0.0 or node1.example.com), got {value!r}")
    return text


def port_option(name: str, value: Any) -> Optional[Tuple[int, int]]:
    """``value`` of option ``name`` (``driver_port``) is None (any free port), a port, or a
    range ``"50000-50100"`` / ``(50000, 50100)``; returns ``(first, last)``."""
    if value is None:
        return None
    flag = "--" + name.replace("_", "-")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", value):
        bounds = [int(part) for part in value.split("-")]
    elif isinstance(value, int) and not isinstance(value, bool):
        bounds = [value]
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        bounds = list(value)
    else:
        raise ConfigError(f"{name} ({flag}) takes a port (50000) or a range of ports "
                          f"(50000-50100), got {value!r}")
    for port in bounds:
        if not 1 <= port <= 65535:
            raise ConfigError(f"{name} ({flag}) port {port} is out of range; ports are "
                              "1-65535 (leave it unset for any free port)")
    first, last = bounds[0], bounds[-1]
    if first > last:
        raise ConfigError(f"{name} ({flag}) range {first}-{last} is reversed; write "
                          f"{last}-{first}")
    return first, last


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


#: A duration: hours, minutes and seconds in that order, each part optional ("1h30m").
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def duration_option(name: str, value: Any) -> Optional[float]:
    """``value`` of option ``name`` (``time_budget``) is None, a number of seconds > 0 or
    a string such as ``"90"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``; returns the
    seconds."""
    if value is None:
        return None
    flag = "--" + name.replace("_", "-")
    seconds: Optional[float] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(text) if text else None
        if match and any(match.groups()):
            hours, minutes, secs = (float(part or 0) for part in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        elif re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name} ({flag}) takes a time above zero: seconds (90) or a "
                          f"duration such as '90s', '30m', '2h' or '1h30m', got {value!r}")
    return seconds


def target_option(name: str, value: Any) -> Optional[float]:
    """``value`` of option ``name`` (``target``) is None or a finite number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{name} ({flag}) takes the metric value that ends the search, a "
                          f"number such as 0.95, got {value!r}")
    return float(value)
