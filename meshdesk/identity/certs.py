"""Certificate building blocks shared by every CA meshdesk keeps.

Three CAs build certificates the same way: the deployment CA (Ed25519,
:mod:`meshdesk.identity.pki`), the web CA (ECDSA P-256,
:mod:`meshdesk.identity.webpki`) and the prefecture CA (ECDSA P-256,
:mod:`meshdesk.prefecture`). What they share lives here, once: the key usage of a
CA and of a leaf, the backdating of "not valid before", P-256 keys, PEM in and out,
and the check that a certificate was signed by a given CA whatever its key type.

ECDSA P-256 is what browsers and Go's ``crypto/tls`` (NATS) accept; Ed25519 is what
the mesh itself uses.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshdesk.errors import MeshdeskError

__all__ = [
    "BACKDATE",
    "SigningKey",
    "cert_pem",
    "is_signed_by",
    "key_usage",
    "load_certificate",
    "load_p256_key",
    "new_p256_key",
    "private_key_pem",
    "signature_hash",
]

#: Laptops in a shelter may have a wrong clock; accept certificates from a day early.
BACKDATE = dt.timedelta(days=1)

#: The private key types our CAs sign with.
SigningKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def key_usage(*, sign: bool, certs: bool) -> x509.KeyUsage:
    """Leaf keys sign (TLS, events); CA keys sign certificates and CRLs only."""
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certs,
        crl_sign=certs,
        encipher_only=False,
        decipher_only=False,
    )


def signature_hash(key: SigningKey) -> hashes.SHA256 | None:
    """The hash ``CertificateBuilder.sign`` needs: none for Ed25519, SHA-256 for ECDSA."""
    return None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()


def new_p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: SigningKey) -> bytes:
    """Unencrypted PKCS#8 PEM: the file holding it is owner-only (``_fs.write_private``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_p256_key(pem: bytes, what: str, error: type[MeshdeskError]) -> ec.EllipticCurvePrivateKey:
    """Parse a PEM private key that must be ECDSA P-256.

    Raises:
        error: damaged, or another kind of key (``what`` names it in the message).
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise error(f"{what} is damaged: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise error(f"{what} does not hold an ECDSA P-256 key")
    return key


def load_certificate(pem: bytes, what: str, error: type[MeshdeskError]) -> x509.Certificate:
    """Parse one PEM certificate.

    Raises:
        error: not a PEM certificate (``what`` names it in the message).
    """
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise error(f"{what} is damaged: {exc}") from exc


def is_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``cert`` (Ed25519 or ECDSA); names are not compared."""
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = cert.signature_hash_algorithm
            if algorithm is None:
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
            return True
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
