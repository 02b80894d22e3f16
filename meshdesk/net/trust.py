"""Who may link: the deployment CA plus the newest verified revocation list.

OpenSSL checks the certificate chain during the TLS handshake; :class:`TrustPolicy`
checks everything else once the handshake is done, on both ends of a link: that the
certificate is a well-formed node certificate of this deployment, valid now, and not
revoked. It is pure (no I/O, no clock reads), so the in-memory channel, the drill
simulator and the TLS listener all share one set of rules.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk.errors import AuthError
from meshdesk.identity import NodeId, NodeInfo, RevocationList, deployment_id, verify_node_cert

__all__ = ["TrustPolicy", "fingerprint"]


def fingerprint(cert_der: bytes) -> str:
    """A short name for a certificate, for logging peers (refused ones included).

    The node ID when the certificate holds an Ed25519 key, else ``sha256:`` and the
    first 16 hex digits of the certificate's SHA-256 (also for bytes that are not a
    certificate at all).
    """
    try:
        key = x509.load_der_x509_certificate(cert_der).public_key()
    except ValueError:  # not X.509, or a key type cryptography cannot load
        key = None
    if isinstance(key, Ed25519PublicKey):
        return str(NodeId.from_public_key(key))
    return "sha256:" + hashlib.sha256(cert_der).hexdigest()[:16]


class TrustPolicy:
    """The deployment CA certificate and the current revocation list, if any.

    Args:
        ca_cert: The deployment CA certificate.
        crl: A revocation list of this deployment (its signature is checked again).

    Raises:
        AuthError: ``crl`` is not signed by ``ca_cert``.
    """

    __slots__ = ("_ca_cert", "_crl")

    def __init__(self, ca_cert: x509.Certificate, crl: RevocationList | None = None) -> None:
        self._ca_cert = ca_cert
        self._crl = None if crl is None else self._checked(crl)

    @property
    def ca_cert(self) -> x509.Certificate:
        return self._ca_cert

    @property
    def deployment_id(self) -> NodeId:
        return deployment_id(self._ca_cert)

    @property
    def crl(self) -> RevocationList | None:
        """The revocation list in force (the highest-numbered one seen)."""
        return self._crl

    def _checked(self, crl: RevocationList) -> RevocationList:
        # A RevocationList does not record its issuer; re-verify rather than trust
        # that the caller loaded it against this CA.
        return RevocationList.load(crl.der, self._ca_cert)

    def update_revocations(self, crl: RevocationList) -> bool:
        """Adopt ``crl`` if its CRL number is higher than the one in force.

        Returns:
            Whether ``crl`` replaced the list in force.

        Raises:
            AuthError: ``crl`` is not signed by this deployment's CA.
        """
        checked = self._checked(crl)
        if self._crl is not None and checked.number <= self._crl.number:
            return False
        self._crl = checked
        return True

    def is_revoked(self, serial: int) -> bool:
        return self._crl is not None and self._crl.is_revoked(serial)

    @staticmethod
    def fingerprint(cert_der: bytes) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(cert_der)

    def verify_peer(self, cert_der: bytes, *, now: dt.datetime) -> NodeInfo:
        """Check a peer's certificate (DER) and say who the peer is.

        Raises:
            AuthError: not a certificate; not signed by this deployment's CA;
                expired; not a node certificate; revoked. A certificate "not valid
                yet" by our clock is accepted: clocks in a disaster are often wrong
                (see :func:`~meshdesk.identity.pki.verify_node_cert`).
        """
        try:
            cert = x509.load_der_x509_certificate(cert_der)
        except ValueError as exc:
            raise AuthError("peer certificate is not a valid X.509 certificate") from exc
        subject = cert.subject.rfc4514_string()
        if not _signed_by(cert, self._ca_cert):
            raise AuthError(
                f"certificate of {subject} is not signed by this deployment's CA "
                f"({self.deployment_id})"
            )
        if now > cert.not_valid_after_utc:
            raise AuthError(
                f"certificate of {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
            )
        try:
            info = verify_node_cert(cert, self._ca_cert, now=now)
        except (ValueError, x509.ExtensionNotFound) as exc:
            raise AuthError(f"certificate of {subject} is not a node certificate") from exc
        if self.is_revoked(info.serial):
            number = self._crl.number if self._crl is not None else 0
            raise AuthError(
                f"certificate of {info.name} ({info.node_id}, serial {info.serial:x}) "
                f"is revoked (revocation list #{number})"
            )
        return info


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
