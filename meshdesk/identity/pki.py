"""The deployment's certificate authority and the node certificates it signs.

Every municipality deployment has one Ed25519 CA, created on the HQ node by
``meshdesk deployment create``. A node certificate names the node in plain X.509
subject attributes, so standard tools can read it too:

========================  =====================================
attribute                 meaning
========================  =====================================
commonName                node name (any script, e.g. 第一小学校)
organizationName          deployment name
localityName              site
title                     role: ``center``, ``hq`` or ``desk``
organizationalUnitName    one per department the node serves
========================  =====================================

Certificates are valid for decades on purpose: a disaster is the wrong moment
for a certificate to expire. Trust is withdrawn by revocation instead.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshdesk.errors import AuthError
from meshdesk.identity.certs import BACKDATE, key_usage, private_key_pem
from meshdesk.identity.nodeid import NodeId

__all__ = [
    "CA_VALIDITY",
    "NODE_VALIDITY",
    "SEALING_KEY_OID",
    "CertificateAuthority",
    "NodeInfo",
    "Role",
    "ca_deployment",
    "check_label",
    "deployment_id",
    "node_info",
    "verify_node_cert",
]

CA_VALIDITY = dt.timedelta(days=365 * 30)
NODE_VALIDITY = dt.timedelta(days=365 * 20)
_LABEL_MAX = 64

#: Certificate extension holding the node's X25519 public key for sealed personal
#: data (an OID under 2.25, the UUID arc, which needs no registration).
SEALING_KEY_OID = x509.ObjectIdentifier("2.25.235319530310255971779519573581153358361")
_OCTET_STRING_32 = b"\x04\x20"
_BAD_LABEL = re.compile(r"[\x00-\x1f\x7f]")


class Role(enum.StrEnum):
    """What a node is for; decides what it may see and do."""

    CENTER = "center"
    HQ = "hq"
    DESK = "desk"


def check_label(kind: str, value: str) -> str:
    """Validate a human label (name, site, department); returns it stripped.

    Raises:
        ValueError: empty, too long, or containing control characters.
    """
    text = value.strip()
    if not text:
        raise ValueError(f"{kind} must not be empty")
    if len(text) > _LABEL_MAX:
        raise ValueError(f"{kind} is longer than {_LABEL_MAX} characters: {text!r}")
    if _BAD_LABEL.search(text):
        raise ValueError(f"{kind} contains control characters: {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a verified node certificate says about its node."""

    node_id: NodeId
    name: str
    site: str
    role: Role
    departments: tuple[str, ...]
    deployment: str
    serial: int
    #: Raw X25519 public key personal data is sealed to (None: this node cannot
    #: be in any case's audience).
    sealing_key: bytes | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "node_id": str(self.node_id),
            "name": self.name,
            "site": self.site,
            "role": str(self.role),
            "departments": list(self.departments),
            "deployment": self.deployment,
            "serial": str(self.serial),
        }


def _public_key(cert: x509.Certificate) -> Ed25519PublicKey:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise AuthError("certificate key is not Ed25519")
    return key


def deployment_id(ca_cert: x509.Certificate) -> NodeId:
    """The deployment's fingerprint: the ID of its CA key, in node-ID form."""
    return NodeId.from_public_key(_public_key(ca_cert))


def _single(name: x509.Name, oid: x509.ObjectIdentifier, what: str) -> str:
    attrs = name.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        raise AuthError(f"certificate subject must hold exactly one {what}")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def ca_deployment(ca_cert: x509.Certificate) -> str:
    """The deployment name written in a CA certificate."""
    return _single(ca_cert.subject, NameOID.ORGANIZATION_NAME, "organization")


def node_info(cert: x509.Certificate) -> NodeInfo:
    """Read a node certificate's subject. Does not check who signed it."""
    subject = cert.subject
    role_text = _single(subject, NameOID.TITLE, "role")
    try:
        role = Role(role_text)
    except ValueError:
        raise AuthError(f"certificate names an unknown role {role_text!r}") from None
    departments = tuple(
        str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    )
    sealing_key: bytes | None = None
    try:
        ext = cert.extensions.get_extension_for_oid(SEALING_KEY_OID).value
    except x509.ExtensionNotFound:
        pass
    else:
        raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        if len(raw) != 34 or not raw.startswith(_OCTET_STRING_32):
            raise AuthError("certificate has a malformed sealing key")
        sealing_key = raw[2:]
    return NodeInfo(
        node_id=NodeId.from_public_key(_public_key(cert)),
        name=_single(subject, NameOID.COMMON_NAME, "name"),
        site=_single(subject, NameOID.LOCALITY_NAME, "site"),
        role=role,
        departments=departments,
        deployment=_single(subject, NameOID.ORGANIZATION_NAME, "deployment"),
        serial=cert.serial_number,
        sealing_key=sealing_key,
    )


def verify_node_cert(
    cert: x509.Certificate, ca_cert: x509.Certificate, *, now: dt.datetime
) -> NodeInfo:
    """Check that ``cert`` is a node certificate signed by this deployment's CA.

    Revocation is checked separately (see :mod:`meshdesk.identity.revocation`).

    Only expiry is judged by ``now``, never "not valid before": a laptop whose clock
    was reset (a dead RTC battery puts it years in the past) must still start and
    link. Trust rests on the CA's signature and on revocation, not on wall time;
    node certificates are long-lived on purpose (:data:`NODE_VALIDITY`).

    Raises:
        AuthError: signed by another CA, tampered, expired, or a CA itself.
    """
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise AuthError(
            f"certificate of {cert.subject.rfc4514_string()} is not signed by the CA of "
            f"deployment {deployment_id(ca_cert)}"
        ) from exc
    if now > cert.not_valid_after_utc:
        raise AuthError(
            f"certificate of {cert.subject.rfc4514_string()} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d} (this machine's clock says {now:%Y-%m-%d})"
        )
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if constraints.ca:
        raise AuthError("a CA certificate cannot be used as a node certificate")
    return node_info(cert)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """The deployment CA: its key never leaves the HQ node that created it."""

    key: Ed25519PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, deployment: str, *, now: dt.datetime) -> CertificateAuthority:
        deployment = check_label("deployment name", deployment)
        key = Ed25519PrivateKey.generate()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{deployment} CA"[:_LABEL_MAX]),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, deployment),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(sign=False, certs=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, algorithm=None)
        )
        return cls(key=key, cert=cert)

    @property
    def deployment(self) -> str:
        return ca_deployment(self.cert)

    @property
    def deployment_id(self) -> NodeId:
        return deployment_id(self.cert)

    def issue(
        self,
        public_key: Ed25519PublicKey,
        *,
        name: str,
        site: str,
        role: Role,
        departments: tuple[str, ...] = (),
        sealing_key: X25519PublicKey | None = None,
        now: dt.datetime,
    ) -> x509.Certificate:
        """Sign a node certificate (with the node's sealing key, when given).

        Raises:
            ValueError: a bad name, site or department label.
        """
        attrs = [
            x509.NameAttribute(NameOID.COMMON_NAME, check_label("node name", name)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.deployment),
            x509.NameAttribute(NameOID.LOCALITY_NAME, check_label("site", site)),
            x509.NameAttribute(NameOID.TITLE, str(role)),
        ]
        seen: list[str] = []
        for dept in departments:
            label = check_label("department", dept)
            if label not in seen:
                seen.append(label)
        attrs.extend(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, d) for d in seen)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + NODE_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(sign=True, certs=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sealing_key is not None:
            raw = sealing_key.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            builder = builder.add_extension(
                x509.UnrecognizedExtension(SEALING_KEY_OID, _OCTET_STRING_32 + raw),
                critical=False,
            )
        return builder.sign(self.key, algorithm=None)

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)
