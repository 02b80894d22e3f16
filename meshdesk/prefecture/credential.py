"""The hub credential: the one file a prefecture hands a city HQ.

It carries everything the city's NATS leaf node needs to reach the hub: the
city's private key and client certificate, the prefecture CA certificate (what
the city pins), the hub servers' certificates and the hub's URLs. The file is
text: a few human lines (untrusted: shown, never believed) and an armored JSON
payload::

    meshdesk hub credential for city 131016 (千代田区)
    prefecture 東京都, CA fingerprint QSEVK6R-…
    -----BEGIN MESHDESK HUB CREDENTIAL-----
    eyJ2ZXJzaW9uIjogMSwg…
    -----END MESHDESK HUB CREDENTIAL-----

Like a kit it holds a private key: it travels by hand (USB stick) and is
deleted once imported. :meth:`HubCredential.from_bytes` checks that the parts
belong together (the key is the certificate's, the prefecture CA signed the city
and server certificates); whether that CA is the *right* one is the city's pin
(:mod:`meshdesk.prefecture.city`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshdesk.errors import AuthError
from meshdesk.identity.certs import cert_pem, load_certificate, load_p256_key, private_key_pem
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
_ARMOR = "MESHDESK HUB CREDENTIAL"
_BLOCK = re.compile(
    rf"-----BEGIN {_ARMOR}-----\s*\n(?P<body>[A-Za-z0-9+/=\s]+?)\n-----END {_ARMOR}-----"
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

    def to_bytes(self) -> bytes:
        payload = {
            "version": CREDENTIAL_VERSION,
            "prefecture": self.prefecture,
            "city_name": self.city_name,
            "key": private_key_pem(self.key).decode("ascii"),
            "cert": cert_pem(self.cert).decode("ascii"),
            "ca": cert_pem(self.ca_cert).decode("ascii"),
            "servers": [cert_pem(s).decode("ascii") for s in self.servers],
            "urls": list(self.urls),
        }
        body = base64.encodebytes(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
        header = (
            f"meshdesk hub credential for city {self.city_code} ({self.city_name})\n"
            f"prefecture {self.prefecture}, CA fingerprint {self.prefecture_id}\n"
            "Import on the city HQ: meshdesk hub join THIS-FILE; then delete this file.\n"
        )
        return (
            header
            + f"-----BEGIN {_ARMOR}-----\n"
            + body.decode("ascii")
            + f"-----END {_ARMOR}-----\n"
        ).encode("utf-8")

    @classmethod
    def from_bytes(
        cls, data: bytes, *, now: dt.datetime, source: str = "hub credential"
    ) -> HubCredential:
        """Parse and check a credential file's bytes.

        Raises:
            AuthError: too big, damaged, tampered, or its parts do not belong together.
        """
        if len(data) > MAX_CREDENTIAL_BYTES:
            raise AuthError(
                f"{source} is larger than {MAX_CREDENTIAL_BYTES} bytes: not a credential"
            )
        text = data.decode("utf-8", "replace")
        match = _BLOCK.search(text)
        if match is None:
            raise AuthError(f"{source} is not a meshdesk hub credential (no {_ARMOR} block)")
        try:
            raw = base64.b64decode("".join(match["body"].split()), validate=True)
            obj = json.loads(raw.decode("utf-8"))
        except (binascii.Error, ValueError) as exc:
            raise AuthError(f"{source} is damaged (was it edited or cut short?): {exc}") from exc
        if not isinstance(obj, dict) or obj.get("version") != CREDENTIAL_VERSION:
            raise AuthError(f"{source} is not a version {CREDENTIAL_VERSION} hub credential")
        servers = _list(obj, "servers", _MAX_SERVERS, source)
        urls = _list(obj, "urls", _MAX_URLS, source)
        return cls.assemble(
            prefecture=_text(obj, "prefecture", source),
            city_name=_text(obj, "city_name", source),
            key=load_p256_key(_pem(obj, "key", source), f"{source}: the city key", AuthError),
            cert=load_certificate(
                _pem(obj, "cert", source), f"{source}: the city certificate", AuthError
            ),
            ca_cert=load_certificate(
                _pem(obj, "ca", source), f"{source}: the prefecture CA certificate", AuthError
            ),
            servers=tuple(
                load_certificate(
                    s.encode("ascii"), f"{source}: a hub server certificate", AuthError
                )
                for s in servers
            ),
            urls=tuple(urls),
            now=now,
        )

    @classmethod
    def read(cls, path: Path, *, now: dt.datetime) -> HubCredential:
        """Read a credential file.

        Raises:
            AuthError: missing, unreadable, or not a valid credential.
        """
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_CREDENTIAL_BYTES + 1)
        except OSError as exc:
            raise AuthError(f"cannot read the hub credential {path}: {exc.strerror}") from exc
        return cls.from_bytes(data, now=now, source=f"hub credential {path}")


def _text(obj: dict[str, Any], key: str, source: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise AuthError(f"{source} has a bad {key!r}")
    return value


def _pem(obj: dict[str, Any], key: str, source: str) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str) or not value.isascii() or len(value) > 16 * 1024:
        raise AuthError(f"{source} has a bad {key!r}")
    return value.encode("ascii")


def _list(obj: dict[str, Any], key: str, limit: int, source: str) -> list[str]:
    value = obj.get(key)
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(v, str) and v.isascii() and len(v) <= 16 * 1024 for v in value)
    ):
        raise AuthError(f"{source} has a bad {key!r} list")
    return value
