"""TLS for the driver's socket: when to use it, and the run's own certificate.

:func:`wants_tls` decides: ``tls=True``/``False`` as given; ``"auto"`` (the default) is on
unless the driver binds, and advertises, a loopback address (traffic that never leaves the
machine).
:func:`server_context` makes a self-signed certificate for one run (an EC P-256 key, valid
for a day) and a server context that speaks TLS 1.2 or later; workers pin the
certificate by its SHA-256 fingerprint, which the launcher hands them with the secret
(see :class:`maggy_magic.rpc.Client`), so no certificate authority is involved. The
``cryptography`` package is imported only here, only when TLS is on.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import tempfile
from typing import Any, Tuple

from ..errors import ConfigError

#: How long a run's certificate is valid (a run that lasts longer keeps working: workers
#: check the fingerprint, not the dates).
VALIDITY = datetime.timedelta(days=1)
TLS_CHOICES = (True, False, "auto")


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False  # unknown here: treat it as leaving the machine
    addresses = {info[4][0].split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def wants_tls(host: Any, tls: Any = "auto") -> bool:
    """Whether a driver at ``host`` (an address, or a ``DriverAddress``: on unless both the
    bound and the advertised address are loopback) uses TLS for option value ``tls``."""
    if tls is True or tls is False:
        return tls
    return not all(is_loopback(h) for h in getattr(host, "hosts", (host,)))


def server_context() -> Tuple[ssl.SSLContext, str]:
    """``(context, fingerprint)``: a TLS server context holding a fresh self-signed
    certificate, and the hex SHA-256 of the certificate's DER bytes."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:  # e.g. a cluster's driver (Livy) without it
        raise ConfigError("TLS on the driver's socket needs the 'cryptography' package where "
                          "the driver runs (pip install cryptography); tls='auto' turns TLS "
                          "on for a driver bound beyond loopback, tls=False runs without "
                          "it") from None

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maggy-magic driver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: a private folder (0700) that is gone right after
    with tempfile.TemporaryDirectory(prefix="maggy-tls-") as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        context.load_cert_chain(cert_path, key_path)
    return context, hashlib.sha256(der).hexdigest()
