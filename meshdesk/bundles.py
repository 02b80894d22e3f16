"""USB bundles: records carried on a stick when no network reaches a site.

A bundle file is ``MAGIC`` and then length-prefixed wire frames (the link codec,
with its limits — :mod:`meshdesk.wire`):

1. :class:`~meshdesk.wire.BundleHeader`: deployment, creator, time, counts;
2. the deployment's revocation list (``Revocations``) if the creator has one, and
   every node certificate it knows (``Certificates``, 256 per frame);
3. ``BundleHeads``: what the creator holds (so that a bundle back to it can leave
   that out), then the events, exactly as stored — sealed data stays sealed — as ``SyncEvents``
   frames, each author's chain in order with its signed checkpoints;
4. :class:`~meshdesk.wire.BundleSeal`: the creator's Ed25519 signature over the
   SHA-256 of every byte before it.

Import reads and checks the whole file before it stores anything: the magic, every
frame's limits, the deployment, the creator's certificate (against our CA and
revocation list), the seal, then every run exactly as sync does
(:func:`meshdesk.sync.driver.verify_received`: the author's certificate, the hash
chain, the signed checkpoint), and what the store would refuse (a gap, a fork). One
failure refuses the whole bundle with one line, and nothing is stored. Then the
runs are stored by group commit (``Store.append_runs``, ``synchronous=FULL``) and
only after that it says
"imported". Runs already held change nothing, so importing twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk.cases.chain import author_node
from meshdesk.directory import Directory
from meshdesk.errors import AuthError, MeshdeskError, SyncError, UsageError, WireError
from meshdesk.identity import NodeKit, deployment_id
from meshdesk.store import Checkpoint, Store, StoredEvent
from meshdesk.sync.driver import verify_received
from meshdesk.sync.messages import Run
from meshdesk.wire import (
    AuthorHead,
    BundleHeader,
    BundleHeads,
    BundleSeal,
    Certificates,
    CheckpointRef,
    Revocations,
    SyncEvents,
    WireEvent,
    decode,
    encode,
)

__all__ = [
    "BUNDLE_MAX",
    "MAGIC",
    "BundleError",
    "Bundles",
    "ImportResult",
    "Imported",
    "Progress",
]

log = logging.getLogger(__name__)

MAGIC = b"MESHDESK-BUNDLE\n"
_VERSION = 1
_SEAL_CONTEXT = b"meshdesk-bundle-v1\0"
#: ``meta`` key (+ node id): the heads that node's last imported bundle carried.
_HEADS_KEY = "bundle-heads:"
_PREFIX = struct.Struct(">I")
#: Bytes of a bundle file we read (it is held in memory while it is checked).
BUNDLE_MAX = 2 * 1024**3
#: Events per ``SyncEvents`` frame, and bytes of bodies per frame (under 1 MiB).
_FRAME_EVENTS = 4096
_FRAME_BYTES = 768 * 1024
#: Events per group commit on import (one transaction, one fsync).
_GROUP_EVENTS = 20_000
#: Events read per store query on export.
_READ_EVENTS = 8192

#: Told the runs an import stored (awaited before the import says "imported").
Imported = Callable[[list[tuple[list[StoredEvent], Checkpoint]]], Awaitable[None]]
#: ``progress(doing, done, total)``: "reading" (bytes), "checking"/"storing" (events),
#: "writing" (events).
Progress = Callable[[str, int, int], None]


class BundleError(UsageError):
    """A bundle refused whole: the one line says why; nothing was stored."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    creator: str
    created_ms: int
    runs: int
    events: int
    new_events: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "creator": self.creator,
            "created_at": dt.datetime.fromtimestamp(self.created_ms / 1000, dt.UTC).isoformat(
                timespec="seconds"
            ),
            "runs": self.runs,
            "events": self.events,
            "new_events": self.new_events,
            "seconds": round(self.seconds, 3),
        }


def _frame(data: bytes) -> bytes:
    return _PREFIX.pack(len(data)) + data


class Bundles:
    """Export and import of bundles for one node's store (the ``bundle`` ops' context).

    Args:
        imported: Told the stored runs after an import (the node announces them to
            its links and its notice board writes delivery receipts).
    """

    def __init__(
        self,
        store: Store,
        directory: Directory,
        kit: NodeKit,
        *,
        imported: Imported | None = None,
        progress: Progress | None = None,
        publish: Callable[[str, dict[str, object]], None] | None = None,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._store = store
        self._directory = directory
        self._kit = kit
        self._imported = imported
        self.progress = progress
        self._publish = publish
        self._shown = ("", -1)
        self._wall_ms = wall_ms
        self._deployment = str(deployment_id(kit.ca_cert))

    def _tell(self, doing: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(doing, done, total)
        percent = done * 100 // max(total, 1)
        if self._publish is not None and (doing, percent) != self._shown:
            self._shown = (doing, percent)  # a bus event per percent, not per run
            self._publish("bundle", {"doing": doing, "done": done, "total": total})

    # -- export ----------------------------------------------------------------------

    async def node_id(self, text: str | None) -> str | None:
        """The node named by an id, the start of one, or a name (None: none given)."""
        if text is None:
            return None
        wanted = text.strip()
        nodes = await self._directory.nodes()
        found = [n for n in nodes if n.name == wanted or str(n.node_id) == wanted] or [
            n for n in nodes if str(n.node_id).startswith(wanted.upper())
        ]
        if len(found) != 1:
            raise UsageError(f"{text!r} names {len(found)} nodes in this node's directory")
        return str(found[0].node_id)

    async def _plan(self, skip_node: str | None, since_ms: int | None) -> dict[str, int]:
        """Per author, the seq after which its events go into the bundle: for a
        target (``skip_node``), none of its own chains and, of others, only what it
        did not hold when it last sent us a bundle (the heads that bundle carried)."""
        heads = await self._store.heads()
        start = {a: 0 for a in heads if skip_node is None or author_node(a) != skip_node}
        known = await self._known_heads(skip_node) if skip_node is not None else {}
        for author, (seq, digest) in known.items():
            if author not in start or seq < 1:
                continue
            our_seq, our_hash = heads[author]
            if seq > our_seq or (seq == our_seq and digest == our_hash):
                del start[author]  # it holds all we hold of that chain
                continue
            if seq == our_seq:
                continue  # another chain under that name: send it all (it will refuse)
            (ours,) = await self._store.events_after(author, seq - 1, 1)
            if ours.hash == digest:  # the same chain (else: send it all)
                upto = [c.seq for c in await self._store.checkpoints(author) if c.seq <= seq]
                start[author] = upto[-1] if upto else 0
        if since_ms is not None:
            first = dict(await self._store.events_since(since_ms))
            for author in list(start):
                if author not in first:
                    del start[author]
                    continue
                # From the checkpoint before the first new event: runs stay whole.
                cuts = await self._store.checkpoints(author)
                before = [c.seq for c in cuts if c.seq < first[author]]
                start[author] = max(start[author], before[-1] if before else 0)
        return start

    async def _known_heads(self, node_id: str) -> dict[str, tuple[int, bytes]]:
        """What ``node_id`` held when it wrote the last bundle we imported from it."""
        raw = await self._store.get_meta(_HEADS_KEY + node_id)
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
            return {a: (int(seq), bytes.fromhex(h)) for a, (seq, h) in data.items()}
        except (ValueError, TypeError, AttributeError):
            log.warning("ignored unreadable bundle heads of %s", node_id)
            return {}

    async def export(
        self, out: Path, *, for_node: str | None = None, since_ms: int | None = None
    ) -> dict[str, Any]:
        """Write what the target may lack: every chain (``for_node``: what that node
        may lack, see :meth:`_plan`; ``since_ms``: only chains with events received
        since), certificates, the revocation list and our heads; atomically (a
        temporary file, fsync, rename)."""
        began = time.monotonic()
        plan = await self._plan(for_node, since_ms)
        heads = await self._store.heads()
        total = sum(heads[a][0] - after for a, after in plan.items())
        certs = await self._store.certificates()
        crl = await self._store.revocation_list()
        runs = 0
        for author, after in plan.items():
            runs += len(await self._store.checkpoints(author, after))
        header = BundleHeader(
            version=_VERSION,
            deployment=self._deployment,
            creator=str(self._kit.node_id),
            creator_name=self._kit.info.name,
            created_ms=self._wall_ms(),
            runs=runs,
            events=total,
            authors=len(plan),
            certificates=len(certs),
        )
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256(MAGIC)
        written = 0
        size = [len(MAGIC)]
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(MAGIC)

                def put(frame: Any) -> None:
                    data = _frame(encode(frame))
                    digest.update(data)
                    file.write(data)
                    size[0] += len(data)

                put(header)
                if crl is not None:
                    put(Revocations(number=crl[0], crl=crl[1]))
                ders = sorted(certs.values())
                for i in range(0, len(ders), 256):
                    put(Certificates(certs=tuple(ders[i : i + 256])))
                held = [AuthorHead(a, q, h) for a, (q, h) in sorted(heads.items())]
                for i in range(0, len(held), 4096):
                    put(BundleHeads(heads=tuple(held[i : i + 4096])))
                for author, after in sorted(plan.items()):
                    async for frame in self._author_frames(author, after):
                        put(frame)
                        written += len(frame.events)
                        self._tell("writing", written, total)
                sig = self._kit.key.sign(_SEAL_CONTEXT + digest.digest())
                sealed = _frame(encode(BundleSeal(sig=sig)))
                file.write(sealed)
                size[0] += len(sealed)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, out)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
        return {
            "file": str(out),
            "runs": runs,
            "events": total,
            "authors": len(plan),
            "certificates": len(certs),
            "bytes": size[0],
            "seconds": round(time.monotonic() - began, 3),
        }

    async def _author_frames(self, author: str, after: int) -> AsyncIterator[SyncEvents]:
        """``SyncEvents`` frames of an author's events past ``after``, in order."""
        checkpoints = {c.seq: c for c in await self._store.checkpoints(author, after)}
        seq = after
        pending: list[StoredEvent] = []
        size = 0
        while True:
            batch = await self._store.events_after(author, seq, _READ_EVENTS)
            if not batch:
                break
            for event in batch:
                # The sealed blobs beside the body travel in the frame too.
                cost = len(event.body) + sum(len(blob) + 5 for blob in event.payloads) + 200
                full = len(pending) >= _FRAME_EVENTS or size + cost > _FRAME_BYTES
                if pending and full:
                    yield _events_frame(author, pending, checkpoints)
                    pending, size = [], 0
                pending.append(event)
                size += cost
            seq = batch[-1].seq
        if pending:
            yield _events_frame(author, pending, checkpoints)

    # -- import ----------------------------------------------------------------------

    async def import_file(self, path: Path) -> ImportResult:
        """Check the whole bundle, then store it durably (see the module)."""
        began = time.monotonic()
        header, revocations, certs, frames, held = await asyncio.to_thread(self._read, path)
        if revocations is not None:
            await self._directory.apply_revocations(revocations.crl)
        keys = self._keys(header, certs)
        runs = _runs(frames)
        total = sum(len(r.events) for r in runs)
        checked: list[tuple[list[StoredEvent], Checkpoint]] = []
        done = 0

        async def key_of(author: str) -> Ed25519PublicKey | None:
            try:
                node = author_node(author)
            except ValueError:
                return None
            return keys[node] if node in keys else await self._directory.author_key(author)

        heads = await self._store.heads()
        reach = {author: head[0] for author, head in heads.items()}  # seqs held or coming
        for run in runs:
            try:
                verified = await verify_received(run, key_of)
                await self._fits(run.author, verified, heads, reach)
            except SyncError as exc:
                raise BundleError(f"bundle {path.name} refused, nothing imported: {exc}") from None
            checked.append((verified, run.checkpoint))
            done += len(run.events)
            self._tell("checking", done, total)
        new = 0
        stored: list[tuple[list[StoredEvent], Checkpoint]] = []
        received_at = self._wall_ms()
        for group in _groups(checked):
            try:
                counts = await self._store.append_runs(group, received_at)
            except MeshdeskError as exc:
                raise BundleError(
                    f"bundle {path.name}: stopped after {new} new events were stored: {exc}"
                ) from None
            new += sum(counts)
            stored += [run for run, count in zip(group, counts, strict=True) if count]
            self._tell("storing", sum(len(e) for e, _ in stored), total)
        await self._directory.take_certificates(tuple(certs), source=None)
        if held:  # what the creator holds: a later bundle for it leaves that out
            known = {h.author: [h.seq, h.hash.hex()] for h in held}
            await self._store.set_meta(_HEADS_KEY + header.creator, json.dumps(known).encode())
        if stored and self._imported is not None:
            await self._imported(stored)
        result = ImportResult(
            creator=header.creator_name,
            created_ms=header.created_ms,
            runs=len(runs),
            events=total,
            new_events=new,
            seconds=time.monotonic() - began,
        )
        log.info("imported bundle %s from %s: %d new events", path, header.creator_name, new)
        return result

    async def _fits(
        self,
        author: str,
        events: list[StoredEvent],
        heads: dict[str, tuple[int, bytes]],
        reach: dict[str, int],
    ) -> None:
        """What the store would refuse, found before anything is stored: a run that
        leaves a gap after what we hold (or what the bundle brought before it), or
        one that forks our chain of that author. Chains are hash-linked, so one
        stored hash (the last seq both hold) tells a fork.

        Raises:
            SyncError: a gap or a fork.
        """
        first, last = events[0].seq, events[-1].seq
        if first > reach.get(author, 0) + 1:
            raise SyncError(f"author {author}: the bundle skips seqs before {first}")
        reach[author] = max(reach.get(author, 0), last)
        held = heads.get(author, (0, b""))[0]
        if first <= held:
            both = min(last, held)
            (ours,) = await self._store.events_after(author, both - 1, 1)
            if ours.hash != events[both - first].hash:
                raise SyncError(f"author {author}: the bundle forks our chain at seq {both}")

    def _keys(self, header: BundleHeader, certs: Sequence[bytes]) -> dict[str, Ed25519PublicKey]:
        """Signing keys of the bundle's certificates that verify now; the seal must
        verify with the creator's."""
        keys: dict[str, Ed25519PublicKey] = {}
        for der in certs:
            with contextlib.suppress(AuthError):
                info, key = self._directory.check_certificate(der)
                if key is not None:
                    keys[str(info.node_id)] = key
        return keys

    def _read(
        self, path: Path
    ) -> tuple[BundleHeader, Revocations | None, list[bytes], list[SyncEvents], list[AuthorHead]]:
        name = path.name
        try:
            size = path.stat().st_size
            if size > BUNDLE_MAX:
                raise BundleError(f"bundle {name} is larger than {BUNDLE_MAX >> 30} GiB: refused")
            with path.open("rb") as file:
                parsed = self._parse(file, size, name)
        except OSError as exc:
            raise BundleError(f"cannot read bundle {path}: {exc.strerror or exc}") from None
        return parsed

    def _parse(
        self, file: IO[bytes], size: int, name: str
    ) -> tuple[BundleHeader, Revocations | None, list[bytes], list[SyncEvents], list[AuthorHead]]:
        def refuse(why: str) -> BundleError:
            return BundleError(f"bundle {name} refused, nothing imported: {why}")

        if file.read(len(MAGIC)) != MAGIC:
            raise refuse("not a meshdesk bundle")
        digest = hashlib.sha256(MAGIC)
        header: BundleHeader | None = None
        revocations: Revocations | None = None
        certs: list[bytes] = []
        frames: list[SyncEvents] = []
        creator_heads: list[AuthorHead] = []
        seal: BundleSeal | None = None
        read = len(MAGIC)
        for prefix, body in _records(file):
            if seal is not None:
                raise refuse("bytes after its seal")
            try:
                frame = decode(body)
            except WireError as exc:
                raise refuse(f"damaged ({exc})") from None
            read += len(prefix) + len(body)
            self._tell("reading", read, size)
            if isinstance(frame, BundleSeal):
                seal = frame
                continue
            digest.update(prefix + body)
            match frame:
                case BundleHeader() if header is None:
                    header = frame
                    if header.deployment != self._deployment:
                        raise refuse(
                            f"it is of deployment {header.deployment}, this node of "
                            f"{self._deployment}"
                        )
                case _ if header is None:
                    raise refuse("damaged (no header)")
                case Revocations() if revocations is None:
                    revocations = frame
                case Certificates():
                    certs.extend(frame.certs)
                case BundleHeads():
                    creator_heads.extend(frame.heads)
                case SyncEvents():
                    frames.append(frame)
                case _:
                    raise refuse(f"damaged (unexpected {type(frame).__name__})")
        if header is None or seal is None:
            raise refuse("damaged or cut short (no header or no seal)")
        creator = next(
            (k for node, k in self._keys(header, certs).items() if node == header.creator), None
        )
        if creator is None:
            raise refuse(f"its creator {header.creator} has no valid certificate here")
        try:
            creator.verify(seal.sig, _SEAL_CONTEXT + digest.digest())
        except InvalidSignature:
            raise refuse("its seal does not match its contents (altered or damaged)") from None
        return header, revocations, certs, frames, creator_heads


def _records(file: IO[bytes]) -> Iterator[tuple[bytes, bytes]]:
    while True:
        prefix = file.read(_PREFIX.size)
        if not prefix:
            return
        if len(prefix) < _PREFIX.size:
            raise BundleError("bundle refused, nothing imported: cut short")
        (length,) = _PREFIX.unpack(prefix)
        if length > 1_048_576:
            raise BundleError(f"bundle refused, nothing imported: a frame of {length} bytes")
        body = file.read(length)
        if len(body) < length:
            raise BundleError("bundle refused, nothing imported: cut short")
        yield prefix, body


def _events_frame(
    author: str, events: list[StoredEvent], checkpoints: dict[int, Checkpoint]
) -> SyncEvents:
    return SyncEvents(
        round=0,
        offset=events[0].seq,
        author=author,
        events=tuple(
            WireEvent(e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash, e.payloads)
            for e in events
        ),
        checkpoints=tuple(
            CheckpointRef(c.seq, c.hash, c.sig)
            for e in events
            if (c := checkpoints.get(e.seq)) is not None
        ),
    )


def _runs(frames: Sequence[SyncEvents]) -> list[Run]:
    """Cut each author's events into runs at its checkpoints (as sync's inbound does);
    events after an author's last checkpoint are a damaged bundle."""
    runs: list[Run] = []
    pending: dict[str, list[WireEvent]] = {}
    for frame in frames:
        events = pending.setdefault(frame.author, [])
        cuts = {c.seq: c for c in frame.checkpoints}
        for event in frame.events:
            events.append(event)
            cp = cuts.get(event.seq)
            if cp is not None:
                checkpoint = Checkpoint(frame.author, cp.seq, cp.hash, cp.sig)
                runs.append(Run(frame.author, tuple(events), checkpoint))
                events.clear()
    if any(pending.values()):
        raise BundleError("bundle refused, nothing imported: events without a signed checkpoint")
    return runs


def _groups(
    runs: list[tuple[list[StoredEvent], Checkpoint]],
) -> Iterator[list[tuple[list[StoredEvent], Checkpoint]]]:
    group: list[tuple[list[StoredEvent], Checkpoint]] = []
    size = 0
    for run in runs:
        group.append(run)
        size += len(run[0])
        if size >= _GROUP_EVENTS:
            yield group
            group, size = [], 0
    if group:
        yield group
