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

import base64
import binascii
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshdesk.errors import AuthError, KitError
from meshdesk.identity.nodeid import NodeId
from meshdesk.identity.pki import NodeInfo, deployment_id, verify_node_cert
from meshdesk.identity.webpki import WebSubCA

__all__ = ["KIT_VERSION", "NodeKit", "read_passphrase"]

KIT_VERSION = 1
_PLAIN = "MESHDESK KIT"
_SEALED = "MESHDESK ENCRYPTED KIT"
_AAD = b"meshdesk-kit-v1"
_MAX_KIT_BYTES = 64 * 1024
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1


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


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=4096,
            max_bin_len=_MAX_KIT_BYTES,
            max_array_len=64,
            max_map_len=64,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise KitError(f"{what} is damaged (not a valid kit payload)") from exc
    if not isinstance(obj, dict):
        raise KitError(f"{what} is damaged (payload is not a map)")
    return obj


def _field(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise KitError(f"{what} is damaged (field {key!r} missing or of the wrong type)")
    return value


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
        payload = msgpack.packb(
            {
                "v": KIT_VERSION,
                "key": self.key.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                ),
                "cert": self.cert.public_bytes(serialization.Encoding.DER),
                "ca": self.ca_cert.public_bytes(serialization.Encoding.DER),
                **(
                    {
                        "seal": self.sealing_key.private_bytes(
                            serialization.Encoding.Raw,
                            serialization.PrivateFormat.Raw,
                            serialization.NoEncryption(),
                        )
                    }
                    if self.sealing_key is not None
                    else {}
                ),
                **({"web": self.web.to_der()} if self.web is not None else {}),
            }
        )
        label = _PLAIN
        if passphrase is not None:
            salt, nonce = os.urandom(16), os.urandom(12)
            key = _derive(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
            payload = msgpack.packb(
                {
                    "v": KIT_VERSION,
                    "kdf": "scrypt",
                    "n": _SCRYPT_N,
                    "r": _SCRYPT_R,
                    "p": _SCRYPT_P,
                    "salt": salt,
                    "nonce": nonce,
                    "ct": ChaCha20Poly1305(key).encrypt(nonce, payload, _AAD),
                }
            )
            label = _SEALED
        body = base64.encodebytes(payload).decode("ascii")
        info = self.info
        header = (
            "meshdesk node kit — keep this file secret, it contains a private key\n"
            f"deployment: {info.deployment} ({self.deployment_id})\n"
            f"node: {info.name} ({info.node_id}) site: {info.site} role: {info.role}\n"
        )
        if passphrase is not None:
            header += "protected by a passphrase\n"
        return f"{header}-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()

    # -- reading -------------------------------------------------------------------

    @classmethod
    def from_bytes(
        cls, data: bytes, *, passphrase: bytes | None, now: dt.datetime, source: str = "kit"
    ) -> NodeKit:
        """Parse, unseal and verify a kit.

        Raises:
            KitError: truncated, damaged, tampered, wrong or missing passphrase.
        """
        if len(data) > _MAX_KIT_BYTES:
            raise KitError(f"{source} is too large to be a node kit ({len(data)} bytes)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KitError(f"{source} is not a meshdesk node kit (not text)") from exc
        sealed = f"-----BEGIN {_SEALED}-----" in text
        label = _SEALED if sealed else _PLAIN
        begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
        if begin not in text:
            raise KitError(f"{source} is not a meshdesk node kit (no '{begin}' line)")
        if end not in text:
            raise KitError(f"{source} is truncated (no '{end}' line)")
        armored = text.split(begin, 1)[1].split(end, 1)[0]
        try:
            payload = base64.b64decode("".join(armored.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KitError(f"{source} is damaged (bad base64)") from exc
        obj = _unpack(payload, source)
        if obj.get("v") != KIT_VERSION:
            raise KitError(f"{source} has kit version {obj.get('v')!r}; expected {KIT_VERSION}")
        if sealed:
            obj = cls._unseal(obj, passphrase, source)
        try:
            key = Ed25519PrivateKey.from_private_bytes(_field(obj, "key", bytes, source))
            cert = x509.load_der_x509_certificate(_field(obj, "cert", bytes, source))
            ca_cert = x509.load_der_x509_certificate(_field(obj, "ca", bytes, source))
            sealing = (
                X25519PrivateKey.from_private_bytes(_field(obj, "seal", bytes, source))
                if "seal" in obj
                else None
            )
        except ValueError as exc:
            raise KitError(f"{source} is damaged (bad key or certificate)") from exc
        web = None
        if "web" in obj:
            parts = _field(obj, "web", dict, source)
            der = (_field(parts, k, bytes, source) for k in ("key", "cert", "ca"))
            web = WebSubCA.from_der(*der)
        return cls.assemble(key, cert, ca_cert, sealing_key=sealing, web=web, now=now)

    @staticmethod
    def _unseal(obj: dict[str, Any], passphrase: bytes | None, source: str) -> dict[str, Any]:
        if passphrase is None:
            raise KitError(f"{source} is protected by a passphrase; pass --passphrase-file FILE")
        if obj.get("kdf") != "scrypt":
            raise KitError(f"{source} uses an unknown key derivation {obj.get('kdf')!r}")
        n, r, p = (_field(obj, k, int, source) for k in ("n", "r", "p"))
        # Bounds keep a hostile kit from making scrypt eat all memory or CPU.
        if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4):
            raise KitError(f"{source} asks for unreasonable scrypt parameters")
        key = _derive(passphrase, _field(obj, "salt", bytes, source), n, r, p)
        try:
            plain = ChaCha20Poly1305(key).decrypt(
                _field(obj, "nonce", bytes, source), _field(obj, "ct", bytes, source), _AAD
            )
        except (InvalidTag, ValueError) as exc:
            raise KitError(f"wrong passphrase for {source} (or the kit is damaged)") from exc
        inner = _unpack(plain, source)
        if inner.get("v") != KIT_VERSION:
            raise KitError(f"{source} has kit version {inner.get('v')!r}; expected {KIT_VERSION}")
        return inner

    @classmethod
    def read(cls, path: Path, *, passphrase: bytes | None, now: dt.datetime) -> NodeKit:
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise KitError(f"no kit file at {path}") from exc
        except OSError as exc:
            raise KitError(f"cannot read kit {path}: {exc.strerror}") from exc
        return cls.from_bytes(data, passphrase=passphrase, now=now, source=f"kit {path}")
