"""Each author's events form a hash chain; signed checkpoints vouch for it.

See ``docs/design/records.md``. An author hashes every event over its fields and
the previous event's hash, and signs the chain head once per committed batch (a
:class:`Checkpoint`). A receiver recomputes every hash itself (a sent hash is
never trusted) and accepts a run of events only when it continues its stored
head and ends exactly at a checkpoint whose signature verifies: one Ed25519
verification per batch, not per event.

A node never writes two chains under one name. Every time a node starts writing
(a process start, or the CLI writing offline) it opens a **new chain**, named
``NODE-ID/EPOCH`` with a random epoch (:func:`new_chain_author`). A node that lost
the tail of its chain — a disk that lied at a power cut, a home restored from
yesterday's backup, a home copied to a second laptop — therefore never signs a
different event at a sequence number it already used: its old chain stays as peers
hold it, comes back from them like any other author's, and its new events go on a
chain nobody else has. Events name their *chain* as author (that is what ``seq``
counts); what a person reads as "which node wrote this" is :func:`author_node`.
Chains named by the bare node id were written before epochs existed; they stay valid.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from meshdesk.errors import SyncError
from meshdesk.identity.nodeid import NodeId
from meshdesk.store.records import ZERO_HASH, Checkpoint, StoredEvent, stored_event

__all__ = [
    "CHAIN_CONTEXT",
    "PAYLOADS_MAX",
    "PAYLOAD_BYTES_MAX",
    "REDACTABLE_KINDS",
    "ChainWriter",
    "Checkpoint",
    "EventFields",
    "UnsignedEvent",
    "author_node",
    "checkpoint_message",
    "event_hash",
    "new_chain_author",
    "sign_checkpoint",
    "verify_run",
]

#: Domain separation: a checkpoint signature can never be mistaken for another.
CHAIN_CONTEXT = b"meshdesk-chain-v1\0"

#: ``NODE-ID/EPOCH``: 8 base32 characters (40 random bits) name one chain of a node.
_EPOCH = re.compile(r"[A-Z2-7]{8}")


def new_chain_author(node_id: str) -> str:
    """A fresh chain name for ``node_id``: its events will never collide with any
    chain the node (or a copy of its home) wrote before."""
    epoch = base64.b32encode(secrets.token_bytes(5)).decode("ascii")
    return f"{NodeId(node_id).text}/{epoch}"


@functools.lru_cache(maxsize=4096)
def author_node(author: str) -> str:
    """The node that wrote chain ``author`` (a bare node id names itself).

    Raises:
        ValueError: ``author`` is neither ``NODE-ID`` nor ``NODE-ID/EPOCH``.
    """
    node, slash, epoch = author.partition("/")
    if slash and not _EPOCH.fullmatch(epoch):
        raise ValueError(f"not a chain author: {author!r:.80}")
    return NodeId(node).text


def event_hash(
    author: str,
    seq: int,
    hlc: int,
    case_id: str | None,
    kind: int,
    body: bytes,
    prev_hash: bytes,
) -> bytes:
    """SHA-256 over the msgpack of the event's fields (the contract's definition)."""
    packed = msgpack.packb([author, seq, hlc, case_id, kind, body, prev_hash], use_bin_type=True)
    return hashlib.sha256(packed).digest()


def checkpoint_message(author: str, seq: int, digest: bytes) -> bytes:
    return CHAIN_CONTEXT + author.encode() + seq.to_bytes(8, "big") + digest


def sign_checkpoint(key: Ed25519PrivateKey, author: str, seq: int, digest: bytes) -> Checkpoint:
    return Checkpoint(author, seq, digest, key.sign(checkpoint_message(author, seq, digest)))


class EventFields(Protocol):
    """What a received event carries (a wire event or an :class:`UnsignedEvent`)."""

    @property
    def seq(self) -> int: ...
    @property
    def hlc(self) -> int: ...
    @property
    def case_id(self) -> str | None: ...
    @property
    def kind(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def prev_hash(self) -> bytes: ...
    @property
    def payloads(self) -> tuple[bytes, ...]: ...


@dataclass(frozen=True, slots=True)
class UnsignedEvent:
    """An event as received: everything but the hash, which the receiver computes."""

    seq: int
    hlc: int
    case_id: str | None
    kind: int
    body: bytes
    prev_hash: bytes
    payloads: tuple[bytes, ...] = ()


#: Kinds whose old bodies held a sealed blob inline (``events.SEALED_KINDS``): only
#: those may arrive redacted.
REDACTABLE_KINDS = frozenset({1, 3, 8, 9})
#: Detached payloads one event may carry, and the bytes of each.
PAYLOADS_MAX = 4
PAYLOAD_BYTES_MAX = 64 * 1024
_REDACTED = b"\xc1"


def _checked_hash(author: str, event: EventFields) -> bytes:
    """The event's hash: computed from its fields, or, for a redacted old body
    (``0xC1`` + hash, see ``events.REDACTED``), the hash it names — then the
    successor's ``prev_hash`` and the signed checkpoint vouch for it."""
    body = event.body
    if len(body) == 33 and body[:1] == _REDACTED:
        if event.kind not in REDACTABLE_KINDS:
            raise SyncError(f"author {author}: seq {event.seq} is redacted but never held data")
        if event.payloads:
            raise SyncError(f"author {author}: seq {event.seq} is redacted yet carries payloads")
        return body[1:]
    if len(event.payloads) > PAYLOADS_MAX:
        raise SyncError(f"author {author}: seq {event.seq} carries too many payloads")
    for blob in event.payloads:
        if not 0 < len(blob) <= PAYLOAD_BYTES_MAX or hashlib.sha256(blob).digest() not in body:
            raise SyncError(
                f"author {author}: seq {event.seq} carries a payload its body does not name"
            )
    return event_hash(
        author, event.seq, event.hlc, event.case_id, event.kind, body, event.prev_hash
    )


def verify_run(
    author: str,
    head: tuple[int, bytes] | None,
    events: Sequence[EventFields],
    checkpoint: Checkpoint,
    public_key: Ed25519PublicKey,
) -> list[StoredEvent]:
    """Check a run of ``author``'s events against our head and its checkpoint.

    Args:
        head: our stored ``(seq, hash)`` for the author, None when we have none.

    Returns:
        The events with their computed hashes, ready to store as one batch.

    Raises:
        SyncError: a gap, a broken or forked chain, a run that does not end at
            the checkpoint, or a bad signature. Nothing of the run may be stored.
    """
    if not events:
        raise SyncError(f"empty run from author {author}")
    if checkpoint.author != author:
        raise SyncError(f"run of {author} carries a checkpoint of {checkpoint.author}")
    seq, digest = head if head is not None else (0, ZERO_HASH)
    verified: list[StoredEvent] = []
    for event in events:
        if event.seq != seq + 1:
            raise SyncError(f"author {author}: expected seq {seq + 1}, got {event.seq}")
        if event.prev_hash != digest:
            raise SyncError(f"author {author}: seq {event.seq} does not continue the chain")
        digest = _checked_hash(author, event)
        seq = event.seq
        verified.append(
            stored_event(
                author,
                seq,
                event.hlc,
                event.case_id,
                event.kind,
                event.body,
                event.prev_hash,
                digest,
                tuple(event.payloads),
            )
        )
    if checkpoint.seq != seq or checkpoint.hash != digest:
        raise SyncError(
            f"author {author}: run ends at seq {seq} but its checkpoint is for seq "
            f"{checkpoint.seq} or another chain"
        )
    try:
        public_key.verify(checkpoint.sig, checkpoint_message(author, seq, digest))
    except InvalidSignature as exc:
        raise SyncError(f"author {author}: checkpoint signature at seq {seq} is forged") from exc
    return verified


class ChainWriter:
    """Appends this node's own events and signs a checkpoint per commit."""

    def __init__(self, author: str, key: Ed25519PrivateKey, head: tuple[int, bytes] | None) -> None:
        self.author = author
        self._key = key
        self._seq, self._hash = head if head is not None else (0, ZERO_HASH)
        self._pending: list[StoredEvent] = []

    @property
    def head(self) -> tuple[int, bytes]:
        """The head including events not yet committed."""
        return self._seq, self._hash

    def append(
        self,
        *,
        hlc: int,
        case_id: str | None,
        kind: int,
        body: bytes,
        payloads: tuple[bytes, ...] = (),
    ) -> StoredEvent:
        """Append one event; ``payloads`` are the detached sealed blobs its body
        references (stored beside it, never hashed)."""
        kind = int(kind)  # an IntEnum member is stored and hashed as the plain number
        seq = self._seq + 1
        digest = event_hash(self.author, seq, hlc, case_id, kind, body, self._hash)
        event = StoredEvent(
            self.author, seq, hlc, case_id, kind, body, self._hash, digest, payloads
        )
        self._pending.append(event)
        self._seq, self._hash = seq, digest
        return event

    def commit(self) -> tuple[list[StoredEvent], Checkpoint]:
        """Hand over the pending events with the checkpoint that covers them.

        The caller stores both in one transaction; if that fails it must
        :meth:`rollback` so the next commit does not skip sequence numbers.

        Raises:
            ValueError: nothing is pending.
        """
        if not self._pending:
            raise ValueError("nothing to commit")
        events, self._pending = self._pending, []
        return events, sign_checkpoint(self._key, self.author, self._seq, self._hash)

    def rollback(self, to: tuple[int, bytes]) -> None:
        """Forget pending or failed-to-store events; continue from ``to``."""
        self._pending = []
        self._seq, self._hash = to
