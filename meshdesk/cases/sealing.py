"""Personal data sealed to a case's audience; relays carry it without reading it.

A sealed block is a msgpack map: the plaintext encrypted once under a random data
key (ChaCha20-Poly1305), and that data key wrapped for each audience node. A wrap
is ECIES-style: an ephemeral X25519 key agrees a secret with the node's certified
sealing key, HKDF-SHA256 turns it into a key-encryption key, and the AEAD wraps
the data key. The AAD binds the block to its case and purpose, so a block cannot
be replayed into another case. Adding a department to the consent lets any node
that can open the block wrap the same data key for the new members (``grant``);
the ciphertext never changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshdesk.errors import AuthError, SyncError
from meshdesk.identity import NodeInfo, Role

__all__ = [
    "SEAL_VERSION",
    "Recipient",
    "audience",
    "grant",
    "open_sealed",
    "recipients_of",
    "seal",
]

SEAL_VERSION = 1
_INFO = b"meshdesk-seal-v1"
_ZERO_NONCE = bytes(12)  # each key-encryption key is used exactly once
_MAX_BLOCK = 256 * 1024
_MAX_RECIPIENTS = 512


@dataclass(frozen=True, slots=True)
class Recipient:
    """An audience node: its id and its certified X25519 sealing key (raw bytes)."""

    node_id: str
    sealing_key: bytes


def audience(
    *,
    origin: str,
    consent: Iterable[str],
    directory: Iterable[NodeInfo],
) -> list[Recipient]:
    """Who may read a case's personal block: its origin, every HQ node, and every
    node whose certificate lists a department the citizen consented to share with.

    Nodes without a sealing key in their certificate cannot be recipients.
    """
    wanted = set(consent)
    chosen: dict[str, Recipient] = {}
    for info in directory:
        node_id = str(info.node_id)
        member = node_id == origin or info.role is Role.HQ or bool(wanted & set(info.departments))
        if member and info.sealing_key is not None:
            chosen[node_id] = Recipient(node_id, info.sealing_key)
    return [chosen[k] for k in sorted(chosen)]


def _kek(shared: bytes, eph_pub: bytes, recipient_pub: bytes, aad: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=_INFO + aad
    )
    return hkdf.derive(shared)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _wrap(data_key: bytes, recipient: Recipient, aad: bytes) -> list[bytes]:
    eph = X25519PrivateKey.generate()
    eph_pub = _raw(eph.public_key())
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient.sealing_key))
    kek = _kek(shared, eph_pub, recipient.sealing_key, aad)
    wrapped = ChaCha20Poly1305(kek).encrypt(_ZERO_NONCE, data_key, recipient.node_id.encode())
    return [eph_pub, wrapped]


def seal(plaintext: bytes, recipients: Iterable[Recipient], *, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` so that exactly ``recipients`` can open it."""
    people = list(recipients)
    if not people:
        raise ValueError("a sealed block needs at least one recipient")
    data_key = ChaCha20Poly1305.generate_key()
    nonce = os.urandom(12)
    ciphertext = ChaCha20Poly1305(data_key).encrypt(nonce, plaintext, aad)
    keys = {r.node_id: _wrap(data_key, r, aad) for r in people}
    return bytes(
        msgpack.packb(
            {"v": SEAL_VERSION, "n": nonce, "c": ciphertext, "k": keys}, use_bin_type=True
        )
    )


def _parse(blob: bytes) -> dict[str, Any]:
    if len(blob) > _MAX_BLOCK:
        raise SyncError(f"sealed block of {len(blob)} bytes is over the limit")
    try:
        obj = msgpack.unpackb(
            blob, raw=False, strict_map_key=True, max_str_len=256, max_bin_len=_MAX_BLOCK,
            max_array_len=4, max_map_len=_MAX_RECIPIENTS, max_ext_len=0,
        )  # fmt: skip
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SyncError("sealed block is malformed") from exc
    if not (
        isinstance(obj, dict)
        and obj.get("v") == SEAL_VERSION
        and isinstance(obj.get("n"), bytes)
        and len(obj["n"]) == 12
        and isinstance(obj.get("c"), bytes)
        and isinstance(obj.get("k"), dict)
        and all(
            isinstance(k, str)
            and isinstance(v, list)
            and len(v) == 2
            and all(isinstance(x, bytes) for x in v)
            for k, v in obj["k"].items()
        )
    ):
        raise SyncError("sealed block is malformed")
    return obj


def recipients_of(blob: bytes) -> set[str]:
    """Node ids a block is sealed to (readable by anyone: it is routing metadata)."""
    return set(_parse(blob)["k"])


def _data_key(obj: Mapping[str, Any], node_id: str, key: X25519PrivateKey, aad: bytes) -> bytes:
    entry = obj["k"].get(node_id)
    if entry is None:
        raise AuthError("this node is not in the audience of the sealed block")
    eph_pub, wrapped = entry
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        kek = _kek(shared, eph_pub, _raw(key.public_key()), aad)
        data_key = ChaCha20Poly1305(kek).decrypt(_ZERO_NONCE, wrapped, node_id.encode())
    except (InvalidTag, ValueError) as exc:
        raise AuthError("the sealed block's key for this node does not open (tampered?)") from exc
    if len(data_key) != 32:
        raise AuthError("the sealed block's key for this node is malformed")
    return data_key


def open_sealed(blob: bytes, node_id: str, key: X25519PrivateKey, *, aad: bytes) -> bytes:
    """Decrypt a block sealed to ``node_id``.

    Raises:
        AuthError: not in the audience, or the block was tampered with.
        SyncError: the block is malformed.
    """
    obj = _parse(blob)
    data_key = _data_key(obj, node_id, key, aad)
    try:
        return ChaCha20Poly1305(data_key).decrypt(obj["n"], obj["c"], aad)
    except InvalidTag as exc:
        raise AuthError("the sealed block does not decrypt (tampered?)") from exc


def grant(
    blob: bytes,
    node_id: str,
    key: X25519PrivateKey,
    newcomers: Iterable[Recipient],
    *,
    aad: bytes,
) -> bytes:
    """Re-seal for more recipients, keeping the ciphertext: needs a member's key.

    Raises:
        AuthError: this node cannot open the block itself.
    """
    obj = _parse(blob)
    data_key = _data_key(obj, node_id, key, aad)
    keys = dict(obj["k"])
    for person in newcomers:
        if person.node_id not in keys:
            keys[person.node_id] = _wrap(data_key, person, aad)
    obj = {**obj, "k": keys}
    return bytes(msgpack.packb(obj, use_bin_type=True))
