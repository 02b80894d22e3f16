"""Pure checks behind :meth:`Store.append_events`: event shapes and chain planning.

No I/O here: given the stored heads and a sorted batch, decide what to insert or
why the whole batch must be refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshdesk.errors import StoreError
from meshdesk.store.records import ZERO_HASH, StoredEvent

__all__ = ["INT64_MAX", "Heads", "check_event", "check_int64", "plan_append"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Heads = dict[str, tuple[int, bytes]]


def check_int64(name: str, value: object) -> None:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise StoreError(f"{name} must be a 64-bit integer, got {value!r}")


def check_event(event: StoredEvent) -> None:
    """Refuse shapes SQLite would reject with a less helpful message."""
    author, seq, hlc, kind = event.author, event.seq, event.hlc, event.kind
    if (
        type(author) is str
        and author
        and type(seq) is int
        and 1 <= seq <= INT64_MAX
        and type(hlc) is int
        and INT64_MIN <= hlc <= INT64_MAX
        and type(kind) is int
        and INT64_MIN <= kind <= INT64_MAX
        and (event.case_id is None or type(event.case_id) is str)
        and type(event.body) is bytes
        and type(event.prev_hash) is bytes
        and len(event.prev_hash) == 32
        and type(event.hash) is bytes
        and len(event.hash) == 32
    ):
        return  # the common case, checked without building messages
    where = f"event {author!r}#{seq!r}"
    if not isinstance(author, str) or not author:
        raise StoreError(f"{where}: author must be a non-empty string")
    if type(seq) is not int or not 1 <= seq <= INT64_MAX:
        raise StoreError(f"{where}: seq must be a positive 64-bit integer")
    check_int64(f"{where}: hlc", hlc)
    check_int64(f"{where}: kind", kind)
    if event.case_id is not None and not isinstance(event.case_id, str):
        raise StoreError(f"{where}: case_id must be a string or None")
    if not isinstance(event.body, bytes):
        raise StoreError(f"{where}: body must be bytes")
    for name, digest in (("prev_hash", event.prev_hash), ("hash", event.hash)):
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise StoreError(f"{where}: {name} must be 32 bytes")
    # isinstance passed where the fast path wanted exact types (a str or bytes
    # subclass): SQLite binds those like their base types.


def plan_append(
    batch: Sequence[StoredEvent],
    heads: Heads,
    stored: dict[tuple[str, int], bytes],
) -> tuple[list[StoredEvent], Heads]:
    """Decide which events of a sorted batch to insert; raise on any violation.

    Returns:
        The events to insert, in order, and each touched author's new head.
    """
    tips: Heads = {}
    in_batch: dict[tuple[str, int], bytes] = {}
    new: list[StoredEvent] = []
    for event in batch:
        author, seq = event.author, event.seq
        head_seq, head_hash = tips.get(author) or heads.get(author, (0, ZERO_HASH))
        if seq <= head_seq:
            known = in_batch.get((author, seq)) or stored.get((author, seq))
            if known is None:
                raise StoreError(f"author {author} has no stored event at seq {seq}")
            if known != event.hash:
                raise StoreError(f"fork for author {author} at seq {seq}")
            continue  # the same event again
        if seq != head_seq + 1:
            raise StoreError(f"gap for author {author}: expected seq {head_seq + 1}, got {seq}")
        if event.prev_hash != head_hash:
            raise StoreError(
                f"broken chain for author {author} at seq {seq}: "
                f"prev_hash does not match the hash of seq {head_seq}"
            )
        tips[author] = (seq, event.hash)
        in_batch[(author, seq)] = event.hash
        new.append(event)
    return new, tips
