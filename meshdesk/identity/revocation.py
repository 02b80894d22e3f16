"""CA-signed revocation lists (standard X.509 CRLs).

Used by two CAs: the deployment CA (Ed25519) revokes nodes, and the prefecture
CA (ECDSA P-256, :mod:`meshdesk.prefecture`) revokes cities' hub credentials.

HQ withdraws trust from a lost or stolen laptop by revoking its certificate. The
list is an ordinary X.509 CRL signed by the deployment CA, so it can be checked
by OpenSSL during the TLS handshake as well as by meshdesk, and its CRL number
orders versions: a node keeps the highest-numbered list it has verified.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk.errors import AuthError
from meshdesk.identity.certs import SigningKey, signature_hash
from meshdesk.identity.pki import deployment_id

__all__ = ["RevocationList", "RevokingCA"]

#: A CRL past its next-update date is refused by OpenSSL; ours never expire, they
#: are superseded by a higher CRL number.
_CRL_VALIDITY = dt.timedelta(days=365 * 30)


class RevokingCA(Protocol):
    """A CA that can sign a revocation list: its key and its certificate."""

    @property
    def key(self) -> SigningKey: ...

    @property
    def cert(self) -> x509.Certificate: ...


def _issuer(ca_cert: x509.Certificate) -> str:
    key = ca_cert.public_key()
    if isinstance(key, Ed25519PublicKey):
        return f"the CA of deployment {deployment_id(ca_cert)}"
    return f"the CA {ca_cert.subject.rfc4514_string()}"


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A verified revocation list: which certificate serials are no longer trusted."""

    number: int
    serials: frozenset[int]
    der: bytes

    @classmethod
    def build(
        cls,
        ca: RevokingCA,
        entries: Iterable[tuple[int, dt.datetime]],
        *,
        number: int,
        now: dt.datetime,
    ) -> RevocationList:
        """Sign a list revoking ``(serial, revoked_at)`` entries as version ``number``."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + _CRL_VALIDITY)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
            )
        )
        serials = set()
        for serial, revoked_at in entries:
            if serial in serials:
                continue
            serials.add(serial)
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(revoked_at)
                .build()
            )
        crl = builder.sign(ca.key, algorithm=signature_hash(ca.key))
        return cls(
            number=number,
            serials=frozenset(serials),
            der=crl.public_bytes(serialization.Encoding.DER),
        )

    @classmethod
    def load(cls, der: bytes, ca_cert: x509.Certificate) -> RevocationList:
        """Parse and verify a list from a peer or the store.

        Raises:
            AuthError: not a CRL, not signed by ``ca_cert`` (the deployment's CA, or
                the prefecture's), or no CRL number.
        """
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError as exc:
            raise AuthError("revocation list is not a valid X.509 CRL") from exc
        ca_key = ca_cert.public_key()
        if not isinstance(
            ca_key, Ed25519PublicKey | ec.EllipticCurvePublicKey
        ) or not crl.is_signature_valid(ca_key):
            raise AuthError(f"revocation list is not signed by {_issuer(ca_cert)}")
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound as exc:
            raise AuthError("revocation list has no CRL number") from exc
        return cls(
            number=number,
            serials=frozenset(entry.serial_number for entry in crl),
            der=der,
        )

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials

    def pem(self) -> bytes:
        """PEM form, for ``ssl.SSLContext.load_verify_locations(cadata=...)``."""
        return x509.load_der_x509_crl(self.der).public_bytes(serialization.Encoding.PEM)
