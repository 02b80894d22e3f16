"""Time-ordered ids for cases and the items inside them (notes, referrals, calls).

The layout is UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version nibble
7, 12 random bits, the variant ``10``, 62 random bits. Ids made on different nodes
with no coordination never collide in practice (74 random bits), and sorting the
text sorts by creation time, so the case queue and the store's index stay in
creation order for free.

The canonical text is the lowercase 8-4-4-4-12 form. Peers must send exactly that
(:func:`is_valid_id`); operators may type upper case (:func:`check_id`). Finding a
case by a unique prefix is the CLI's job: it needs the store.
"""

from __future__ import annotations

import os
import random
import re
import uuid

from meshdesk.errors import UsageError

__all__ = ["check_id", "id_wall_ms", "is_valid_id", "new_id"]

_WALL_MAX = (1 << 48) - 1
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def new_id(wall_ms: int, rng: random.Random | None = None) -> str:
    """A fresh UUIDv7 for ``wall_ms``, canonical text.

    Args:
        wall_ms: Milliseconds since the epoch (normally the wall part of the HLC of
            the event that creates the item, so the id and the event agree).
        rng: Source of the 74 random bits; ``None`` uses ``os.urandom``. Tests pass
            a seeded ``random.Random`` for reproducible ids.

    Raises:
        ValueError: ``wall_ms`` does not fit 48 bits.
    """
    if isinstance(wall_ms, bool) or not 0 <= wall_ms <= _WALL_MAX:
        raise ValueError(f"wall_ms does not fit a UUIDv7: {wall_ms!r}")
    rand = rng.getrandbits(74) if rng is not None else int.from_bytes(os.urandom(10)) >> 6
    rand_a = rand >> 62
    rand_b = rand & ((1 << 62) - 1)
    value = (wall_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def is_valid_id(text: object) -> bool:
    """True when ``text`` is a canonical (lowercase) UUIDv7, as peers must send it."""
    return isinstance(text, str) and _CANONICAL.fullmatch(text) is not None


def check_id(text: str, what: str = "case id") -> str:
    """Validate an id an operator typed; returns the canonical form.

    Raises:
        UsageError: not a full UUIDv7 (prefixes are resolved by the CLI first).
    """
    canonical = text.strip().lower()
    if not is_valid_id(canonical):
        raise UsageError(
            f"{what} {text!r} is not a valid id "
            "(expected a UUIDv7 such as 0190f1c2-7a3b-7c4d-8e5f-0123456789ab)"
        )
    return canonical


def id_wall_ms(text: str) -> int:
    """Creation time (ms since the epoch) encoded in a valid id.

    Raises:
        ValueError: ``text`` is not a canonical id.
    """
    if not is_valid_id(text):
        raise ValueError(f"not a canonical id: {text!r}")
    return int(text[:8] + text[9:13], 16)
