"""Sealed payloads kept beside the chain, and erasure (schema version 4).

An event's body names each sealed blob it carries by SHA-256; the blobs are rows of
``payloads`` keyed by ``(author, seq, n)``, so reading a run or a case joins them back
(``StoredEvent.payloads``) and an erasure deletes them without touching a hash. A case
in ``erased`` never gets a payload again (a trigger ignores the insert). Queries only:
the :class:`~meshdesk.store.Store` owns the connection and the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import aiosqlite

from meshdesk.store.records import StoredEvent

__all__ = [
    "PAYLOADS_VERSION",
    "REDACTABLE",
    "attach_author",
    "attach_case",
    "erase_rows",
    "insert_payloads",
]

#: Schema version that brought ``payloads`` and ``erased``.
PAYLOADS_VERSION = 4
#: Kinds whose old bodies held sealed blobs inline (``events.SEALED_KINDS``).
REDACTABLE = (1, 3, 8, 9)
#: First byte of a redacted body (``events.REDACTED``); the event's hash follows.
REDACTED = b"\xc1"


async def insert_payloads(db: aiosqlite.Connection, events: Sequence[StoredEvent]) -> None:
    """Keep the payloads of newly stored events (those of erased cases are ignored)."""
    rows = [
        (e.author, e.seq, n, e.case_id, blob)
        for e in events
        if e.case_id is not None
        for n, blob in enumerate(e.payloads)
    ]
    if rows:
        await db.executemany(
            "INSERT OR IGNORE INTO payloads (author, seq, n, case_id, data) VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def _attach(
    events: list[StoredEvent], found: dict[tuple[str, int], list[tuple[int, bytes]]]
) -> list[StoredEvent]:
    if not found:
        return events
    out = []
    for event in events:
        blobs = found.get((event.author, event.seq))
        if blobs:
            event = dataclasses.replace(event, payloads=tuple(b for _, b in sorted(blobs)))
        out.append(event)
    return out


async def attach_case(
    db: aiosqlite.Connection, case_id: str, events: list[StoredEvent]
) -> list[StoredEvent]:
    """``events`` of one case with the payloads stored for them."""
    rows = await db.execute_fetchall(
        "SELECT p.author, p.seq, p.n, p.data FROM events AS e"
        " JOIN payloads AS p ON p.author = e.author AND p.seq = e.seq"
        " WHERE e.case_id = ?",
        (case_id,),
    )
    found: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    for author, seq, n, data in rows:
        found.setdefault((author, seq), []).append((n, bytes(data)))
    return _attach(events, found)


async def attach_author(
    db: aiosqlite.Connection, author: str, events: list[StoredEvent]
) -> list[StoredEvent]:
    """Consecutive ``events`` of one author with the payloads stored for them."""
    if not events:
        return events
    rows = await db.execute_fetchall(
        "SELECT seq, n, data FROM payloads WHERE author = ? AND seq BETWEEN ? AND ?",
        (author, events[0].seq, events[-1].seq),
    )
    found: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    for seq, n, data in rows:
        found.setdefault((author, seq), []).append((n, bytes(data)))
    return _attach(events, found)


async def erase_rows(
    db: aiosqlite.Connection,
    case_id: str,
    redact: Sequence[tuple[str, int]],
    erased_at: int,
) -> int:
    """Erase a case's sealed data inside the caller's transaction; returns how many
    payloads and redacted bodies went.

    The case goes into ``erased`` first (the trigger that allows a redaction asks
    for it), then its payloads are deleted and the listed old events' bodies
    replaced by their redaction. With ``secure_delete`` on, SQLite zeroes what it frees.
    """
    await db.execute(
        "INSERT OR IGNORE INTO erased (case_id, erased_at) VALUES (?, ?)", (case_id, erased_at)
    )
    cursor = await db.execute(
        "DELETE FROM payloads WHERE (author, seq) IN"
        " (SELECT author, seq FROM events WHERE case_id = ?)",
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
