"""A throw-away prefecture CA for tests, benches and drills of the hub.

Until the prefecture's own CA and its ceremony (``meshdesk.prefecture``) issue the
real credentials, this makes what the leaf connections need: a CA, a certificate
for the hub servers (for 127.0.0.1 and ``localhost``) and one client certificate
per city, as PEM files. :func:`make_dev_pki` is the one function the prefecture's
CA replaces; nothing here is for a real deployment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshdesk._fs import write_private
from meshdesk.hub.natsconf import TlsFiles

__all__ = ["DevPki", "make_dev_pki"]


@dataclass(frozen=True, slots=True)
class DevPki:
    """The files: the hub servers' side and each city's side of the leaf link."""

    hub: TlsFiles
    cities: dict[str, TlsFiles]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool,
    now: dt.datetime,
) -> x509.Certificate:
    name = _name(subject)
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    write_private(
        folder / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM), overwrite=True
    )
    write_private(
        folder / f"{stem}.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        overwrite=True,
    )


def make_dev_pki(folder: Path, cities: Sequence[str], *, now: dt.datetime) -> DevPki:
    """A CA, a hub server certificate and a client certificate per city, in ``folder``."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("meshdesk test prefecture CA", ca_key, None, server=False, now=now)
    _write(folder, "ca", ca, ca_key)
    ca_file = folder / "ca.crt"
    issuer = (ca.subject, ca_key)
    hub_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "hub", _issue("hub", hub_key, issuer, server=True, now=now), hub_key)
    files = {}
    for city in cities:
        key = ec.generate_private_key(ec.SECP256R1())
        _write(
            folder, f"city-{city}", _issue(f"city {city}", key, issuer, server=False, now=now), key
        )
        files[city] = TlsFiles(folder / f"city-{city}.crt", folder / f"city-{city}.key", ca_file)
    return DevPki(TlsFiles(folder / "hub.crt", folder / "hub.key", ca_file), files)
