"""Armored secret files: node kits and hub credentials share one format.

A text file (it survives e-mail, USB sticks and printing): a few header lines for
people — nothing in them is trusted — then base64 of a msgpack map between
BEGIN/END lines::

    meshdesk node kit — keep this file secret, it contains a private key
    -----BEGIN MESHDESK KIT-----
    base64 of a msgpack map
    -----END MESHDESK KIT-----

With a passphrase the armor says ``MESHDESK ENCRYPTED …`` and the map is sealed
with ChaCha20-Poly1305 under a key derived by scrypt (bounded parameters, so a
hostile file cannot make scrypt eat all memory), so a wrong passphrase and a
damaged file are both detected before anything is used. Every decoder limit is
set; every failure is the caller's error class with one clear line.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshdesk.errors import MeshdeskError

__all__ = ["Armor"]

_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


@dataclass(frozen=True, slots=True)
class Armor:
    """One armored file type: its label, version, size limit and error class."""

    #: Short name in messages: ``kit``, ``hub credential``.
    noun: str
    #: What the file is, in messages: ``meshdesk node kit``.
    title: str
    #: Armor label of the plain form: ``MESHDESK KIT``.
    label: str
    version: int
    max_bytes: int
    error: type[MeshdeskError]

    @property
    def sealed_label(self) -> str:
        return self.label.replace("MESHDESK ", "MESHDESK ENCRYPTED ", 1)

    @property
    def aad(self) -> bytes:
        return f"meshdesk-{self.noun.replace(' ', '-')}-v{self.version}".encode("ascii")

    # -- writing -------------------------------------------------------------------

    def dump(self, header: str, fields: Mapping[str, Any], passphrase: bytes | None) -> bytes:
        """The file's bytes: ``header`` lines, then ``fields`` (plus the version),
        sealed under ``passphrase`` when one is given."""
        payload: bytes = msgpack.packb({"v": self.version, **fields})
        label = self.label
        if passphrase is not None:
            salt, nonce = os.urandom(16), os.urandom(12)
            key = _derive(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
            payload = msgpack.packb(
                {
                    "v": self.version,
                    "kdf": "scrypt",
                    "n": _SCRYPT_N,
                    "r": _SCRYPT_R,
                    "p": _SCRYPT_P,
                    "salt": salt,
                    "nonce": nonce,
                    "ct": ChaCha20Poly1305(key).encrypt(nonce, payload, self.aad),
                }
            )
            label = self.sealed_label
            header += "protected by a passphrase\n"
        body = base64.encodebytes(payload).decode("ascii")
        return f"{header}-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()

    # -- reading -------------------------------------------------------------------

    def load(self, data: bytes, *, passphrase: bytes | None, source: str) -> dict[str, Any]:
        """The payload map of a file's bytes, unsealed and of this version.

        Raises:
            error: too large, not text, no armor, truncated, damaged, another
                version, wrong or missing passphrase.
        """
        if len(data) > self.max_bytes:
            raise self.error(f"{source} is too large to be a {self.title} ({len(data)} bytes)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"{source} is not a {self.title} (not text)") from exc
        sealed = f"-----BEGIN {self.sealed_label}-----" in text
        label = self.sealed_label if sealed else self.label
        begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
        if begin not in text:
            raise self.error(f"{source} is not a {self.title} (no '{begin}' line)")
        if end not in text:
            raise self.error(f"{source} is truncated (no '{end}' line)")
        armored = text.split(begin, 1)[1].split(end, 1)[0]
        try:
            payload = base64.b64decode("".join(armored.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.error(f"{source} is damaged (bad base64)") from exc
        obj = self._unpack(payload, source)
        self._check_version(obj, source)
        if sealed:
            obj = self._unseal(obj, passphrase, source)
        return obj

    def field(self, obj: Mapping[str, Any], key: str, kind: type, source: str) -> Any:
        """``obj[key]`` if it is a ``kind``; else the file is damaged."""
        value = obj.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
            raise self.error(f"{source} is damaged (field {key!r} missing or of the wrong type)")
        return value

    def _unpack(self, data: bytes, source: str) -> dict[str, Any]:
        try:
            obj = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                max_str_len=4096,
                max_bin_len=self.max_bytes,
                max_array_len=64,
                max_map_len=64,
                max_ext_len=0,
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise self.error(f"{source} is damaged (not a valid {self.noun} payload)") from exc
        if not isinstance(obj, dict):
            raise self.error(f"{source} is damaged (payload is not a map)")
        return obj

    def _check_version(self, obj: Mapping[str, Any], source: str) -> None:
        if obj.get("v") != self.version:
            raise self.error(
                f"{source} has {self.noun} version {obj.get('v')!r}; expected {self.version}"
            )

    def _unseal(
        self, obj: Mapping[str, Any], passphrase: bytes | None, source: str
    ) -> dict[str, Any]:
        if passphrase is None:
            raise self.error(f"{source} is protected by a passphrase; pass --passphrase-file FILE")
        if obj.get("kdf") != "scrypt":
            raise self.error(f"{source} uses an unknown key derivation {obj.get('kdf')!r}")
        n, r, p = (self.field(obj, k, int, source) for k in ("n", "r", "p"))
        # Bounds keep a hostile file from making scrypt eat all memory or CPU.
        if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4):
            raise self.error(f"{source} asks for unreasonable scrypt parameters")
        key = _derive(passphrase, self.field(obj, "salt", bytes, source), n, r, p)
        try:
            plain = ChaCha20Poly1305(key).decrypt(
                self.field(obj, "nonce", bytes, source),
                self.field(obj, "ct", bytes, source),
                self.aad,
            )
        except (InvalidTag, ValueError) as exc:
            raise self.error(
                f"wrong passphrase for {source} (or the {self.noun} is damaged)"
            ) from exc
        inner = self._unpack(plain, source)
        self._check_version(inner, source)
        return inner
