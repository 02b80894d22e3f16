"""Simulated nodes: a sync replica with a real identity key, hash chain and case writer.

Each :class:`SimNode` is a :class:`meshdesk.sync.sim.Replica` (the real sans-IO sync
core on in-memory links) that authors real case events: :class:`CaseWriter` drafts,
appended to its :class:`ChainWriter` and committed with a signed checkpoint.
Received runs are checked by the real :func:`verify_run` against the author's
Ed25519 key (every node knows every node's certificate, as the directory gossip
arranges in a real deployment), and refused once the node has learned that the
author is revoked — what a real node does when the author's certificate no longer
verifies. Keys come from the drill's seed, so the whole run is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshdesk.cases.chain import ChainWriter, verify_run
from meshdesk.cases.events import EventKind
from meshdesk.cases.fold import CaseWriter, Draft, Event, fold
from meshdesk.cases.hlc import Clock
from meshdesk.cases.state import CaseState
from meshdesk.drill.model import NodeSpec
from meshdesk.errors import SyncError
from meshdesk.identity import NodeId
from meshdesk.store.records import Checkpoint, StoredEvent
from meshdesk.sync.driver import urgency_rank  # the driver's own batch ranking
from meshdesk.sync.messages import LocalRun, Run, SyncConfig
from meshdesk.sync.sim import Replica

__all__ = ["Directory", "SimNode", "StoredHook"]

#: Called with (node, events newly stored) after every store of a run.
StoredHook = Callable[["SimNode", Sequence[StoredEvent]], None]


class Directory:
    """Every node's signing key by author id; signatures already checked are memoised.

    Ed25519 verification is deterministic, so a checkpoint that verified once under
    a key verifies again: a drill of 300 nodes checks each signature once instead of
    300 times. Hashes are still recomputed by every receiver.
    """

    def __init__(self) -> None:
        self.keys: dict[str, Ed25519PublicKey] = {}
        self._verified: set[tuple[str, int, bytes, bytes]] = set()

    def verify(self, run: Run) -> list[StoredEvent]:
        author, checkpoint = run.author, run.checkpoint
        key = self.keys.get(author)
        if key is None:
            raise SyncError(f"no certificate for author {author}")
        first = run.events[0]
        memo = (author, checkpoint.seq, checkpoint.hash, checkpoint.sig)
        if memo in self._verified:
            key = _TrustingKey(key)
        events = verify_run(author, (first.seq - 1, first.prev_hash), run.events, checkpoint, key)
        self._verified.add(memo)
        return events


class _TrustingKey(Ed25519PublicKey):
    """A key whose signature (already verified under the real key) is not checked again.

    Only used for the exact (author, seq, hash, sig) that verified before, and
    ``verify_run`` compares the run's recomputed hash with that checkpoint first.
    """

    def __init__(self, inner: Ed25519PublicKey) -> None:
        self._inner = inner

    def verify(
        self, signature: bytes | bytearray | memoryview, data: bytes | bytearray | memoryview
    ) -> None:
        return None

    def public_bytes(
        self, encoding: serialization.Encoding, format: serialization.PublicFormat
    ) -> bytes:
        return self._inner.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self._inner.public_bytes_raw()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TrustingKey) and other._inner == self._inner

    def __hash__(self) -> int:
        return hash(self._inner.public_bytes_raw())

    def __copy__(self) -> _TrustingKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _TrustingKey:
        return self


class SimNode(Replica):
    """One simulated node. ``index_all`` keeps every case's events (HQ folds them)."""

    def __init__(
        self,
        spec: NodeSpec,
        seed_rng: random.Random,
        directory: Directory,
        on_stored: StoredHook,
        config: SyncConfig | None = None,
    ) -> None:
        self.spec = spec
        self.key = Ed25519PrivateKey.from_private_bytes(seed_rng.randbytes(32))
        self.author = str(NodeId.from_public_key(self.key.public_key()))
        super().__init__(spec.name, self._verify, urgency_rank, config)
        directory.keys[self.author] = self.key.public_key()
        self.directory = directory
        self.chain = ChainWriter(self.author, self.key, None)
        self.writer = CaseWriter(f"op-{spec.name}", Clock(), random.Random(seed_rng.random()))
        self.alive = True
        self.revoked: set[str] = set()  # authors this node knows are revoked
        self.index_all = spec.role == "hq"
        self.own_cases: set[str] = set()
        self.cases: dict[str, list[Event]] = {}
        self._on_stored = on_stored

    def _verify(self, run: Run) -> list[StoredEvent]:
        if run.author in self.revoked:
            raise SyncError(f"author {run.author} is revoked")
        return self.directory.verify(run)

    def verify(self, run: Run) -> list[StoredEvent]:
        """The check a run from elsewhere passes here (a link's, or a USB bundle's)."""
        return self._verify(run)

    def record(self, kind: int, body: bytes, wall_ms: int) -> list[StoredEvent]:
        """Append one event that belongs to no case (a notice) and commit it."""
        hlc = self.writer.clock.now(wall_ms)
        self.chain.append(hlc=hlc, case_id=None, kind=kind, body=body)
        events, checkpoint = self.chain.commit()
        self.commit(events, checkpoint)
        return events

    def store_run(self, events: Sequence[StoredEvent], checkpoint: Checkpoint) -> LocalRun | None:
        before = len(self.store.events.get(checkpoint.author, ()))
        added = super().store_run(events, checkpoint)
        fresh = [e for e in events if e.seq > before]
        if fresh:
            for event in fresh:
                if event.case_id is not None and (
                    self.index_all or event.case_id in self.own_cases
                ):
                    self.cases.setdefault(event.case_id, []).append(Event.from_stored(event))
            self._on_stored(self, fresh)
        return added

    def write(self, drafts: Sequence[Draft]) -> list[StoredEvent]:
        """Append drafts to our chain and commit them as one signed batch."""
        for draft in drafts:
            self.chain.append(
                hlc=draft.hlc,
                case_id=draft.case_id,
                kind=draft.kind,
                body=draft.body,
                payloads=draft.payloads,
            )
        events, checkpoint = self.chain.commit()
        self.commit(events, checkpoint)
        return events

    def case_state(self, case_id: str) -> CaseState | None:
        events = self.cases.get(case_id)
        return fold(events) if events else None

    def held(self, author: str) -> int:
        return len(self.store.events.get(author, ()))

    @staticmethod
    def opens_case(event: StoredEvent) -> bool:
        return event.kind == EventKind.CASE_OPENED
