"""A running node: identity, store, listener, links, discovery and control socket.

:class:`Node` is an async context manager. Entering it starts every part and
returns when the node is reachable; leaving it shuts down in order: stop
discovery (mDNS goodbye), close the control socket, say goodbye on every link,
stop listening, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk._lifecycle import AsyncResource
from meshdesk._version import __version__
from meshdesk.bus import BusLogHandler, EventBus
from meshdesk.calls import CallManager, is_call_frame
from meshdesk.cases.book import CaseBook
from meshdesk.cases.chain import author_node
from meshdesk.cases.ops import run_case_op
from meshdesk.clock import ClockWatch, PeerClock
from meshdesk.config import Config
from meshdesk.control import ControlServer
from meshdesk.errors import AuthError, CallError, ChannelClosed, UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import NodeId, NodeInfo, NodeKit, RevocationList
from meshdesk.net.channel import Channel, PeerAddress
from meshdesk.net.discovery import Sighting, ZeroconfDiscovery
from meshdesk.net.interfaces import select_interfaces
from meshdesk.net.link import PROTOCOL_VERSION, Link
from meshdesk.net.mesh import LinkManager, PeerEvent
from meshdesk.net.tls import TlsListener, connect
from meshdesk.net.trust import TrustPolicy
from meshdesk.store import Store, StoredEvent, digest_of
from meshdesk.sync.driver import SyncService, is_sync_frame
from meshdesk.wire import Certificates, Frame, Hello, Revocations

__all__ = ["Node"]

log = logging.getLogger("meshdesk.node")

_T = TypeVar("_T")

#: Certificates per gossip frame (the frame's limit is 256).
_CERTS_PER_FRAME = 64
#: Seconds between looks at sync progress (published only when it changed).
_PROGRESS_INTERVAL = 0.5


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _running(part: _T | None) -> _T:
    if part is None:
        raise RuntimeError("the node is not running")
    return part


class Node(AsyncResource):
    """One meshdesk node, running in this process."""

    def __init__(
        self,
        home: NodeHome,
        config: Config,
        *,
        now: Callable[[], dt.datetime] = _utcnow,
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
        self._trust: TrustPolicy | None = None
        self._manager: LinkManager | None = None
        self._listener: TlsListener | None = None
        self.discovery: ZeroconfDiscovery | None = None
        #: What changed, for the console and the CLI (see :mod:`meshdesk.bus`).
        self.events = EventBus()

    # Parts exist only while the node runs; using one earlier is a programming error.

    @property
    def kit(self) -> NodeKit:
        return _running(self._kit)

    @property
    def store(self) -> Store:
        return _running(self._store)

    @property
    def trust(self) -> TrustPolicy:
        return _running(self._trust)

    @property
    def manager(self) -> LinkManager:
        return _running(self._manager)

    @property
    def listener(self) -> TlsListener:
        return _running(self._listener)

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
            self._peer_clocks,
            on_change=lambda view: self.events.publish("clock", view.to_json()),
        )
        log.info("starting node %s (%s) from %s", info.name, info.node_id, self.home.path)
        self._store = await self._stack.enter_async_context(Store.open(self.home.store_path))
        self._trust = TrustPolicy(kit.ca_cert, await self._load_revocations())
        await self._seed_directory()
        self.cases = CaseBook(
            self.store,
            kit,
            directory=self.directory,
            wall_ms=self._record_ms,
            rng=self._rng,
        )
        self.sync = await self._stack.enter_async_context(
            SyncService(
                self.store,
                key_of=self._author_key,
                received_at=lambda: int(self._now().timestamp() * 1000),
            )
        )
        self.cases.on_commit = self._committed
        self.sync.on_stored = self._stored
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
                trust=self.trust,
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
        for endpoint in network.static_peers:
            self.manager.add_address(PeerAddress(endpoint.host, endpoint.port, "static"))
        if network.mdns and interfaces:
            self.discovery = await self._stack.enter_async_context(
                ZeroconfDiscovery(
                    info,
                    self.listener.port,
                    interfaces,
                    on_found=self._on_sighting,
                    on_lost=self._on_lost,
                )
            )
        progress = asyncio.create_task(self._publish_progress(), name="sync progress")
        self._stack.push_async_callback(_cancel, progress)
        if self.discovery is not None:
            refresher = asyncio.create_task(self._refresh_discovery(), name="mDNS refresh")
            self._stack.push_async_callback(_cancel, refresher)
        await self._stack.enter_async_context(
            ControlServer(self.home.control_socket, self._control_handlers(), bus=self.events)
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

    def _record_ms(self) -> int:
        """Wall time for stamping records: ours, corrected by the peers' clocks if
        ours is off (see :mod:`meshdesk.clock`)."""
        return int(self._now().timestamp() * 1000) + self.clock.correction_ms

    def _peer_clocks(self) -> list[PeerClock]:
        return [
            PeerClock(p.node_id, p.name, p.role, p.clock_offset_ms)
            for p in self.manager.peers()
            if p.state == "linked" and p.clock_offset_ms is not None
        ]

    async def _load_revocations(self) -> RevocationList | None:
        stored = await self.store.revocation_list()
        if stored is None:
            return None
        try:
            return RevocationList.load(stored[1], self.kit.ca_cert)
        except AuthError as exc:
            log.error("stored revocation list is invalid and was ignored: %s", exc)
            return None

    # -- wiring ----------------------------------------------------------------------

    async def _dial(self, host: str, port: int, wait: float) -> Channel:
        return await connect(
            host,
            port,
            cert_path=self.home.cert_path,
            key_path=self.home.key_path,
            ca_cert=self.kit.ca_cert,
            trust=self.trust,
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

    def _on_lost(self, node_id: NodeId) -> None:
        log.info("mDNS: %s left the network (or said goodbye)", node_id)

    async def _on_link_up(self, link: Link) -> None:
        """Gossip revocations and the directory to a new peer, then start replicating."""
        crl = self.trust.crl
        with contextlib.suppress(ChannelClosed):
            if crl is not None:
                await link.send(Revocations(number=crl.number, crl=crl.der))
            known = list((await self.store.certificates()).values())
            for start in range(0, len(known), _CERTS_PER_FRAME):
                await link.send(Certificates(certs=tuple(known[start : start + _CERTS_PER_FRAME])))
            await self.sync.attach(link)

    async def _author_key(self, author: str) -> Ed25519PublicKey | None:
        """The signing key of chain ``author`` from a directory certificate that verifies."""
        try:
            node = author_node(author)
        except ValueError:
            return None  # not a chain name: its runs are refused
        der = (await self.store.certificates()).get(node)
        if der is None:
            return None
        try:
            self.trust.verify_peer(der, now=self._now())
        except AuthError:
            return None  # revoked or expired: its events are refused
        key = x509.load_der_x509_certificate(der).public_key()
        return key if isinstance(key, Ed25519PublicKey) else None

    async def _seed_directory(self) -> None:
        """Our own certificate, and on the HQ that issued them, every kit's."""
        now_ms = int(self._now().timestamp() * 1000)
        own = self.kit.cert.public_bytes(serialization.Encoding.DER)
        await self.store.save_certificate(str(self.kit.node_id), own, now_ms)
        for issued in await self.store.issued_nodes():
            der = x509.load_pem_x509_certificate(issued.cert_pem.encode()).public_bytes(
                serialization.Encoding.DER
            )
            await self.store.save_certificate(issued.node_id, der, now_ms)

    async def take_certificates(self, certs: tuple[bytes, ...], *, source: Link | None) -> int:
        """Keep the certificates that verify against our CA; pass new ones on.

        A certificate that does not verify (another deployment, revoked, garbage)
        is skipped and counted in the log; it changes nothing. Returns how many
        were new.
        """
        fresh: list[bytes] = []
        refused = 0
        now = self._now()
        for der in certs:
            try:
                info = self.trust.verify_peer(der, now=now)
            except AuthError:
                refused += 1
                continue
            if await self.store.save_certificate(
                str(info.node_id), der, int(now.timestamp() * 1000)
            ):
                fresh.append(der)
        if refused:
            log.info("skipped %d certificates from %s that do not verify", refused, source)
        if fresh:
            log.info("directory: %d new node certificates from %s", len(fresh), source)
            frame = Certificates(certs=tuple(fresh))
            for link in self.manager.links():
                if link is not source:
                    with contextlib.suppress(ChannelClosed):
                        await link.send(frame)
        return len(fresh)

    async def directory(self) -> list[NodeInfo]:
        """Every node of the deployment we know a valid certificate of."""
        infos = []
        for der in (await self.store.certificates()).values():
            with contextlib.suppress(AuthError):
                infos.append(self.trust.verify_peer(der, now=self._now()))
        return infos

    async def _on_frame(self, link: Link, frame: Frame) -> None:
        if is_sync_frame(frame):
            await self.sync.on_frame(link, frame)
            return
        if is_call_frame(frame):
            await self.calls.on_frame(link, frame)
            return
        match frame:
            case Revocations(crl=der):
                await self.apply_revocations(der, source=link)
            case Certificates(certs=certs):
                await self.take_certificates(certs, source=link)
            case _:
                log.debug("%s sent %s, which nothing here handles yet", link, type(frame).__name__)

    async def apply_revocations(self, der: bytes, *, source: Link | None = None) -> bool:
        """Verify and adopt a revocation list if it is newer; cut off revoked peers.

        A list that does not verify is logged and changes nothing. Returns whether
        the list was adopted.
        """
        where = f"from {source}" if source is not None else "from the store"
        try:
            crl = RevocationList.load(der, self.kit.ca_cert)
            adopted = self.trust.update_revocations(crl)
        except AuthError as exc:
            log.warning("ignored a revocation list %s: %s", where, exc)
            return False
        if not adopted:
            return False
        await self.store.save_revocation_list(crl.number, crl.der)
        reason = f"revoked (revocation list #{crl.number})"
        cut = self.manager.revoke(lambda info: crl.is_revoked(info.serial), reason)
        log.warning(
            "revocation list #%d %s adopted: %d certificates revoked, %d links cut",
            crl.number,
            where,
            len(crl.serials),
            len(cut),
        )
        frame = Revocations(number=crl.number, crl=crl.der)
        for link in self.manager.links():
            if link is not source:
                with contextlib.suppress(ChannelClosed):
                    await link.send(frame)
        return True

    def _peer_event(self, event: PeerEvent) -> None:
        log.debug("peer event %s: %s", event.kind, event.peer)
        self.events.publish("peer", {"change": event.kind, "peer": event.peer})

    async def _committed(self, events: list[StoredEvent]) -> None:
        """Our own edit: announce it to every link and to the console."""
        self._publish_cases(events, "local")
        await self.sync.committed(events)

    def _stored(self, events: list[StoredEvent]) -> None:
        self._publish_cases(events, "sync")

    def _publish_cases(self, events: list[StoredEvent], source: str) -> None:
        case_ids = sorted({e.case_id for e in events if e.case_id is not None})
        if case_ids:
            self.events.publish("case", {"case_ids": case_ids, "source": source})

    async def _refresh_discovery(self) -> None:
        """Query mDNS again every ``discovery_refresh`` s (see :class:`Timings`)."""
        assert self.discovery is not None
        while True:
            await asyncio.sleep(self.config.timings.discovery_refresh)
            try:
                await self.discovery.refresh()
            except OSError as exc:  # no route or interface right now: try next time
                log.info("mDNS refresh failed: %s", exc)

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

    def _control_handlers(self) -> Mapping[str, Callable[[Mapping[str, Any]], Any]]:
        async def status(_: Mapping[str, Any]) -> object:
            return await self.status()

        async def peers(_: Mapping[str, Any]) -> object:
            return self.peers()

        async def sync(_: Mapping[str, Any]) -> object:
            return self.sync.progress()

        async def reload_revocations(_: Mapping[str, Any]) -> object:
            stored = await self.store.revocation_list()
            if stored is None:
                return {"adopted": False, "number": None}
            adopted = await self.apply_revocations(stored[1])
            return {"adopted": adopted, "number": stored[0]}

        async def digest(_: Mapping[str, Any]) -> object:
            entries = await self.store.event_hashes()
            heads: dict[str, int] = {}
            for author, seq, _hash in entries:
                heads[author] = max(heads.get(author, 0), seq)
            return {"digest": digest_of(entries), "events": len(entries), "heads": heads}

        async def case(args: Mapping[str, Any]) -> object:
            name, op_args = args.get("op"), args.get("args", {})
            if not isinstance(name, str) or not isinstance(op_args, dict):
                raise UsageError("case requests need an 'op' name and an 'args' object")
            return await run_case_op(self.cases, name, op_args)

        async def directory(_: Mapping[str, Any]) -> object:
            return [info.to_json() for info in await self.directory()]

        return {
            "status": status,
            "peers": peers,
            "directory": directory,
            "sync": sync,
            "reload_revocations": reload_revocations,
            "digest": digest,
            "case": case,
            **self._call_handlers(),
        }

    def _call_handlers(self) -> Mapping[str, Callable[[Mapping[str, Any]], Any]]:
        """The call ops of the control socket (shapes in docs/ARCHITECTURE.md, "Calls")."""

        def flag(args: Mapping[str, Any], key: str) -> bool | None:
            value = args.get(key)
            if value is not None and not isinstance(value, bool):
                raise CallError(f"'{key}' must be true, false or null")
            return value

        def text(args: Mapping[str, Any], key: str, default: str | None = None) -> str:
            value = args.get(key, default)
            if not isinstance(value, str) or not value:
                raise CallError(f"'{key}' must be a non-empty string")
            return value

        async def call_start(args: Mapping[str, Any]) -> object:
            case = args.get("case")
            if case is not None and not isinstance(case, str):
                raise CallError("'case' must be a case id or null")
            return await self.calls.start(
                text(args, "peer"),
                case_id=case,
                audio_only=bool(flag(args, "audio_only")),
                media=text(args, "media", "synthetic"),
            )

        async def call_answer(args: Mapping[str, Any]) -> object:
            return await self.calls.answer(args.get("call_id"), bool(flag(args, "accept")))

        async def call_invite(args: Mapping[str, Any]) -> object:
            return await self.calls.invite(args.get("call_id"), text(args, "peer"))

        async def call_hangup(args: Mapping[str, Any]) -> object:
            return await self.calls.hangup(args.get("call_id"))

        async def call_mute(args: Mapping[str, Any]) -> object:
            return await self.calls.mute(
                args.get("call_id"), flag(args, "audio"), flag(args, "video")
            )

        async def calls(_: Mapping[str, Any]) -> object:
            return self.calls.calls()

        async def call_preview(args: Mapping[str, Any]) -> object:
            return self.calls.preview(args.get("call_id"), args.get("node_id"))

        return {
            "call_start": call_start,
            "call_answer": call_answer,
            "call_invite": call_invite,
            "call_hangup": call_hangup,
            "call_mute": call_mute,
            "calls": calls,
            "call_preview": call_preview,
        }

    def peers(self) -> list[dict[str, object]]:
        return [record.to_json() for record in self.manager.peers()]

    async def status(self) -> dict[str, object]:
        counts = await self.store.counts()
        peers = self.manager.peers()
        return {
            **self.kit.info.to_json(),
            "deployment_id": str(self.kit.deployment_id),
            "version": __version__,
            "running": True,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "listen_port": self.listener.port,
            "peers_known": len(peers),
            "peers_linked": sum(1 for p in peers if p.state == "linked"),
            "store": {
                "events": counts.events,
                "authors": counts.authors,
                "cases": counts.cases,
            },
            "clock": self.clock.view.to_json(),
        }
