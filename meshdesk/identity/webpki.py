"""The web PKI: ECDSA P-256 certificates for the citizen's HTTPS page.

Browsers refuse Ed25519 server certificates, so the deployment's Ed25519 CA cannot
serve the web port. HQ therefore keeps a second, ECDSA P-256 **web CA** beside it
(``deployment create``). Each kit carries a per-node **web sub-CA** it signed:
``CA:TRUE, pathlen 0``, name-constrained to private address ranges (and ``.local``
names), so a stolen kit can never vouch for a public site. The node signs its own
short-lived **leaf** with its current IP addresses as SANs, offline, and renews it
when they change (:mod:`meshdesk.web.certs`).

A city-owned tablet that trusts the web CA (``/ca.crt``) sees no warning; a
citizen's own phone sees one, which the quick guide explains.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshdesk.errors import KitError
from meshdesk.identity.certs import (
    BACKDATE,
    is_signed_by,
    key_usage,
    load_certificate,
    load_p256_key,
    new_p256_key,
    private_key_pem,
)

__all__ = [
    "LEAF_VALIDITY",
    "PRIVATE_RANGES",
    "WebCA",
    "WebSubCA",
    "leaf_addresses",
]

WEB_CA_VALIDITY = dt.timedelta(days=365 * 30)
SUBCA_VALIDITY = dt.timedelta(days=365 * 20)
#: A leaf is renewed long before this; short enough that a copied one soon dies.
LEAF_VALIDITY = dt.timedelta(days=30)

#: What a node's web sub-CA may vouch for: private, link-local and loopback
#: addresses, and mDNS ``.local`` names. Nothing a public site could use.
PRIVATE_RANGES: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("fc00::/7"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("::1/128"),
)


def leaf_addresses(addresses: Iterable[str]) -> list[str]:
    """The addresses a leaf may name: valid IPs inside :data:`PRIVATE_RANGES`, sorted."""
    kept: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if any(ip.version == net.version and ip in net for net in PRIVATE_RANGES):
            kept.add(ip)
    return [str(ip) for ip in sorted(kept, key=lambda ip: (ip.version, int(ip)))]


@dataclass(frozen=True, slots=True)
class WebCA:
    """The deployment's web CA (ECDSA P-256): only on the HQ that created it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, deployment: str, *, now: dt.datetime) -> WebCA:
        key = new_p256_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{deployment} web CA"[:64]),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, deployment[:64]),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + WEB_CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(key_usage(sign=False, certs=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    @classmethod
    def from_pem(cls, key_pem: bytes, cert_pem: bytes) -> WebCA:
        key = load_p256_key(key_pem, "the web CA key", KitError)
        cert = load_certificate(cert_pem, "the web CA certificate", KitError)
        if cert.public_key() != key.public_key():
            raise KitError("the web CA key does not belong to its certificate")
        return cls(key=key, cert=cert)

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_subca(self, node_name: str, node_id: str, *, now: dt.datetime) -> WebSubCA:
        """A web sub-CA for one node, name-constrained to private ranges."""
        key = new_p256_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name} web"[:64]),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, node_id[:64]),
                *self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
            ]
        )
        permitted: list[x509.GeneralName] = [x509.IPAddress(net) for net in PRIVATE_RANGES]
        permitted.append(x509.DNSName("local"))
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + SUBCA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(sign=False, certs=True), critical=True)
            .add_extension(
                x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return WebSubCA.assemble(key, cert, self.cert)


@dataclass(frozen=True, slots=True)
class WebSubCA:
    """A node's web sub-CA with the web CA certificate it chains to."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    root: x509.Certificate

    @classmethod
    def assemble(
        cls, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, root: x509.Certificate
    ) -> WebSubCA:
        """Check that the parts belong together.

        Raises:
            KitError: the key is not the certificate's, the certificate is not a
                name-constrained CA, or the web CA did not sign it.
        """
        if cert.public_key() != key.public_key():
            raise KitError("the web sub-CA key does not belong to its certificate")
        try:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            cert.extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound as exc:
            raise KitError("the web sub-CA certificate is not a name-constrained CA") from exc
        if not basic.ca:
            raise KitError("the web sub-CA certificate is not a CA")
        root_key = root.public_key()
        if not isinstance(root_key, ec.EllipticCurvePublicKey):
            raise KitError("the web CA certificate does not hold an ECDSA key")
        if not is_signed_by(cert, root):
            raise KitError("the web sub-CA certificate is not signed by the web CA")
        return cls(key=key, cert=cert, root=root)

    @classmethod
    def from_pem(cls, key_pem: bytes, cert_pem: bytes, root_pem: bytes) -> WebSubCA:
        return cls.assemble(
            load_p256_key(key_pem, "the web sub-CA key", KitError),
            load_certificate(cert_pem, "the web sub-CA certificate", KitError),
            load_certificate(root_pem, "the web CA certificate", KitError),
        )

    @classmethod
    def from_der(cls, key_der: bytes, cert_der: bytes, root_der: bytes) -> WebSubCA:
        try:
            key = serialization.load_der_private_key(key_der, password=None)
            cert = x509.load_der_x509_certificate(cert_der)
            root = x509.load_der_x509_certificate(root_der)
        except (ValueError, TypeError) as exc:
            raise KitError(f"the kit's web sub-CA is damaged: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KitError("the kit's web sub-CA key is not ECDSA")
        return cls.assemble(key, cert, root)

    def to_der(self) -> dict[str, bytes]:
        return {
            "key": self.key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "cert": self.cert.public_bytes(serialization.Encoding.DER),
            "ca": self.root.public_bytes(serialization.Encoding.DER),
        }

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def issue_leaf(
        self, addresses: Iterable[str], *, now: dt.datetime
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A fresh leaf key and certificate naming ``addresses`` (private ones only).

        Raises:
            ValueError: no address is left to name.
        """
        names = leaf_addresses(addresses)
        if not names:
            raise ValueError("no private IP address to put in the web certificate")
        key = new_p256_key()
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in names]
        cert = (
            x509.CertificateBuilder()
            # Not an address: OpenSSL would check a host-like CN against the DNS
            # constraint (``local``) and refuse the chain. The SANs name the host.
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshdesk web")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + LEAF_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return key, cert
