"""Parts of ``bench sync``: a two-node deployment, case data, and a wire meter.

- :func:`make_pair` creates a throw-away deployment: node ``a`` (its HQ) and node
  ``b`` (a desk provisioned from a kit ``a`` issued), each in its own home.
- :func:`fill_cases` writes cases into a home's store offline the way a busy node
  commits: :class:`CaseWriter` drafts, personal data and summary note sealed with
  :func:`seal`, appended to the node's :class:`ChainWriter`, and every
  ``batch_events`` events one signed checkpoint and one :meth:`Store.append_run`.
- :class:`WireMeter` counts what the two in-process nodes write on their TLS
  channels. It wraps ``meshdesk.net.tls.pack_frame`` (the exact bytes
  ``TlsChannel.send`` writes: 4-byte length prefix + msgpack envelope, i.e. the TLS
  plaintext) and each node's channels (:class:`MeteredNode`), so every frame is
  attributed to its sender, and every sync frame gets a causal *depth*: 1 + the
  deepest sync frame its sender had received before sending it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from meshdesk.cases.book import case_aad
from meshdesk.cases.chain import ChainWriter
from meshdesk.cases.events import CaseOpened
from meshdesk.cases.fold import CaseWriter, fold
from meshdesk.cases.hlc import Clock
from meshdesk.cases.model import Personal
from meshdesk.cases.sealing import audience, seal
from meshdesk.cases.summary import CaseIndexing
from meshdesk.config import Config, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.home import NodeHome
from meshdesk.identity import NodeInfo, Role
from meshdesk.net import tls
from meshdesk.net.channel import Channel
from meshdesk.node import Node
from meshdesk.store import Store, StoredEvent
from meshdesk.sync.driver import is_sync_frame
from meshdesk.wire import DEFAULT_LIMITS, Frame, SyncEvents, WireLimits

__all__ = [
    "FillStats",
    "MeteredNode",
    "Pair",
    "SyncRecord",
    "WireMeter",
    "copy_store",
    "event_bytes",
    "fill_cases",
    "make_pair",
    "node_config",
    "read_events",
]

#: The summary note of every generated case (sealed; ≈ 1 KB of bodies per case).
_SUMMARY = (
    "避難所で生活中。持病の薬（血圧）が残り3日分。息子と連絡が取れていない。"
    "Visitor asks about temporary housing and the application deadline; documents "
    "copied, originals returned. Needs an interpreter (Vietnamese) for the next visit. "
    "Call back after the site inspection on Tuesday; referred to the health desk."
)
_NAMES = ("山田 花子", "佐藤 太郎", "鈴木 一郎", "Nguyen Van An", "高橋 美咲", "伊藤 健")


@dataclass(frozen=True, slots=True)
class Pair:
    """Two provisioned homes of one fresh deployment: ``a`` is its HQ."""

    a: NodeHome
    b: NodeHome


async def make_pair(root: Path, now: dt.datetime) -> Pair:
    """Create a deployment in ``root/a`` and provision ``root/b`` from a kit it issued."""
    specs = [HomeSpec("a", Role.HQ, site="hq"), HomeSpec("b", Role.DESK, site="s")]
    deployment = await build_deployment(root, "bench", specs, now=now)
    return Pair(deployment.homes["a"], deployment.homes["b"])


def node_config(home: NodeHome, peers: list[str]) -> Config:
    """Listen on loopback, mDNS off, ``peers`` as static peers; default timings."""
    return load_config(home.config_path).with_overrides(
        listen="127.0.0.1:0", static_peers=peers, mdns=False
    )


def event_bytes(event: StoredEvent) -> int:
    """Size of a stored event: body + author + case id + seq, hlc, kind (8 B each) +
    prev_hash and hash (32 B each)."""
    case = len(event.case_id.encode()) if event.case_id is not None else 0
    return len(event.body) + len(event.author.encode()) + case + 3 * 8 + 2 * 32


@dataclass(frozen=True, slots=True)
class FillStats:
    """What :func:`fill_cases` wrote: events, cases, checkpoints, byte sums."""

    events: int
    cases: int
    checkpoints: int
    body_bytes: int
    event_bytes: int
    seconds: float


async def fill_cases(
    home: NodeHome,
    *,
    events: int,
    batch_events: int,
    now: dt.datetime,
    seed: int = 2026,
    progress: Callable[[str], None] | None = None,
) -> FillStats:
    """Append ``events`` case events (an opening and a note per case) to ``home``.

    The home's node is the author; its store must not be open elsewhere. Each case
    is an opening with a sealed personal block and a sealed summary note (the last
    case of an odd count has only its opening).
    """
    start = time.perf_counter()
    kit = home.load_identity(now=now)
    me = str(kit.node_id)
    rng = random.Random(seed)
    people = audience(origin=me, consent=(), directory=[kit.info])
    wall = int(now.timestamp() * 1000) - events * 500
    body_sum = size_sum = written = cases = checkpoints = 0
    async with Store.open(home.store_path, indexer=CaseIndexing()) as store:
        head = (await store.heads()).get(me)
        clock = Clock()
        if head is not None:
            last = await store.events_after(me, head[0] - 1, 1)
            clock = Clock(last[0].hlc)
        chain = ChainWriter(me, kit.key, head)
        writer = CaseWriter("bench", clock, rng)
        pending = 0

        async def commit() -> None:
            nonlocal pending, checkpoints, body_sum, size_sum
            batch, checkpoint = chain.commit()
            await store.append_run(batch, checkpoint, received_at=wall)
            body_sum += sum(len(e.body) for e in batch)
            size_sum += sum(event_bytes(e) for e in batch)
            checkpoints += 1
            pending = 0

        while written < events:
            wall += 1000
            personal = Personal(
                name=rng.choice(_NAMES),
                age=rng.randint(1, 99),
                phone=f"090-{rng.randint(0, 9999):04d}-{rng.randint(0, 9999):04d}",
                shelter="第二小学校体育館",
                household_size=rng.randint(1, 6),
            )
            draft = writer.open_case(
                wall_ms=wall, site=kit.info.site, category="welfare_eldercare", urgency="high"
            )
            sealed = seal(personal.to_msgpack(), people, aad=case_aad(draft.case_id, "personal"))
            opening = draft.payload
            assert isinstance(opening, CaseOpened)
            draft = dataclasses.replace(draft, payload=dataclasses.replace(opening, sealed=sealed))
            drafts = [draft]
            if events - written >= 2:
                note = seal(_SUMMARY.encode(), people, aad=case_aad(draft.case_id, "note"))
                drafts.append(writer.add_note(fold([draft.event(me, 0)]), note, wall_ms=wall))
            for d in drafts:
                chain.append(hlc=d.hlc, case_id=d.case_id, kind=d.kind, body=d.body)
            written += len(drafts)
            pending += len(drafts)
            cases += 1
            if pending >= batch_events:
                await commit()
            if progress is not None and cases % 5000 == 0:
                progress(f"  {written:,} of {events:,} events written")
        if pending:
            await commit()
    return FillStats(written, cases, checkpoints, body_sum, size_sum, time.perf_counter() - start)


def copy_store(source: NodeHome, target: NodeHome) -> None:
    """Replace ``target``'s database by a consistent copy of ``source``'s."""
    for suffix in ("-wal", "-shm"):
        target.store_path.with_name(target.store_path.name + suffix).unlink(missing_ok=True)
    src = sqlite3.connect(source.store_path)
    dst = sqlite3.connect(target.store_path)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def read_events(home: NodeHome) -> list[StoredEvent]:
    """Every event of a (closed) store, straight through ``sqlite3``."""
    db = sqlite3.connect(home.store_path)
    try:
        rows = db.execute(
            "SELECT author, seq, hlc, case_id, kind, body, prev_hash, hash FROM events"
            " ORDER BY author, seq"
        ).fetchall()
    finally:
        db.close()
    return [
        StoredEvent(a, s, h, c, k, bytes(b), bytes(p), bytes(d)) for a, s, h, c, k, b, p, d in rows
    ]


# -- the wire meter ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """One sync frame written: when, by whom, what, how many bytes, its depth."""

    at: float
    sender: str
    kind: str
    size: int
    depth: int
    events: int


class WireMeter:
    """Counts frames the metered nodes write (see the module docstring)."""

    def __init__(self) -> None:
        self.records: list[SyncRecord] = []
        self.other_bytes = 0
        self._sizes: dict[int, int] = {}
        self._depths: dict[tuple[str, str], deque[int]] = {}  # (connection, sender)
        self._received: dict[str, int] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[WireMeter]:
        """Wrap ``meshdesk.net.tls.pack_frame`` while the block runs."""
        namespace: dict[str, Any] = vars(tls)  # TlsChannel.send looks it up there
        original = cast(Callable[[Frame, WireLimits], bytes], namespace["pack_frame"])

        def packed(frame: Frame, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
            data = original(frame, limits)
            self._sizes[id(frame)] = len(data)
            return data

        namespace["pack_frame"] = packed
        try:
            yield self
        finally:
            namespace["pack_frame"] = original

    @property
    def connections(self) -> int:
        """TCP connections that carried sync frames (more than one: a link was lost)."""
        return len({connection for connection, _ in self._depths})

    def received_depth(self, node: str) -> int:
        """Depth of the deepest sync frame ``node`` has received."""
        return self._received.get(node, 0)

    def sent(self, sender: str, connection: str, frame: Frame) -> None:
        size = self._sizes.pop(id(frame), 0)
        if not is_sync_frame(frame):
            self.other_bytes += size
            return
        depth = 1 + self._received.get(sender, 0)
        self._depths.setdefault((connection, sender), deque()).append(depth)
        count = len(frame.events) if isinstance(frame, SyncEvents) else 0
        name = type(frame).__name__
        self.records.append(SyncRecord(time.perf_counter(), sender, name, size, depth, count))

    def received(self, receiver: str, sender: str, connection: str, frame: Frame) -> None:
        if is_sync_frame(frame):
            queue = self._depths.get((connection, sender))
            depth = queue.popleft() if queue else 0  # TLS keeps each direction in order
            self._received[receiver] = max(self._received.get(receiver, 0), depth)


class _MeteredChannel:
    """A :class:`Channel` that reports each frame it carries to a :class:`WireMeter`."""

    def __init__(self, inner: Channel, me: str, meter: WireMeter) -> None:
        self._inner, self._me, self._meter = inner, me, meter
        # Both ends name the TCP connection alike, so frames lost with a dead link
        # never shift the depths of the next one.
        writer = getattr(inner, "_writer", None)
        ends = [str(writer.get_extra_info(k)) for k in ("sockname", "peername")] if writer else []
        self._connection = " ".join(sorted(ends)) or inner.remote

    @property
    def peer(self) -> NodeInfo:
        return self._inner.peer

    @property
    def remote(self) -> str:
        return self._inner.remote

    @property
    def closed(self) -> bool:
        return self._inner.closed

    async def send(self, frame: Frame) -> None:
        try:
            await self._inner.send(frame)
        except BaseException:
            self._meter._sizes.pop(id(frame), None)
            raise
        self._meter.sent(self._me, self._connection, frame)

    async def recv(self) -> Frame:
        frame = await self._inner.recv()
        self._meter.received(self._me, self._inner.peer.name, self._connection, frame)
        return frame

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def abort(self) -> None:
        await self._inner.abort()


class MeteredNode(Node):
    """A :class:`Node` whose TLS channels (dialled and accepted) are metered."""

    def __init__(self, home: NodeHome, config: Config, meter: WireMeter) -> None:
        super().__init__(home, config)
        self.meter = meter

    async def _dial(self, host: str, port: int, wait: float) -> Channel:
        channel = await super()._dial(host, port, wait)
        return _MeteredChannel(channel, self.kit.info.name, self.meter)

    async def _on_inbound(self, channel: Channel) -> None:
        await super()._on_inbound(_MeteredChannel(channel, self.kit.info.name, self.meter))
