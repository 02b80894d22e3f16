"""Plain records the store reads and writes.

They carry no behaviour and no validation beyond their types: the store checks what it
must (hash lengths, chain links) when a record is written, and the layers above (wire,
identity, sync) own the meaning of the fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from meshdesk._slots import slot_builder

__all__ = [
    "ZERO_HASH",
    "CaseIndexer",
    "CaseSummary",
    "Checkpoint",
    "IssuedNode",
    "RevokedNode",
    "StoreCounts",
    "StoredEvent",
    "digest_of",
    "stored_event",
]

#: ``prev_hash`` of the first event of every author (seq 1).
ZERO_HASH = bytes(32)


def digest_of(entries: Iterable[tuple[str, int, bytes]]) -> str:
    """A store's content digest: SHA-256 over its sorted ``(author, seq, hash)``.

    Two stores holding the same events have the same digest (drills compare them).
    """
    h = hashlib.sha256()
    for author, seq, digest in sorted(entries):
        h.update(author.encode() + b"\0" + seq.to_bytes(8, "big") + digest)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One signed, hash-chained event as the store keeps it.

    Attributes:
        author: Node id of the node that wrote the event.
        seq: Position in the author's chain, 1-based and contiguous.
        hlc: Hybrid logical clock value (fits a signed 64-bit integer).
        case_id: The consultation case the event belongs to, or None for node facts.
        kind: Event kind (the wire layer's ``IntEnum`` value).
        body: Opaque msgpack bytes; the store never decodes them.
        prev_hash: ``hash`` of the author's event at ``seq - 1``;
            :data:`ZERO_HASH` for seq 1.
        hash: 32-byte hash of this event.
        payloads: The detached sealed blobs the body references by SHA-256 (kept in
            the store's ``payloads`` table, sent with the event, dropped by an
            erasure). Not part of the hash, nor of equality: an event is the same
            event with or without them.
    """

    author: str
    seq: int
    hlc: int
    case_id: str | None
    kind: int
    body: bytes
    prev_hash: bytes
    hash: bytes
    payloads: tuple[bytes, ...] = field(default=(), compare=False)


#: ``StoredEvent(author, seq, hlc, case_id, kind, body, prev_hash, hash, payloads)``,
#: every argument given, in half the time.
stored_event: Callable[
    [str, int, int, str | None, int, bytes, bytes, bytes, tuple[bytes, ...]], StoredEvent
] = slot_builder(StoredEvent)


@dataclass(frozen=True, slots=True)
class IssuedNode:
    """A node kit HQ issued: who it is for and the certificate it carries.

    Attributes:
        node_id: The node's id.
        name: Human name of the kit (e.g. the desk or person it went to).
        site: Site the kit serves.
        role: Role granted by the certificate.
        departments: Departments the node may see.
        serial: Certificate serial number as a decimal string (serials can exceed
            64 bits, so they are not stored as integers).
        cert_pem: The issued certificate, PEM-encoded.
        issued_at: Issue time in milliseconds since the epoch.
    """

    node_id: str
    name: str
    site: str
    role: str
    departments: tuple[str, ...]
    serial: str
    cert_pem: str
    issued_at: int


@dataclass(frozen=True, slots=True)
class RevokedNode:
    """A node whose certificate the CA revoked, kept for fast lookups.

    Attributes:
        node_id: The revoked node's id.
        serial: Serial of the revoked certificate, as a decimal string.
        revoked_at: Revocation time in milliseconds since the epoch.
        reason: Free-text reason shown to operators.
    """

    node_id: str
    serial: str
    revoked_at: int
    reason: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An author's signature over its chain head at ``seq`` (see docs/design/records.md)."""

    author: str
    seq: int
    hash: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """Sizes of what the store holds, for status screens and tests."""

    events: int
    authors: int
    cases: int
    issued_nodes: int
    revoked_nodes: int


class CaseSummary(NamedTuple):
    """One case's row of the case index: its open metadata, folded from its events.

    A named tuple rather than a frozen dataclass: a catch-up makes one per case
    received, and a tuple is made in a quarter of the time.

    A pure function of the case's stored events (``meshdesk.cases.summary`` makes it),
    so every replica holding the same events has the same row, and the index can be
    rebuilt from the events at any time. Nothing personal: the personal block is only
    named by a digest (so a search index knows when it must be remade).

    Attributes:
        case_id: The case.
        opened: Whether its opening has arrived (an incomplete case has no origin,
            site or category yet).
        created_hlc: HLC of the opening; of the oldest event while not opened.
        updated_hlc: HLC of the newest event.
        events: How many events the case holds.
        origin, site, category, urgency, status, department: The displayed values
            ("" when unknown).
        urgency_rank, status_rank: Sort ranks (0 first; 9 when unknown).
        consent: Departments the citizen agreed to share with, sorted.
        referrals: ``(department, state)`` of each referral, in fold order.
        conflicts: Registers with concurrent writes nobody reconciled yet.
        personal: SHA-256 (16 bytes) of the displayed sealed personal block, or None.
        grants: How many key-grant events the case holds.
    """

    case_id: str
    opened: bool
    created_hlc: int
    updated_hlc: int
    events: int
    origin: str
    site: str
    category: str
    urgency: str
    urgency_rank: int
    status: str
    status_rank: int
    department: str
    consent: tuple[str, ...]
    referrals: tuple[tuple[str, str], ...]
    conflicts: tuple[str, ...]
    personal: bytes | None
    grants: int


class CaseIndexer(Protocol):
    """What the store needs to keep the case index in step with the events.

    The store cannot fold cases itself (the fold lives above it), so the layer that
    can passes this in; the store calls it inside the transaction that stores events.
    """

    def summarise(self, case_id: str, events: Sequence[StoredEvent]) -> CaseSummary:
        """The index row of a case from all of its stored events (in any order)."""
        ...

    def rank(self, events: Sequence[StoredEvent]) -> int:
        """Sending priority of a signed batch (0 = most urgent), see ``LocalRun``."""
        ...

    def fold_run(self, events: Sequence[StoredEvent]) -> tuple[int, dict[str, CaseSummary]]:
        """A run's :meth:`rank` and the rows of its cases as if these were all their
        events (``Store.fold_run``), each body decoded once."""
        ...
