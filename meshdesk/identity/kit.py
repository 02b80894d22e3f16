"""Node kits: everything a laptop needs to join a deployment, in one file.

A kit carries the node's new private key, its certificate and the deployment CA
certificate. It is a text file (it survives e-mail, USB sticks and printing)::

    meshdesk node kit — keep this file secret, it contains a private key
    deployment: 秋田市 (BHSZ7YQ-...)
    node: 第一小学校 (MFZWI3D-...) site: 大町 role: center
    -----BEGIN MESHDESK KIT-----
    base64 of a msgpack map
    -----END MESHDESK KIT-----

The header lines are only for people; nothing in them is trusted. With a
passphrase the armor says ``MESHDESK ENCRYPTED KIT`` and the map is sealed with
ChaCha20-Poly1305 under a key derived by scrypt, so a wrong passphrase and a
damaged file are both detected before anything is used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshdesk.errors import AuthError, KitError
from meshdesk.identity.armor import Armor
from meshdesk.identity.nodeid import NodeId
from meshdesk.identity.pki import NodeInfo, deployment_id, verify_node_cert
from meshdesk.identity.webpki import WebSubCA

__all__ = ["KIT_VERSION", "NodeKit", "read_passphrase"]

KIT_VERSION = 1
_MAX_KIT_BYTES = 64 * 1024
_ARMOR = Armor(
    noun="kit",
    title="meshdesk node kit",
    label="MESHDESK KIT",
    version=KIT_VERSION,
    max_bytes=_MAX_KIT_BYTES,
    error=KitError,
)


def read_passphrase(path: Path) -> bytes:
    """Read a passphrase file (first line, without the line break).

    Raises:
        KitError: unreadable or empty.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KitError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    first = data.splitlines()[0] if data else b""
    if not first.strip():
        raise KitError(f"passphrase file {path} is empty")
    return first


@dataclass(frozen=True, slots=True)
class NodeKit:
    """A node's key and certificate with its deployment's CA certificate."""

    key: Ed25519PrivateKey
    cert: x509.Certificate
    ca_cert: x509.Certificate
    info: NodeInfo
    #: Opens personal data sealed to this node; its public half is in ``cert``.
    sealing_key: X25519PrivateKey | None = None
    #: Signs the node's HTTPS certificate for citizens' phones (kits issued before
    #: the web port have none: the node then runs without it).
    web: WebSubCA | None = None

    @classmethod
    def assemble(
        cls,
        key: Ed25519PrivateKey,
        cert: x509.Certificate,
        ca_cert: x509.Certificate,
        *,
        sealing_key: X25519PrivateKey | None = None,
        web: WebSubCA | None = None,
        now: dt.datetime,
    ) -> NodeKit:
        """Check that the parts belong together and return the kit.

        Raises:
            KitError: a key does not match the certificate, or the certificate
                is not signed by the CA.
        """
        if cert.public_key() != key.public_key():
            raise KitError("the kit's private key does not belong to its certificate")
        try:
            info = verify_node_cert(cert, ca_cert, now=now)
        except AuthError as exc:
            raise KitError(f"the kit's certificate does not hold up: {exc}") from exc
        if sealing_key is not None:
            raw = sealing_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            if raw != info.sealing_key:
                raise KitError("the kit's sealing key does not belong to its certificate")
        elif info.sealing_key is not None:
            raise KitError("the kit lacks the sealing key its certificate names")
        return cls(key=key, cert=cert, ca_cert=ca_cert, info=info, sealing_key=sealing_key, web=web)

    @property
    def node_id(self) -> NodeId:
        return self.info.node_id

    @property
    def deployment_id(self) -> NodeId:
        return deployment_id(self.ca_cert)

    # -- writing -------------------------------------------------------------------

    def to_bytes(self, passphrase: bytes | None = None) -> bytes:
        """Serialise the kit, sealed under ``passphrase`` when one is given."""
        raw = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw)
        fields: dict[str, object] = {
            "key": self.key.private_bytes(*raw, serialization.NoEncryption()),
            "cert": self.cert.public_bytes(serialization.Encoding.DER),
            "ca": self.ca_cert.public_bytes(serialization.Encoding.DER),
        }
        if self.sealing_key is not None:
            fields["seal"] = self.sealing_key.private_bytes(*raw, serialization.NoEncryption())
        if self.web is not None:
            fields["web"] = self.web.to_der()
        info = self.info
        header = (
            "meshdesk node kit — keep this file secret, it contains a private key\n"
            f"deployment: {info.deployment} ({self.deployment_id})\n"
            f"node: {info.name} ({info.node_id}) site: {info.site} role: {info.role}\n"
        )
        return _ARMOR.dump(header, fields, passphrase)

    # -- reading -------------------------------------------------------------------

    @classmethod
    def from_bytes(
        cls, data: bytes, *, passphrase: bytes | None, now: dt.datetime, source: str = "kit"
    ) -> NodeKit:
        """Parse, unseal and verify a kit.

        Raises:
            KitError: truncated, damaged, tampered, wrong or missing passphrase.
        """
        obj = _ARMOR.load(data, passphrase=passphrase, source=source)
        try:
            key = Ed25519PrivateKey.from_private_bytes(_ARMOR.field(obj, "key", bytes, source))
            cert = x509.load_der_x509_certificate(_ARMOR.field(obj, "cert", bytes, source))
            ca_cert = x509.load_der_x509_certificate(_ARMOR.field(obj, "ca", bytes, source))
            sealing = (
                X25519PrivateKey.from_private_bytes(_ARMOR.field(obj, "seal", bytes, source))
                if "seal" in obj
                else None
            )
        except ValueError as exc:
            raise KitError(f"{source} is damaged (bad key or certificate)") from exc
        web = None
        if "web" in obj:
            parts = _ARMOR.field(obj, "web", dict, source)
            der = (_ARMOR.field(parts, k, bytes, source) for k in ("key", "cert", "ca"))
            web = WebSubCA.from_der(*der)
        return cls.assemble(key, cert, ca_cert, sealing_key=sealing, web=web, now=now)

    @classmethod
    def read(cls, path: Path, *, passphrase: bytes | None, now: dt.datetime) -> NodeKit:
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise KitError(f"no kit file at {path}") from exc
        except OSError as exc:
            raise KitError(f"cannot read kit {path}: {exc.strerror}") from exc
        return cls.from_bytes(data, passphrase=passphrase, now=now, source=f"kit {path}")
