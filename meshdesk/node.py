"""A running node: its parts (store, directory, notices, bundles, listener, links,
calls, web port, discovery, control socket) wired together. :class:`Node` is an async
context manager: entering starts every part and returns when the node is reachable;
leaving shuts down in reverse order. Each part's own job lives with it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Self

from meshdesk import ops
from meshdesk._lifecycle import AsyncResource, cancel_and_wait, running
from meshdesk.bundles import Bundles
from meshdesk.bus import BusLogHandler, EventBus
from meshdesk.calls import CallManager, is_call_frame
from meshdesk.cases.book import CaseBook
from meshdesk.cases.summary import case_store
from meshdesk.clock import ClockWatch, peer_clocks
from meshdesk.config import Config
from meshdesk.control import ControlServer
from meshdesk.directory import Directory, is_directory_frame
from meshdesk.errors import ChannelClosed, StoreFull
from meshdesk.home import NodeHome
from meshdesk.hub.city import start_city_feed
from meshdesk.identity import NodeKit
from meshdesk.net.channel import Channel, PeerAddress
from meshdesk.net.discovery import Sighting, ZeroconfDiscovery
from meshdesk.net.interfaces import select_interfaces
from meshdesk.net.link import PROTOCOL_VERSION, Link
from meshdesk.net.mesh import LinkManager, PeerEvent
from meshdesk.net.tls import TlsListener, connect
from meshdesk.notices import NoticeBoard
from meshdesk.store import Store, StoredEvent
from meshdesk.sync.driver import SyncService, is_sync_frame
from meshdesk.web import start_web
from meshdesk.wire import Frame, Hello

__all__ = ["Node"]

log = logging.getLogger("meshdesk.node")

_UTC_NOW = functools.partial(dt.datetime.now, dt.UTC)
#: Logged when mDNS says a peer left (``bench discovery`` waits for this line).
_LEFT = "mDNS: %s left the network (or said goodbye)"
#: Seconds between looks at sync progress (published only when it changed).
_PROGRESS_INTERVAL = 0.5


class Node(AsyncResource):
    """One meshdesk node, running in this process."""

    def __init__(
        self,
        home: NodeHome,
        config: Config,
        *,
        now: Callable[[], dt.datetime] = _UTC_NOW,
        rng: random.Random | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self._now = now
        self._rng = rng or random.Random()
        self._stack = contextlib.AsyncExitStack()
        self._started = time.monotonic()
        self._kit: NodeKit | None = None
        self._store: Store | None = None
        self._directory: Directory | None = None
        self._manager: LinkManager | None = None
        self._listener: TlsListener | None = None
        self.discovery: ZeroconfDiscovery | None = None
        #: What changed, for the console and the CLI (see :mod:`meshdesk.bus`).
        self.events = EventBus()

    # Parts exist only while the node runs; using one earlier is a programming error.

    @property
    def kit(self) -> NodeKit:
        return running(self._kit)

    @property
    def store(self) -> Store:
        return running(self._store)

    @property
    def directory(self) -> Directory:
        return running(self._directory)

    @property
    def manager(self) -> LinkManager:
        return running(self._manager)

    @property
    def listener(self) -> TlsListener:
        return running(self._listener)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Shut down in order (the exit stack unwinds in reverse start order)."""
        await self._stack.aclose()

    async def _start(self) -> None:
        self.events = EventBus(clock_ms=lambda: int(self._now().timestamp() * 1000))
        self._stack.callback(self.events.close)
        handler = BusLogHandler(self.events)
        logging.getLogger("meshdesk").addHandler(handler)
        self._stack.callback(logging.getLogger("meshdesk").removeHandler, handler)
        kit = self._kit = self.home.load_identity(now=self._now())
        info = kit.info
        self.clock = ClockWatch(
            info.name,
            str(info.role),
            lambda: peer_clocks(self.manager.peers()),
            on_change=lambda view: self.events.publish("clock", view.to_json()),
        )
        log.info("starting node %s (%s) from %s", info.name, info.node_id, self.home.path)
        self._store = await self._stack.enter_async_context(case_store(self.home.store_path))
        self._directory = await Directory.open(self.store, kit, now=self._now)
        await self.directory.seed()
        self.cases = CaseBook(self.store, kit, directory=self.directory.nodes,
                              wall_ms=self._record_ms, rng=self._rng,
                              records=self.config.records)  # fmt: skip
        await self._stack.enter_async_context(self.cases)  # it keeps the search terms
        self.notices = await self._stack.enter_async_context(NoticeBoard(self.store, self.cases,
            kit, directory=self.directory.nodes, wall_ms=self._record_ms, config=self.config.node,
            seen=lambda n: self.manager.last_seen(n), publish=self.events.publish))  # fmt: skip
        self.sync = await self._stack.enter_async_context(SyncService(self.store,
            key_of=self.directory.author_key,
            received_at=lambda: int(self._now().timestamp() * 1000)))  # fmt: skip
        self.hub = await start_city_feed(self._stack, self)  # the prefecture feed ([hub])
        self.cases.on_commit = self._committed
        self.sync.on_stored = self._stored
        self.bundles = Bundles(self.store, self.directory, kit, imported=self.sync.imported,
                               publish=self.events.publish)  # fmt: skip
        self.sync.on_offence = lambda link, what: self.manager.offence(link.peer_id, what)
        network = self.config.network
        interfaces = select_interfaces(network.interfaces) if network.mdns else []
        if network.mdns and not interfaces:
            # Offline is normal: with no network up yet, serve static peers and the
            # control socket rather than refusing to start.
            log.warning("no up IPv4 interface for mDNS; discovery is off until restart")

        self._listener = await self._stack.enter_async_context(
            TlsListener(
                network.listen.host,
                network.listen.port,
                cert_path=self.home.cert_path,
                key_path=self.home.key_path,
                ca_cert=kit.ca_cert,
                trust=self.directory.trust,
                now=self._now,
                on_channel=self._on_inbound,
                on_refused=self._on_refused,
                handshake_timeout=self.config.timings.connect_timeout,
            )
        )
        hello = Hello(
            proto=PROTOCOL_VERSION,
            node_id=str(info.node_id),
            name=info.name,
            site=info.site,
            role=str(info.role),
            listen_port=self.listener.port,
            features=(),
            instance=self._rng.getrandbits(63),
        )
        self._manager = await self._stack.enter_async_context(
            LinkManager(
                info,
                hello=hello,
                timings=self.config.timings,
                connect=self._dial,
                on_frame=self._on_frame,
                on_link_up=self._on_link_up,
                peer_exchange=network.peer_exchange,
                rng=self._rng,
                wall_ms=lambda: int(self._now().timestamp() * 1000),
            )
        )
        self.manager.add_listener(self._peer_event)
        self.directory.connect(self.manager)
        self.calls = await self._stack.enter_async_context(
            CallManager(
                info,
                self.config.calls,
                link_of=self.manager.link,
                peers=self.manager.peers,
                case_log=self.cases,
                wall_ms=self._record_ms,
            )
        )
        self.manager.add_listener(self.calls.on_peer_event)
        self.calls.add_listener(lambda call: self.events.publish("call", call))
        self.citizens = await start_web(self._stack, self.home, kit, self.config, self.calls,
                                        self.events.publish, now=self._now)  # fmt: skip
        for endpoint in network.static_peers:
            self.manager.add_address(PeerAddress(endpoint.host, endpoint.port, "static"))
        if network.mdns and interfaces:
            self.discovery = await self._stack.enter_async_context(
                ZeroconfDiscovery(
                    info,
                    self.listener.port,
                    interfaces,
                    on_found=self._on_sighting,
                    on_lost=lambda node_id: log.info(_LEFT, node_id),
                    refresh_every=self.config.timings.discovery_refresh,
                )
            )
        progress = asyncio.create_task(self._publish_progress(), name="sync progress")
        self._stack.push_async_callback(cancel_and_wait, progress)
        await self._stack.enter_async_context(
            ControlServer(self.home.control_socket, self.serve_ops(), bus=self.events)
        )
        names = ", ".join(i.name for i in interfaces) or "none (mDNS off)"
        log.info(
            "node %s (%s) of %s listening on port %d; mDNS on %s; %d static peers",
            info.name,
            info.node_id,
            info.deployment,
            self.listener.port,
            names,
            len(network.static_peers),
        )

    # -- wiring ----------------------------------------------------------------------

    async def _dial(self, host: str, port: int, wait: float) -> Channel:
        return await connect(
            host,
            port,
            cert_path=self.home.cert_path,
            key_path=self.home.key_path,
            ca_cert=self.kit.ca_cert,
            trust=self.directory.trust,
            now=self._now,
            timeout=wait,
        )

    async def _on_inbound(self, channel: Channel) -> None:
        if self._manager is None:
            await channel.aclose()
            return
        await self._manager.accept(channel)

    def _on_refused(self, fingerprint: str, address: str, reason: str) -> None:
        if self._manager is not None:
            self._manager.refused(fingerprint, address, reason)
        else:
            log.warning("refused %s from %s: %s", fingerprint, address, reason)

    def _on_sighting(self, sighting: Sighting) -> None:
        if self._manager is None:
            return
        node_id = str(sighting.node_id)
        for address in sighting.addresses:
            self.manager.add_address(address, node_id)
        self.manager.seen(
            node_id, {"name": sighting.name, "site": sighting.site, "role": sighting.role}
        )

    async def _on_link_up(self, link: Link) -> None:
        """Gossip revocations and the directory to a new peer, then start replicating."""
        with contextlib.suppress(ChannelClosed):
            await self.directory.greet(link)
            await self.sync.attach(link)

    def _record_ms(self) -> int:
        """Wall time to stamp records with: ours, corrected by HQ's (meshdesk.clock)."""
        return int(self._now().timestamp() * 1000) + self.clock.correction_ms

    async def _on_frame(self, link: Link, frame: Frame) -> None:
        try:
            if is_sync_frame(frame):
                await self.sync.on_frame(link, frame)
            elif is_call_frame(frame):
                await self.calls.on_frame(link, frame)
            elif is_directory_frame(frame):
                await self.directory.on_frame(link, frame)
            else:
                log.debug("%s sent %s, which nothing here handles", link, type(frame).__name__)
        except StoreFull as exc:  # our disk, not the peer: keep the link, keep serving
            log.warning("could not keep what %s sent: %s", link, exc)

    def _peer_event(self, event: PeerEvent) -> None:
        log.debug("peer event %s: %s", event.kind, event.peer)
        self.events.publish("peer", {"change": event.kind, "peer": event.peer})

    async def _committed(self, events: list[StoredEvent]) -> None:
        """Our own edit: announce it to every link and to the console."""
        self._publish_cases(events, "local")
        await self.sync.committed(events)

    def _stored(self, events: list[StoredEvent]) -> None:
        self.cases.steward.notice(events)  # erasures (and receipts) follow from what arrived
        self._publish_cases(events, "sync")
        self.notices.received(events)

    def _publish_cases(self, events: list[StoredEvent], source: str) -> None:
        if self.hub is not None:  # the prefecture feed publishes them now, not at its poll
            self.hub.stored()
        case_ids = sorted({e.case_id for e in events if e.case_id is not None})
        if case_ids:
            self.events.publish("case", {"case_ids": case_ids, "source": source})

    async def _publish_progress(self) -> None:
        last: object = None
        while True:
            await asyncio.sleep(_PROGRESS_INTERVAL)
            self.clock.check()
            peers = self.sync.progress()
            if peers != last:
                last = peers
                self.events.publish("sync", {"peers": peers})

    # -- control ---------------------------------------------------------------------

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def serve_ops(self) -> ops.Dispatcher:
        """Every control operation (:data:`meshdesk.ops.OPS`) over this node's parts."""
        return ops.OPS.serve(
            ops.NODE_OPS.bind(self),
            ops.CASE_OPS.bind(self.cases),
            ops.CALL_OPS.bind(self.calls),
            ops.INVITE_OPS.bind(self.citizens),
            ops.NOTICE_OPS.bind(self.notices),
            ops.BUNDLE_OPS.bind(self.bundles),
        )
