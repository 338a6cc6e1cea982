"""Which network interface of this host holds an address (stdlib only, Linux).

Collective libraries pick their own interface: Gloo and NCCL default to the address the
host name resolves to, which in a container or a namespace without DNS is often a
loopback address their peers on other hosts cannot reach. A rank knows the address its
peers can reach (the local end of its connection to the driver); :func:`interface_of`
names the interface that holds it, for ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME``.
"""

from __future__ import annotations

import socket
import struct
from typing import Optional

#: ioctl request that reads an interface's IPv4 address (linux/sockios.h).
_SIOCGIFADDR = 0x8915


def interface_of(address: str) -> Optional[str]:
    """The name of the interface whose IPv4 address is ``address``; None when no
    interface has it, the address is a loopback or IPv6 one, or the platform cannot say."""
    if not address or address.startswith("127.") or ":" in address:
        return None
    try:
        import fcntl
    except ImportError:  # not a Unix
        return None
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on it
                continue
            if socket.inet_ntoa(answer[20:24]) == address:
                return name
    return None
