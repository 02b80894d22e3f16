"""Name search over sealed cases: keyed hashes of name fragments, never plaintext.

A citizen's name lives only inside the sealed personal block. To find "山田" among a
million cases without decrypting a million blocks per keystroke, and without writing
a name to disk, a node that can read a case stores *terms* for it: every one- and
two-character fragment of the normalised name and reading (furigana), each as the
first 8 bytes of HMAC-SHA256 under a key only this node has (derived from its own
sealing key, so it never needs a file of its own). A query is turned into terms the
same way; a case matches when it holds every term of the query's fragments, and the
page shown is checked against the decrypted names, so a fragment coincidence never
shows a wrong case.

What the terms give away, to someone who copies the database but not the node's
key: nothing readable, and not which names occur; only that two cases share a
fragment (a frequency count over fragments). Anyone with the node's key can open
the sealed blocks themselves anyway. Terms are local: they never travel.

Everything here is pure (no IO, no clock).
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshdesk.cases.model import Personal

__all__ = ["SearchKey", "fragments", "matches", "normalise"]

_INFO = b"meshdesk-search-terms-v1"
#: Hiragana and katakana differ by this offset (U+3041.. vs U+30A1..).
_KANA_SHIFT = 0x60


def normalise(text: str) -> str:
    """What search compares: NFKC, case-folded, katakana as hiragana, and only
    letters and digits (spaces, dashes and punctuation dropped)."""
    out = []
    for ch in unicodedata.normalize("NFKC", text).casefold():
        if "\u30a1" <= ch <= "\u30f6":
            ch = chr(ord(ch) - _KANA_SHIFT)
        if ch.isalnum():
            out.append(ch)
    return "".join(out)


def fragments(text: str) -> set[str]:
    """Every one- and two-character fragment of the normalised text."""
    norm = normalise(text)
    return set(norm) | {norm[i : i + 2] for i in range(len(norm) - 1)}


def _query_fragments(word: str) -> set[str]:
    """What a query word needs: its two-character fragments (one, if it is one)."""
    norm = normalise(word)
    if len(norm) <= 1:
        return set(norm)
    return {norm[i : i + 2] for i in range(len(norm) - 1)}


def matches(word: str, personal: Personal) -> bool:
    """Whether the word (normalised) is part of the name or its reading."""
    norm = normalise(word)
    if not norm:
        return False
    return any(norm in normalise(text) for text in (personal.name, personal.furigana) if text)


class SearchKey:
    """This node's key for search terms (HKDF of its sealing key)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a search key is 32 bytes")
        self._key = key

    @classmethod
    def of(cls, sealing_key: X25519PrivateKey) -> SearchKey:
        raw = sealing_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
        return cls(hkdf.derive(raw))

    def term(self, fragment: str) -> int:
        """One fragment as a signed 64-bit integer (what SQLite stores)."""
        digest = hmac.new(self._key, fragment.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def terms_of(self, personal: Personal) -> list[int]:
        """The terms of a case: fragments of its name and reading, sorted."""
        found: set[str] = set()
        for text in (personal.name, personal.furigana):
            if text:
                found |= fragments(text)
        return sorted({self.term(f) for f in found})

    def query(self, word: str) -> tuple[int, ...]:
        """The terms a case must hold to match ``word`` (empty: it cannot be a name)."""
        return tuple(sorted({self.term(f) for f in _query_fragments(word)}))

    def terms(self, texts: Iterable[str]) -> list[int]:
        """Terms of arbitrary texts (tests and benches)."""
        found: set[str] = set()
        for text in texts:
            found |= fragments(text)
        return sorted({self.term(f) for f in found})
