"""Parts of ``bench sync``: a two-node deployment and a wire meter (the case data
comes from :func:`meshdesk.bench._fill.fill_cases`).

- :func:`make_pair` creates a throw-away deployment: node ``a`` (its HQ) and node
  ``b`` (a desk provisioned from a kit ``a`` issued), each in its own home.
- :class:`WireMeter` counts what the two in-process nodes write on their TLS
  channels. It wraps ``meshdesk.net.tls.pack_frame`` (the exact bytes
  ``TlsChannel.send`` writes: 4-byte length prefix + msgpack envelope, i.e. the TLS
  plaintext) and each node's channels (:class:`MeteredNode`), so every frame is
  attributed to its sender, and every sync frame gets a causal *depth*: 1 + the
  deepest sync frame its sender had received before sending it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from meshdesk.bench._fill import FillStats, event_bytes, fill_cases
from meshdesk.config import Config, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.home import NodeHome
from meshdesk.identity import NodeInfo, Role
from meshdesk.net import tls
from meshdesk.net.channel import Channel
from meshdesk.node import Node
from meshdesk.store import StoredEvent
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


@dataclass(frozen=True, slots=True)
class Pair:
    """Provisioned homes of one fresh deployment: ``a`` is its HQ, ``b`` a desk, and
    ``spares`` more desks (``c``, ``d``, ...) when asked for."""

    a: NodeHome
    b: NodeHome
    spares: tuple[NodeHome, ...] = ()


async def make_pair(root: Path, now: dt.datetime, *, spares: int = 0) -> Pair:
    """Create a deployment in ``root/a`` and provision ``root/b`` (and ``spares`` more
    desks) from kits it issued."""
    names = [chr(ord("c") + i) for i in range(spares)]
    specs = [HomeSpec("a", Role.HQ, site="hq"), HomeSpec("b", Role.DESK, site="s")]
    specs += [HomeSpec(name, Role.DESK, site="s") for name in names]
    deployment = await build_deployment(root, "bench", specs, now=now)
    homes = deployment.homes
    return Pair(homes["a"], homes["b"], tuple(homes[name] for name in names))


def node_config(home: NodeHome, peers: list[str]) -> Config:
    """Listen on loopback (links and the web port; no HTTP redirect), mDNS off,
    ``peers`` as static peers; default timings."""
    return load_config(home.config_path).with_overrides(
        listen="127.0.0.1:0",
        static_peers=peers,
        mdns=False,
        web_listen="127.0.0.1:0",
        web_redirect="127.0.0.1:0",
    )


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
