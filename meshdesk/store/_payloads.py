"""Sealed payloads kept beside the chain, and erasure (schema version 4).

An event's body names each sealed blob it carries by SHA-256; the blobs sit in the
event's row, in the column ``payloads`` (a msgpack list; NULL: none), which is not
part of the hash. So a run is stored and read as one row per event as before, and
an erasure sets the column to NULL without touching a hash. A case in ``erased``
never gets a payload again (a trigger clears any that arrive). Queries only: the
:class:`~meshdesk.store.Store` owns the connection and the transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence

import aiosqlite
import msgpack

from meshdesk.errors import StoreError
from meshdesk.store.records import StoredEvent

__all__ = [
    "PAYLOADS_VERSION",
    "REDACTABLE",
    "REDACTED",
    "erase_rows",
    "late_payloads",
    "pack_payloads",
    "unpack_payloads",
]

#: Schema version that brought ``events.payloads`` and ``erased``.
PAYLOADS_VERSION = 4
#: Kinds whose old bodies held sealed blobs inline (``events.SEALED_KINDS``).
REDACTABLE = (1, 3, 8, 9)
#: First byte of a redacted body (``events.REDACTED``); the event's hash follows.
REDACTED = b"\xc1"
_MAX = 4
_BLOB_MAX = 64 * 1024
_unpack: Callable[[bytes], object] = functools.partial(
    msgpack.unpackb, raw=False, max_bin_len=_BLOB_MAX, max_array_len=_MAX, max_str_len=0,
    max_map_len=0, max_ext_len=0,
)  # fmt: skip


def pack_payloads(blobs: Sequence[bytes]) -> bytes | None:
    """The column's value for an event's blobs (None: it has none)."""
    if not blobs:
        return None
    items = blobs if type(blobs) is tuple or type(blobs) is list else list(blobs)
    packed: bytes = msgpack.packb(items, use_bin_type=True)  # a tuple packs as a list
    return packed


def unpack_payloads(value: bytes | memoryview | None) -> tuple[bytes, ...]:
    """The blobs of a stored ``events.payloads`` value (None: none).

    Raises:
        StoreError: the value is not what :func:`pack_payloads` writes (damage).
    """
    if value is None:
        return ()
    try:
        blobs = _unpack(value if type(value) is bytes else bytes(value))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StoreError(f"a stored payload list is damaged: {exc}") from exc
    if type(blobs) is not list:
        raise StoreError("a stored payload list is damaged")
    for blob in blobs:  # a loop, not all(): a sender reads one list per event it sends
        if type(blob) is not bytes:
            raise StoreError("a stored payload list is damaged")
    return tuple(blobs)


def late_payloads(db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
    """Payloads of events stored before without them (the trigger refuses them for
    an erased case, and they never replace payloads already there); in a write job."""
    db.executemany(
        "UPDATE events SET payloads = ? WHERE author = ? AND seq = ? AND payloads IS NULL"
        " AND case_id NOT IN (SELECT case_id FROM erased)",
        [(pack_payloads(e.payloads), e.author, e.seq) for e in events],
    )


async def erase_rows(
    db: aiosqlite.Connection,
    case_id: str,
    redact: Sequence[tuple[str, int]],
    erased_at: int,
) -> int:
    """Erase a case's sealed data inside the caller's transaction; returns how many
    events lost payloads or had their body redacted.

    The case goes into ``erased`` first (the triggers that allow these updates ask
    for it), then its events' payloads are cleared and the listed old events' bodies
    replaced by their redaction. With ``secure_delete`` on, SQLite zeroes what it frees.
    """
    await db.execute(
        "INSERT OR IGNORE INTO erased (case_id, erased_at) VALUES (?, ?)", (case_id, erased_at)
    )
    cursor = await db.execute(
        "UPDATE events SET payloads = NULL WHERE case_id = ? AND payloads IS NOT NULL",
        (case_id,),
    )
    dropped = max(cursor.rowcount, 0)
    kinds = ", ".join(str(k) for k in REDACTABLE)
    for author, seq in redact:
        rows = await db.execute_fetchall(
            f"SELECT hash, body FROM events WHERE author = ? AND seq = ? AND case_id = ?"
            f" AND kind IN ({kinds})",
            (author, seq, case_id),
        )
        for digest, body in rows:
            redacted = REDACTED + bytes(digest)
            if bytes(body) != redacted:
                await db.execute(
                    "UPDATE events SET body = ? WHERE author = ? AND seq = ?",
                    (redacted, author, seq),
                )
                dropped += 1
    return dropped
