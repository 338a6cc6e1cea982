"""Where the driver listens and what its workers are told: :class:`DriverAddress`.

Three run options say it (see :class:`maggy_magic.config.RunOptions`): ``driver_bind``, the
address the listening socket binds (``0.0.0.0``: every interface); ``driver_host``, the
address workers connect to (behind NAT or in a container, not the bound one; default: the
backend's, e.g. ``spark.driver.host``); ``driver_port``, a port or a range of ports, of
which the first free one is taken (a firewall's opening; default: any free port). Without
``driver_bind`` the driver binds the address it advertises. Every mistake is a one-line
:class:`~maggy_magic.errors.ConfigError` naming the option to change, raised by
:meth:`DriverAddress.check` before the run starts.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Optional, Tuple

from ..errors import ConfigError

#: ``bind`` errors that say the port is taken (or not ours to take): try the next one.
_PORT_TAKEN = (errno.EADDRINUSE, errno.EACCES)


class DriverAddress:
    """``bind`` (listen there), ``advertise`` (workers connect there), ``ports``
    (``(first, last)`` or None for any) and ``source``: the setting ``advertise`` came
    from, for messages (``"driver_host"``, ``"spark.driver.host"``...)."""

    def __init__(self, bind: str, advertise: Optional[str] = None,
                 ports: Optional[Tuple[int, int]] = None, source: str = "driver_host",
                 bind_given: bool = True):
        self.bind = bind
        self.advertise = advertise or bind
        self.ports = tuple(ports) if ports else None
        self.source = source
        self.bind_given = bind_given

    @property
    def hosts(self) -> Tuple[str, ...]:
        """Both addresses (TLS is off only when every one is loopback)."""
        return (self.bind, self.advertise)

    def ports_text(self) -> str:
        if self.ports is None:
            return "any free port"
        first, last = self.ports
        return str(first) if first == last else f"{first}-{last}"

    def listen(self, backlog: int = 128) -> socket.socket:
        """A listening socket on ``bind`` and the first free port of ``ports``."""
        candidates = range(self.ports[0], self.ports[1] + 1) if self.ports else (0,)
        for port in candidates:
            try:
                return socket.create_server((self.bind, port), backlog=backlog)
            except socket.gaierror as exc:
                raise self._bad_bind(exc.strerror or str(exc)) from None
            except OSError as exc:
                if exc.errno in _PORT_TAKEN and self.ports:
                    continue
                raise self._bad_bind(os.strerror(exc.errno) if exc.errno
                                     else type(exc).__name__) from None
        raise ConfigError(f"no free port in driver_port {self.ports_text()} on {self.bind} "
                          "(each one is in use or not permitted); free one, or give a wider "
                          "range with driver_port (--driver-port)")

    def check(self) -> "DriverAddress":
        """Raise the one-line :class:`ConfigError` :meth:`listen` would, before the run
        starts (the socket is closed again: the driver binds its own)."""
        self.listen(backlog=1).close()
        return self

    def _bad_bind(self, reason: str) -> ConfigError:
        if self.bind_given:
            return ConfigError(f"the driver cannot listen at driver_bind {self.bind!r} "
                               f"({reason}); set driver_bind (--driver-bind) to an address "
                               "of this machine, or 0.0.0.0 for all of them")
        return ConfigError(
            f"the driver cannot listen at {self.bind!r}, its {self.source} ({reason}); if "
            f"workers reach this machine at {self.bind} (NAT, a container), set driver_bind "
            f"(--driver-bind) to a local address such as 0.0.0.0, otherwise set "
            f"{_option(self.source)} to this machine's address as the workers see it")

    def __repr__(self) -> str:
        return (f"DriverAddress(bind={self.bind!r}, advertise={self.advertise!r}, "
                f"ports={self.ports_text()!r})")


def _option(source: str) -> str:
    return "driver_host (--driver-host)" if source == "driver_host" else \
        f"driver_host (--driver-host) or {source}"


def driver_address(config: Any, backend: Any) -> DriverAddress:
    """The checked address of this run's driver: the config's ``driver_host`` /
    ``driver_bind`` / ``driver_port`` over the backend's ``driver_host()``."""
    given = getattr(config, "driver_host", None)
    advertise = given or backend.driver_host()
    source = "driver_host" if given else getattr(backend, "host_setting", "driver_host")
    bind = getattr(config, "driver_bind", None)
    return DriverAddress(bind or advertise, advertise, getattr(config, "driver_port", None),
                         source=source, bind_given=bool(bind)).check()


def listen(host: Any, backlog: int) -> Tuple[socket.socket, str]:
    """``(listening socket, advertised address)`` for ``host``: a :class:`DriverAddress`,
    or an address string (bound and advertised, any free port)."""
    address = host if isinstance(host, DriverAddress) else DriverAddress(str(host))
    return address.listen(backlog), address.advertise
