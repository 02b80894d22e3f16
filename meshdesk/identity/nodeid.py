"""Node IDs: short, human-checkable fingerprints of a public key.

A node ID is the first 120 bits of SHA-256 over the raw Ed25519 public key, in
base32, cut into four groups of six characters, each followed by a Luhn mod 32
check character (the idea Syncthing uses for device IDs)::

    MFZWI3D-BONSGYC-YLTMRWG-C43ENR5

Staff read IDs aloud over a radio or compare them on two screens, so a typo in
any group is caught by its check character rather than silently naming another
node. The first group alone (``short``) is what tables show.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["NodeId"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_GROUPS = 4
_GROUP_LEN = 6
_DIGEST_BYTES = 15  # 120 bits -> exactly 24 base32 characters, no padding
_TEXT_LEN = _GROUPS * (_GROUP_LEN + 1) + _GROUPS - 1


def _luhn32(chars: str) -> str:
    """Luhn mod 32 check character over ``chars`` (all in the base32 alphabet)."""
    n = len(_ALPHABET)
    factor = 2
    total = 0
    for ch in reversed(chars):
        addend = factor * _ALPHABET.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // n + addend % n
    return _ALPHABET[(n - total % n) % n]


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """The canonical text form of a node ID, validated on construction."""

    text: str

    def __post_init__(self) -> None:
        if len(self.text) != _TEXT_LEN or NodeId._normalise(self.text) != self.text:
            raise ValueError(f"not a canonical node id: {self.text!r}")

    @classmethod
    def from_public_key(cls, key: Ed25519PublicKey) -> NodeId:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls.from_public_bytes(raw)

    @classmethod
    def from_public_bytes(cls, raw: bytes) -> NodeId:
        digest = hashlib.sha256(raw).digest()[:_DIGEST_BYTES]
        body = base64.b32encode(digest).decode("ascii")
        groups = [body[i : i + _GROUP_LEN] for i in range(0, len(body), _GROUP_LEN)]
        return cls("-".join(g + _luhn32(g) for g in groups))

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Accept an ID as a person types it: any case, dashes or spaces optional.

        Raises:
            ValueError: wrong length, a character outside base32, or a group whose
                check character does not match (a typo).
        """
        canonical = cls._normalise(text)
        if canonical is None:
            raise ValueError(
                f"{text!r} is not a node id (expected 4 groups of 7 characters, "
                "e.g. MFZWI3D-BONSGYC-YLTMRWG-C43ENR5) or one of its groups is mistyped"
            )
        return cls(canonical)

    @staticmethod
    def _normalise(text: str) -> str | None:
        compact = "".join(ch for ch in text.upper() if ch not in "- \t")
        if len(compact) != _GROUPS * (_GROUP_LEN + 1):
            return None
        if any(ch not in _ALPHABET for ch in compact):
            return None
        groups = [compact[i : i + _GROUP_LEN + 1] for i in range(0, len(compact), _GROUP_LEN + 1)]
        if any(_luhn32(g[:-1]) != g[-1] for g in groups):
            return None
        return "-".join(groups)

    @property
    def short(self) -> str:
        """The first group: enough to tell nodes of one deployment apart on screen."""
        return self.text[: _GROUP_LEN + 1]

    @staticmethod
    def looks_like(text: str) -> bool:
        """True when ``text`` could be (a prefix of) an ID rather than a node name."""
        compact = "".join(ch for ch in text.upper() if ch not in "- ")
        return len(compact) >= 4 and all(ch in _ALPHABET for ch in compact)

    def __str__(self) -> str:
        return self.text
