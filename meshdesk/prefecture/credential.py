"""The hub credential: the one file a prefecture hands a city HQ.

It carries everything the city's NATS leaf node needs to reach the hub: the
city's private key and client certificate, the prefecture CA certificate (what
the city pins), the hub servers' certificates and the hub's URLs. The file has
the kits' format (:class:`meshdesk.identity.armor.Armor`): a few human lines
(untrusted: shown, never believed) and an armored msgpack payload, sealed under a
passphrase when one is given::

    meshdesk hub credential for city 131016 (千代田区)
    prefecture 東京都, CA fingerprint QSEVK6R-…
    -----BEGIN MESHDESK HUB CREDENTIAL-----
    hqF2AapwcmVmZWN0dXJl…
    -----END MESHDESK HUB CREDENTIAL-----

Like a kit it holds a private key: it travels by hand (USB stick) and is
deleted once imported. :meth:`HubCredential.from_bytes` checks that the parts
belong together (the key is the certificate's, the prefecture CA signed the city
and server certificates); whether that CA is the *right* one is the city's pin
(:mod:`meshdesk.prefecture.city`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshdesk.errors import AuthError
from meshdesk.identity.armor import Armor
from meshdesk.identity.nodeid import NodeId
from meshdesk.prefecture.ca import (
    CityCert,
    prefecture_id,
    verify_city_cert,
    verify_server_cert,
)

__all__ = ["CREDENTIAL_VERSION", "MAX_CREDENTIAL_BYTES", "HubCredential", "check_hub_url"]

CREDENTIAL_VERSION = 1
MAX_CREDENTIAL_BYTES = 256 * 1024
_MAX_SERVERS = 32
_MAX_URLS = 32
_MAX_TEXT = 256
_ARMOR = Armor(
    noun="hub credential",
    title="meshdesk hub credential",
    label="MESHDESK HUB CREDENTIAL",
    version=CREDENTIAL_VERSION,
    max_bytes=MAX_CREDENTIAL_BYTES,
    error=AuthError,
)
_URL = re.compile(r"(tls|nats-leaf|nats)://[A-Za-z0-9.\-\[\]:]+:\d{1,5}")


def check_hub_url(url: str) -> str:
    """A hub URL as NATS leaf remotes take it, e.g. ``tls://hub1.pref.example:7422``.

    Raises:
        AuthError: anything else (the check also guards the loaded file).
    """
    if not _URL.fullmatch(url):
        raise AuthError(f"{url!r} is not a hub URL (expected tls://HOST:PORT)")
    return url


@dataclass(frozen=True, slots=True)
class HubCredential:
    """A city's hub credential, its parts checked to belong together."""

    prefecture: str
    city_code: str
    city_name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    ca_cert: x509.Certificate
    servers: tuple[x509.Certificate, ...]
    urls: tuple[str, ...]

    @property
    def prefecture_id(self) -> NodeId:
        return prefecture_id(self.ca_cert)

    @property
    def info(self) -> CityCert:
        return verify_city_cert(self.cert, self.ca_cert, now=self.cert.not_valid_before_utc)

    @classmethod
    def assemble(
        cls,
        *,
        prefecture: str,
        city_name: str,
        key: ec.EllipticCurvePrivateKey,
        cert: x509.Certificate,
        ca_cert: x509.Certificate,
        servers: tuple[x509.Certificate, ...],
        urls: tuple[str, ...],
        now: dt.datetime,
    ) -> HubCredential:
        """Check the parts and build the credential.

        Raises:
            AuthError: the key is not the certificate's, a certificate is not signed
                by the enclosed prefecture CA, or the city certificate expired.
        """
        if cert.public_key() != key.public_key():
            raise AuthError("the hub credential's key does not belong to its certificate")
        info = verify_city_cert(cert, ca_cert, now=now)
        for server in servers:
            verify_server_cert(server, ca_cert)
        for url in urls:
            check_hub_url(url)
        return cls(
            prefecture=prefecture,
            city_code=info.code,
            city_name=city_name,
            key=key,
            cert=cert,
            ca_cert=ca_cert,
            servers=servers,
            urls=urls,
        )

    # -- file form -----------------------------------------------------------------

    def to_bytes(self, passphrase: bytes | None = None) -> bytes:
        """The credential file, sealed under ``passphrase`` when one is given."""
        der = serialization.Encoding.DER
        fields = {
            "prefecture": self.prefecture,
            "city_name": self.city_name,
            "key": self.key.private_bytes(
                der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "cert": self.cert.public_bytes(der),
            "ca": self.ca_cert.public_bytes(der),
            "servers": [s.public_bytes(der) for s in self.servers],
            "urls": list(self.urls),
        }
        header = (
            f"meshdesk hub credential for city {self.city_code} ({self.city_name})\n"
            f"prefecture {self.prefecture}, CA fingerprint {self.prefecture_id}\n"
            "Keep it secret: it holds the city's hub key. Import it on the city HQ with\n"
            "'meshdesk hub join FILE', then delete it.\n"
        )
        return _ARMOR.dump(header, fields, passphrase)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        passphrase: bytes | None = None,
        now: dt.datetime,
        source: str = "hub credential",
    ) -> HubCredential:
        """Parse, unseal and check a credential file's bytes.

        Raises:
            AuthError: too big, damaged, tampered, a wrong or missing passphrase, or
                parts that do not belong together.
        """
        obj = _ARMOR.load(data, passphrase=passphrase, source=source)
        servers = _ARMOR.field(obj, "servers", list, source)
        urls = _ARMOR.field(obj, "urls", list, source)
        if len(servers) > _MAX_SERVERS or not all(isinstance(c, bytes) for c in servers):
            raise AuthError(f"{source} is damaged (bad hub server list)")
        if len(urls) > _MAX_URLS or not all(isinstance(u, str) for u in urls):
            raise AuthError(f"{source} is damaged (bad hub URL list)")
        texts = {k: _ARMOR.field(obj, k, str, source) for k in ("prefecture", "city_name")}
        if any(not v or len(v) > _MAX_TEXT for v in texts.values()):
            raise AuthError(f"{source} is damaged (bad names)")
        try:
            key = serialization.load_der_private_key(
                _ARMOR.field(obj, "key", bytes, source), password=None
            )
            cert = x509.load_der_x509_certificate(_ARMOR.field(obj, "cert", bytes, source))
            ca_cert = x509.load_der_x509_certificate(_ARMOR.field(obj, "ca", bytes, source))
            server_certs = tuple(x509.load_der_x509_certificate(c) for c in servers)
        except (ValueError, TypeError) as exc:
            raise AuthError(f"{source} is damaged (bad key or certificate)") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise AuthError(f"{source} does not hold an ECDSA P-256 key")
        return cls.assemble(
            prefecture=texts["prefecture"],
            city_name=texts["city_name"],
            key=key,
            cert=cert,
            ca_cert=ca_cert,
            servers=server_certs,
            urls=tuple(urls),
            now=now,
        )

    @classmethod
    def read(
        cls, path: Path, *, passphrase: bytes | None = None, now: dt.datetime
    ) -> HubCredential:
        """Read a credential file.

        Raises:
            AuthError: missing, unreadable, or not a valid credential.
        """
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_CREDENTIAL_BYTES + 1)
        except OSError as exc:
            raise AuthError(f"cannot read the hub credential {path}: {exc.strerror}") from exc
        return cls.from_bytes(data, passphrase=passphrase, now=now, source=f"hub credential {path}")
