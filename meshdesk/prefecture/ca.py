"""The prefecture CA and the certificates it signs for the hub.

A prefecture runs one hub (a NATS JetStream cluster) that every city HQ feeds.
Trust across cities rests on one CA of the prefecture's own, kept in the
prefecture home (:mod:`meshdesk.prefecture.home`). It is ECDSA P-256 because the
hub's NATS servers (Go's ``crypto/tls``) present and verify its certificates;
the mesh's Ed25519 deployment CAs stay inside each city.

It signs two kinds of certificate:

* a **city certificate**, the client certificate a city HQ's NATS leaf node
  presents to the hub. Its subject is ASCII only, so that the hub's NATS
  ``verify_and_map`` users (RFC 2253 strings) match it byte for byte::

      CN=131016,OU=credential 5f0c…e2,O=meshdesk prefecture QSEVK6R-…

  ``CN`` is the city's municipality code (全国地方公共団体コード, six digits with
  its check digit); ``OU`` is the certificate's serial, so that a revoked
  credential of a city that was later re-admitted maps to no user; ``O`` names
  the prefecture by its CA fingerprint. The city's name (any script) stays in the
  hub's roster, not in the certificate.
* a **server certificate** for each of the hub's NATS servers, with
  ``127.0.0.1`` and the given host names and addresses as SANs, usable for
  client connections, leaf nodes and cluster routes alike.
* a **hub client certificate** for the prefecture's own services on the hub
  (``meshdesk hub run``, the projection): client use only, subject
  ``CN=<name>,OU=hub client,O=meshdesk prefecture …``; the hub servers admit it
  as an ``authorization`` user beside the cities.

Like the deployment CA's, these certificates are long-lived on purpose; trust is
withdrawn by revocation (:mod:`meshdesk.prefecture.roster`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshdesk.errors import AuthError, UsageError
from meshdesk.identity.certs import (
    BACKDATE,
    cert_pem,
    is_signed_by,
    key_usage,
    new_p256_key,
    private_key_pem,
    self_signed_ca,
)
from meshdesk.identity.nodeid import NodeId
from meshdesk.identity.pki import check_label

__all__ = [
    "CITY_VALIDITY",
    "CLIENT_OU",
    "PREFECTURE_CA_VALIDITY",
    "SERVER_VALIDITY",
    "CityCert",
    "PrefectureCA",
    "city_cert_info",
    "municipality_code",
    "prefecture_id",
    "verify_city_cert",
    "verify_client_cert",
    "verify_server_cert",
]

PREFECTURE_CA_VALIDITY = dt.timedelta(days=365 * 30)
CITY_VALIDITY = dt.timedelta(days=365 * 20)
SERVER_VALIDITY = dt.timedelta(days=365 * 20)

_ORG_PREFIX = "meshdesk prefecture "
#: The organizational unit of the prefecture's own hub client certificates.
CLIENT_OU = "hub client"
_OU_PREFIX = "credential "
_CODE = re.compile(r"[0-9]{5,6}")
_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


def municipality_code(text: str) -> str:
    """The six-digit municipality code (全国地方公共団体コード) of ``text``.

    Five digits get their check digit appended; six digits must carry the right
    one (a typo in a code read over the phone is caught here, not at the hub).

    Raises:
        UsageError: not five or six digits, or a wrong check digit.
    """
    # Full-width digits (１３１０１６), as Japanese input methods type them, are digits.
    code = unicodedata.normalize("NFKC", text).strip()
    if not _CODE.fullmatch(code):
        raise UsageError(
            f"{text!r} is not a municipality code: give the six digits "
            "(e.g. 131016 for Chiyoda) or the first five"
        )
    total = sum(int(d) * w for d, w in zip(code[:5], (6, 5, 4, 3, 2), strict=True))
    check = str((11 - total % 11) % 10)
    if len(code) == 5:
        return code + check
    if code[5] != check:
        raise UsageError(
            f"municipality code {code} has a wrong check digit (expected {code[:5]}{check})"
        )
    return code


def prefecture_id(ca_cert: x509.Certificate) -> NodeId:
    """The prefecture's fingerprint: SHA-256 of its CA's public key, in node-ID form.

    The form a person compares aloud (four checked groups), as for deployment IDs.
    """
    spki = ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return NodeId.from_public_bytes(spki)


@dataclass(frozen=True, slots=True)
class CityCert:
    """What a verified city certificate says."""

    code: str
    serial: int
    #: The subject as NATS prints it (RFC 2253): the hub's ``verify_and_map`` user.
    subject: str
    not_after: dt.datetime


def city_cert_info(cert: x509.Certificate) -> CityCert:
    """Read a city certificate's subject. Does not check who signed it.

    Raises:
        AuthError: the subject is not a city's.
    """
    subject = cert.subject
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if (
        len(cns) != 1
        or len(ous) != 1
        or str(ous[0].value) != _OU_PREFIX + f"{cert.serial_number:x}"
    ):
        raise AuthError(f"{subject.rfc4514_string()} is not a city's hub certificate")
    code = str(cns[0].value)
    try:
        municipality_code(code)
    except UsageError as exc:
        raise AuthError(f"city certificate names a bad municipality code: {exc}") from exc
    return CityCert(
        code=code,
        serial=cert.serial_number,
        subject=subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
    )


def _check_issued(cert: x509.Certificate, ca_cert: x509.Certificate, what: str) -> None:
    if not is_signed_by(cert, ca_cert) or cert.issuer != ca_cert.subject:
        raise AuthError(
            f"the {what} {cert.subject.rfc4514_string()} is not signed by the prefecture CA "
            f"{prefecture_id(ca_cert)}"
        )
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if basic.ca:
        raise AuthError(f"the {what} is a CA certificate")


def verify_city_cert(
    cert: x509.Certificate, ca_cert: x509.Certificate, *, now: dt.datetime
) -> CityCert:
    """Check a city certificate against the prefecture CA (signature and expiry).

    Revocation is the roster's job (:class:`meshdesk.prefecture.roster.Roster`).

    Raises:
        AuthError: another CA signed it, it was altered, it expired, or it is no
            city's certificate.
    """
    _check_issued(cert, ca_cert, "city certificate")
    if now > cert.not_valid_after_utc:
        raise AuthError(
            f"the city certificate {cert.subject.rfc4514_string()} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d}"
        )
    return city_cert_info(cert)


def verify_server_cert(cert: x509.Certificate, ca_cert: x509.Certificate) -> str:
    """Check a hub server certificate against the prefecture CA; returns its name.

    Raises:
        AuthError: another CA signed it, or it was altered.
    """
    _check_issued(cert, ca_cert, "hub server certificate")
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def verify_client_cert(cert: x509.Certificate, ca_cert: x509.Certificate) -> str:
    """Check a hub client certificate against the prefecture CA; returns its
    subject as NATS maps it (RFC 2253), the hub's ``authorization`` user.

    Raises:
        AuthError: another CA signed it, it was altered, or it is no hub client's.
    """
    _check_issued(cert, ca_cert, "hub client certificate")
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if [str(ou.value) for ou in ous] != [CLIENT_OU]:
        raise AuthError(f"{cert.subject.rfc4514_string()} is not a hub client certificate")
    return cert.subject.rfc4514_string()


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(name):
        raise UsageError(f"{name!r} is neither an IP address nor a host name")
    return x509.DNSName(name.rstrip(".").lower())


@dataclass(frozen=True, slots=True)
class PrefectureCA:
    """The prefecture CA: its key never leaves the prefecture home that created it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str, *, now: dt.datetime) -> PrefectureCA:
        """A new CA for the prefecture called ``name`` (any script, e.g. 静岡県).

        Raises:
            ValueError: an empty, over-long or control-character name.
        """
        name = check_label("prefecture name", name)
        key = new_p256_key()
        cert = self_signed_ca(
            key,
            f"{name} hub CA"[:64],
            name,
            now=now,
            validity=PREFECTURE_CA_VALIDITY,
            path_length=0,
        )
        return cls(key=key, cert=cert)

    @property
    def name(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)

    @property
    def prefecture_id(self) -> NodeId:
        return prefecture_id(self.cert)

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    def _org(self) -> x509.NameAttribute[str]:
        return x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG_PREFIX + str(self.prefecture_id))

    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def _leaf(
        self,
        key: ec.EllipticCurvePrivateKey,
        subject: x509.Name,
        serial: int,
        *,
        usages: list[x509.ObjectIdentifier],
        sans: list[x509.GeneralName],
        validity: dt.timedelta,
        now: dt.datetime,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(sign=True, certs=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_city(
        self, code: str, *, now: dt.datetime
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A fresh key and client certificate for the city with municipality ``code``.

        Raises:
            UsageError: not a municipality code.
        """
        code = municipality_code(code)
        key = new_p256_key()
        serial = x509.random_serial_number()
        subject = x509.Name(
            [
                x509.NameAttribute(
                    NameOID.ORGANIZATION_NAME, _ORG_PREFIX + str(self.prefecture_id)
                ),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{_OU_PREFIX}{serial:x}"),
                x509.NameAttribute(NameOID.COMMON_NAME, code),
            ]
        )
        cert = self._leaf(
            key,
            subject,
            serial,
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
            sans=[],
            validity=CITY_VALIDITY,
            now=now,
        )
        return key, cert

    def issue_server(
        self, name: str, hosts: Iterable[str] = (), *, now: dt.datetime
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A key and certificate for the hub's NATS server ``name``.

        SANs: ``127.0.0.1``, ``name`` when it is a host name, and every entry of
        ``hosts`` (host names or IP addresses). Usable as server (clients, leaf
        nodes) and as client (cluster routes to the other hub servers).

        Raises:
            UsageError: a host that is neither an IP address nor a host name.
            ValueError: an empty or control-character name.
        """
        label = check_label("server name", name)
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        candidates = list(hosts)
        if _HOSTNAME.fullmatch(label):
            candidates.insert(0, label)
        for host in candidates:
            san = _san(host)
            if san not in sans:
                sans.append(san)
        key = new_p256_key()
        subject = x509.Name(
            [
                x509.NameAttribute(
                    NameOID.ORGANIZATION_NAME, _ORG_PREFIX + str(self.prefecture_id)
                ),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "hub server"),
                x509.NameAttribute(NameOID.COMMON_NAME, label),
            ]
        )
        cert = self._leaf(
            key,
            subject,
            x509.random_serial_number(),
            usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            sans=sans,
            validity=SERVER_VALIDITY,
            now=now,
        )
        return key, cert

    def issue_client(
        self, name: str, *, now: dt.datetime
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A key and client certificate for the prefecture's own hub client ``name``
        (the projection, ``meshdesk hub run``).

        Raises:
            ValueError: an empty, control-character or non-ASCII name.
        """
        label = check_label("client name", name)
        if not label.isascii():
            raise ValueError(f"client name {name!r}: ASCII only (NATS maps it byte for byte)")
        key = new_p256_key()
        subject = x509.Name(
            [
                x509.NameAttribute(
                    NameOID.ORGANIZATION_NAME, _ORG_PREFIX + str(self.prefecture_id)
                ),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, CLIENT_OU),
                x509.NameAttribute(NameOID.COMMON_NAME, label),
            ]
        )
        cert = self._leaf(
            key,
            subject,
            x509.random_serial_number(),
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
            sans=[],
            validity=SERVER_VALIDITY,
            now=now,
        )
        return key, cert
