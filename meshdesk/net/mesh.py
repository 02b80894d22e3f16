"""The link manager: one link per peer, kept up by dialing, accepting and gossip.

Addresses come from static config, mDNS sightings, peer exchange and inbound
connections. For every address whose node is not linked, a dial is attempted
with jittered backoff (fast for a minute after a loss, then exponential). When
two nodes dial each other at once, both keep the connection dialed by the node
with the lower ID, so exactly one link survives on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Self

from meshdesk._lifecycle import AsyncResource, spawn_owned
from meshdesk.config import Timings
from meshdesk.errors import AuthError, ChannelClosed, LinkError, WireError
from meshdesk.identity import NodeId, NodeInfo
from meshdesk.net.channel import Channel, PeerAddress
from meshdesk.net.link import ERR_QUARANTINED, ERR_TWIN, FloodLimits, Link
from meshdesk.net.liveness import Backoff, Quarantine
from meshdesk.net.peers import PeerRecord, PeerState, is_dialable
from meshdesk.wire import Frame, Hello, PeerAddr, PeerExchange

__all__ = ["Connector", "LinkManager", "PeerEvent"]

log = logging.getLogger(__name__)

#: ``connect(host, port, timeout)`` opens a verified channel or raises
#: LinkError (unreachable) / AuthError (peer refused).
Connector = Callable[[str, int, float], Awaitable[Channel]]
FrameHandler = Callable[[Link, Frame], Awaitable[None]]

#: Seconds after a loss during which a peer is redialled at the minimum delay.
FAST_RETRY_WINDOW = 60.0
#: Upper bound of one dial attempt during fast retries (a LAN answers in ms).
FAST_CONNECT_TIMEOUT = 1.5
#: Peer exchange is sent at most this often.
EXCHANGE_INTERVAL = 1.0
#: A link that lasted this long counts as having worked (its loss resets backoff).
STABLE_LINK = 3.0
#: Repeated refusals of the same peer are summarised in the log this often.
REFUSAL_LOG_INTERVAL = 60.0


def _restarted(existing: Link, new: Link) -> bool:
    old_hello, new_hello = existing.peer_hello, new.peer_hello
    return (
        old_hello is not None and new_hello is not None and old_hello.instance != new_hello.instance
    )


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """A change worth telling the operator: linked, down, refused, found."""

    kind: str
    peer: dict[str, object]


@dataclass(slots=True)
class _Target:
    address: PeerAddress
    node_id: str | None
    backoff: Backoff
    next_attempt: float = 0.0
    dialing: bool = False
    is_self: bool = False


class LinkManager(AsyncResource):
    """Keeps one link to every reachable peer of the deployment."""

    def __init__(
        self,
        me: NodeInfo,
        *,
        hello: Hello,
        timings: Timings,
        connect: Connector,
        on_frame: FrameHandler | None = None,
        on_link_up: Callable[[Link], Coroutine[object, object, None]] | None = None,
        peer_exchange: bool = True,
        flood: FloodLimits | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        quarantine: Callable[[], Quarantine] = Quarantine,
    ) -> None:
        self._me = me
        self._my_id = str(me.node_id)
        self._hello = hello
        self._timings = timings
        self._connect = connect
        self._on_frame = on_frame
        self._on_link_up = on_link_up
        #: node id -> why it may not link (revoked); checked before adopting a link.
        self._banned: dict[str, str] = {}
        self._refusal_log: dict[tuple[str, str], tuple[float | None, int]] = {}
        self._peer_exchange = peer_exchange
        self._flood = flood or FloodLimits()
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall_ms = wall_ms
        #: Enrolled peers that sent malformed or forged frames (see Quarantine).
        self._quarantine: dict[str, Quarantine] = {}
        self._new_quarantine = quarantine
        self._peers: dict[str, PeerRecord] = {}
        self._links: dict[str, Link] = {}
        self._targets: dict[tuple[str, int], _Target] = {}
        self._listeners: list[Callable[[PeerEvent], None]] = []
        self._wake = asyncio.Event()
        self._exchange_due = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._adopted_at: dict[int, float] = {}

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._started = True
        self._spawn(self._supervise(), "link supervisor")
        return self

    async def aclose(self) -> None:
        """Say goodbye on every link, stop dialing, wait for every task; idempotent."""
        if self._closed:
            return
        self._closed = True
        links = list(self._links.values())
        await asyncio.gather(*(link.close("node shutting down") for link in links))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        """Run ``coro`` as a task this manager owns; a failure is logged, not fatal.

        One broken dial must never take the whole node down (see ``spawn_owned``).
        """
        if not self._started or self._closed:
            coro.close()
            return
        spawn_owned(self._tasks, coro, name, log)

    def add_listener(self, listener: Callable[[PeerEvent], None]) -> None:
        self._listeners.append(listener)

    # -- inputs ----------------------------------------------------------------------

    def add_address(self, address: PeerAddress, node_id: str | None = None) -> None:
        """Learn a way to reach a peer (``node_id`` None: static, not yet known)."""
        if node_id == self._my_id:
            return
        key = (address.host, address.port)
        target = self._targets.get(key)
        if target is None:
            target = _Target(
                address=address,
                node_id=node_id,
                backoff=Backoff(
                    self._timings.reconnect_min, self._timings.reconnect_max, FAST_RETRY_WINDOW
                ),
            )
            self._targets[key] = target
            self._wake.set()
        elif node_id is not None and target.node_id != node_id:
            target.node_id = node_id
        if node_id is not None:
            record = self._record(node_id)
            if record.learn(address):
                self._exchange_due = True

    def seen(self, node_id: str, info: dict[str, str] | None = None) -> None:
        """A discovery sighting: dial this node's addresses now, whatever the backoff."""
        record = self._record(node_id)
        record.last_seen_ms = self._wall_ms()
        if info:
            record.name = info.get("name", record.name)
            record.site = info.get("site", record.site)
            record.role = info.get("role", record.role)
        for target in self._targets.values():
            if target.node_id == node_id and not target.dialing:
                target.backoff.reset()
                target.next_attempt = 0.0
        self._wake.set()

    def refused(self, fingerprint: str, address: str, reason: str) -> None:
        """An inbound connection was refused (unknown deployment, revoked, ...).

        Logged at once, then at most once a minute per fingerprint and address
        with a count, so a refused node that keeps knocking cannot flood the log.
        """
        key = (fingerprint, address.rsplit(":", 1)[0])
        now = self._clock()
        last, suppressed = self._refusal_log.get(key, (None, 0))
        if last is None or now - last >= REFUSAL_LOG_INTERVAL:
            more = f" ({suppressed} more refusals since)" if suppressed else ""
            log.warning("refused %s from %s: %s%s", fingerprint, address, reason, more)
            self._refusal_log[key] = (now, 0)
        else:
            self._refusal_log[key] = (last, suppressed + 1)
        if NodeId.looks_like(fingerprint):
            try:
                node_id = str(NodeId.parse(fingerprint))
            except ValueError:
                return
            record = self._record(node_id)
            if record.state is not PeerState.LINKED:
                record.state = PeerState.REFUSED
                record.reason = reason
                self._emit("refused", record)

    async def accept(self, channel: Channel) -> None:
        """Serve an inbound, verified channel until its link ends."""
        link = self._new_link(channel, outbound=False)
        try:
            hello = await link.handshake()
        except (LinkError, ChannelClosed, WireError) as exc:
            log.info("inbound from %s failed its hello: %s", channel.remote, exc)
            return
        host = channel.remote.rsplit(":", 1)[0].strip("[]")
        via = PeerAddress(host, hello.listen_port, "inbound")
        if link.peer_id == self._my_id:
            if hello.instance != self._hello.instance:
                await self._refuse_twin(link, via, None)
            else:
                await link.close("that is me")
            return
        if is_dialable(host, hello.listen_port):
            self.add_address(via, link.peer_id)
        if await self._twin_of_live_link(link, via):
            return
        if self._adopt(link, via):
            await self._serve(link)

    def offence(self, peer_id: str, what: str) -> None:
        """An enrolled peer sent something malformed or forged: shut it out a while.

        Its link is cut, and it is neither dialled nor accepted until its quarantine
        ends (growing with each offence, see :class:`Quarantine`). Logged once per
        episode, shown as ``quarantined`` in :meth:`peers`; staff decide on
        revocation.
        """
        quarantine = self._quarantine.get(peer_id)
        if quarantine is None:
            quarantine = self._quarantine[peer_id] = self._new_quarantine()
        now = self._clock()
        seconds, new_episode = quarantine.offence(now)
        record = self._record(peer_id)
        record.state = PeerState.QUARANTINED
        record.offences += 1
        record.reason = f"quarantined for {seconds:g} s after {record.offences} offences: {what}"
        name = record.name or peer_id
        if new_episode:
            log.warning(
                "quarantined %s (%s) for %g s: %s. If it goes on, consider revoking it "
                "(meshdesk deployment revoke %s)",
                name,
                peer_id,
                seconds,
                what,
                peer_id,
            )
        else:
            log.debug("%s (%s) offended again, quarantined %g s: %s", name, peer_id, seconds, what)
        link = self._links.get(peer_id)
        if link is not None:
            refusal = link.refuse(ERR_QUARANTINED, f"quarantined: {what}")
            self._spawn(refusal, f"quarantine {link!r}")
        for target in self._targets.values():
            if target.node_id == peer_id:
                target.next_attempt = max(target.next_attempt, quarantine.until)
        self._emit("quarantined", record)

    def _quarantined(self, peer_id: str) -> bool:
        quarantine = self._quarantine.get(peer_id)
        return quarantine is not None and quarantine.active(self._clock())

    def revoke(self, revoked: Callable[[NodeInfo], bool], reason: str) -> list[str]:
        """Close every link whose peer ``revoked`` matches and refuse it from now on.

        Returns the node ids cut off.
        """
        cut: list[str] = []
        for peer_id, link in list(self._links.items()):
            if revoked(link.channel.peer):
                self._banned[peer_id] = reason
                record = self._record(peer_id)
                record.state, record.reason = PeerState.REFUSED, reason
                log.warning("cutting off %s (%s): %s", record.name, peer_id, reason)
                self._spawn_close(link, reason)
                cut.append(peer_id)
        return cut

    # -- outputs ---------------------------------------------------------------------

    def last_seen(self, node_id: str) -> int | None:
        """Wall-clock ms of the last frame or sighting of a peer (None: never)."""
        record = self._peers.get(node_id)
        return None if record is None else record.last_seen_ms

    def peers(self) -> list[PeerRecord]:
        for node_id, record in self._peers.items():
            if record.state is PeerState.QUARANTINED and not self._quarantined(node_id):
                record.state, record.reason = PeerState.DOWN, "quarantine over"
            link = self._links.get(node_id)
            if link is not None and link.rtt is not None:
                record.rtt_ms = link.rtt * 1000
            if link is not None and link.clock_offset_ms is not None:
                record.clock_offset_ms = link.clock_offset_ms
        return sorted(self._peers.values(), key=lambda r: (r.name, r.node_id))

    def linked(self) -> list[str]:
        return sorted(self._links)

    def links(self) -> list[Link]:
        return list(self._links.values())

    def link(self, node_id: str) -> Link | None:
        """The live link to ``node_id``, if any."""
        return self._links.get(node_id)

    async def broadcast(self, frame: Frame) -> None:
        for link in list(self._links.values()):
            with contextlib.suppress(ChannelClosed):
                await link.send(frame)

    # -- internals -------------------------------------------------------------------

    def _record(self, node_id: str) -> PeerRecord:
        record = self._peers.get(node_id)
        if record is None:
            record = self._peers[node_id] = PeerRecord(node_id=node_id)
        return record

    def _emit(self, kind: str, record: PeerRecord) -> None:
        event = PeerEvent(kind, record.to_json())
        for listener in self._listeners:
            listener(event)

    def _new_link(self, channel: Channel, *, outbound: bool) -> Link:
        return Link(
            channel,
            hello=self._hello,
            outbound=outbound,
            timings=self._timings,
            on_frame=self._dispatch,
            flood=self._flood,
            clock=self._clock,
            wall_ms=self._wall_ms,
        )

    async def _twin_of_live_link(self, link: Link, via: PeerAddress) -> bool:
        """A new run of a linked peer: restarted (its old link is dead), or a copy?

        A node that restarted left a link that no longer answers, and the new one
        replaces it (:meth:`_adopt`). If the old link still answers a ping, two
        machines run the same identity at once (a home copied to a second laptop):
        the newcomer is refused with a clear message and the first one stays linked.
        """
        existing = self._links.get(link.peer_id)
        if existing is None or not _restarted(existing, link):
            return False
        probe = min(max(2 * self._timings.heartbeat_interval, 0.5), self._timings.dead_after)
        if not await existing.answers(probe):
            return False
        await self._refuse_twin(link, via, existing)
        return True

    async def _refuse_twin(self, link: Link, via: PeerAddress, first: Link | None) -> None:
        info = link.channel.peer
        where = "this node" if first is None else f"{first.channel.remote}"
        log.error(
            "two running nodes use the identity of %s (%s): %s and %s. A node's home "
            "must run on one machine only (copied home?). Stop one of them; the "
            "second is refused",
            info.name,
            link.peer_id,
            where,
            link.channel.remote,
        )
        if first is not None:
            record = self._record(link.peer_id)
            record.twin = link.channel.remote
            self._emit("twin", record)
        await link.refuse(
            ERR_TWIN,
            f"node {info.name} ({link.peer_id}) is already running at {where}; the same "
            "home must not run on two machines at once (copied home?): stop one of them",
        )

    def _adopt(self, link: Link, via: PeerAddress) -> bool:
        """Make ``link`` the peer's link unless a preferred one exists (tie-break)."""
        peer_id = link.peer_id
        if self._closed:
            self._spawn_close(link, "node shutting down")
            return False
        if peer_id in self._banned:
            self._spawn_close(link, self._banned[peer_id])
            return False
        if self._quarantined(peer_id):
            log.debug("refused %s: quarantined", link)
            self._spawn(link.refuse(ERR_QUARANTINED, "quarantined"), f"quarantine {link!r}")
            return False
        existing = self._links.get(peer_id)
        if existing is not None and _restarted(existing, link):
            # The peer restarted: the link from its previous run is dead, whatever
            # the tie-break would say, and must not block the new one.
            self._links.pop(peer_id)
            self._spawn_close(existing, "peer restarted")
            existing = None
        if existing is not None:
            keep_outbound = self._my_id < peer_id
            if existing.outbound == keep_outbound or link.outbound != keep_outbound:
                self._spawn_close(link, "duplicate link")
                return False
            self._links.pop(peer_id)
            self._spawn_close(existing, "replaced by the preferred link")
        self._links[peer_id] = link
        self._adopted_at[id(link)] = self._clock()
        info = link.channel.peer
        record = self._record(peer_id)
        record.name, record.site, record.role = info.name, info.site, str(info.role)
        record.state = PeerState.LINKED
        record.reason = None
        record.last_seen_ms = self._wall_ms()
        self._exchange_due = True
        self._wake.set()
        way = "outbound" if link.outbound else "inbound"
        log.info("linked with %s (%s) at %s, %s via %s", info.name, peer_id, via, way, via.source)
        self._emit("linked", record)
        if self._on_link_up is not None:
            self._spawn(self._on_link_up(link), f"link up {link!r}")
        return True

    def _spawn_close(self, link: Link, reason: str) -> None:
        if self._closed:
            # No new tasks while shutting down; aclose() says goodbye on its own.
            return
        self._spawn(link.close(reason), f"close {link!r}")

    async def _serve(self, link: Link) -> None:
        reason = "cancelled"
        try:
            reason = await link.run()
        finally:
            self._ended(link, reason)

    def _ended(self, link: Link, reason: str) -> None:
        """Record that ``link`` ended; runs even when its task was cancelled."""
        peer_id = link.peer_id
        adopted_at = self._adopted_at.pop(id(link), None)
        log.debug("%r ended: %s", link, reason)
        if self._links.get(peer_id) is not link:
            return  # a duplicate that lost the tie-break, or replaced
        del self._links[peer_id]
        record = self._record(peer_id)
        if peer_id in self._banned:
            record.state, record.reason = PeerState.REFUSED, self._banned[peer_id]
            self._emit("refused", record)
            return
        if link.misbehaved is not None and not self._closed:
            self.offence(peer_id, link.misbehaved)
            return
        if link.peer_error is not None and link.peer_error[0] == ERR_TWIN:
            # The peer refuses us because another machine runs our identity.
            log.error("%s (%s) refuses this node: %s", record.name, peer_id, link.peer_error[1])
            record.state, record.reason = PeerState.REFUSED, link.peer_error[1]
            self._emit("refused", record)
            for target in self._targets.values():
                if target.node_id == peer_id and not target.dialing:
                    target.next_attempt = self._clock() + self._timings.reconnect_max
            return
        record.state = PeerState.DOWN
        record.reason = reason
        self._emit("down", record)
        if self._closed:
            return
        log.warning("link with %s (%s) down: %s", record.name, peer_id, reason)
        now = self._clock()
        stable = adopted_at is not None and now - adopted_at >= STABLE_LINK
        for target in self._targets.values():
            if target.node_id != peer_id or target.dialing:
                continue
            if stable:
                # A link that held is lost: dial again at once, then fast retries.
                target.backoff.reset()
                target.next_attempt = now
            else:
                # Linked and dropped at once (a peer that keeps refusing us):
                # back off instead of reconnecting in a tight loop.
                target.next_attempt = now + target.backoff.failed(now, self._rng)
        self._wake.set()

    async def _dispatch(self, link: Link, frame: Frame) -> None:
        record = self._peers.get(link.peer_id)
        if record is not None:
            record.last_seen_ms = self._wall_ms()
        if isinstance(frame, PeerExchange):
            self._take_exchange(link, frame)
        elif self._on_frame is not None:
            await self._on_frame(link, frame)
        else:
            log.debug("no handler for %s from %s", type(frame).__name__, link)

    def _take_exchange(self, link: Link, frame: PeerExchange) -> None:
        if not self._peer_exchange:
            return
        for entry in frame.peers:
            try:
                node_id = str(NodeId.parse(entry.node_id))
            except ValueError:
                log.info("%s sent a peer entry with a bad node id; ignored", link)
                continue
            if node_id == self._my_id or not is_dialable(entry.host, entry.port):
                continue
            self.add_address(PeerAddress(entry.host, entry.port, "exchange"), node_id)

    def _exchange_frame(self, recipient: str) -> PeerExchange:
        entries: list[PeerAddr] = []
        for node_id in self._links:
            if node_id == recipient:
                continue
            record = self._peers[node_id]
            for host, port in record.addresses:
                if is_dialable(host, port):
                    via = record.best_source(host, port)
                    entries.append(PeerAddr(node_id=node_id, host=host, port=port, via=via))
        return PeerExchange(peers=tuple(entries[:256]))

    async def _send_exchange(self) -> None:
        for peer_id, link in list(self._links.items()):
            with contextlib.suppress(ChannelClosed):
                await link.send(self._exchange_frame(peer_id))

    async def _supervise(self) -> None:
        next_exchange = 0.0
        while not self._closed:
            self._wake.clear()
            now = self._clock()
            wait = 1.0
            for target in self._targets.values():
                if target.is_self or target.dialing:
                    continue
                if target.node_id is not None and target.node_id in self._links:
                    continue
                if target.next_attempt <= now:
                    target.dialing = True
                    self._spawn(self._dial(target), f"dial {target.address}")
                else:
                    wait = min(wait, target.next_attempt - now)
            if self._peer_exchange and self._exchange_due:
                if now >= next_exchange:
                    self._exchange_due = False
                    next_exchange = now + EXCHANGE_INTERVAL
                    await self._send_exchange()
                else:
                    wait = min(wait, next_exchange - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._wake.wait()

    def _retry_later(self, target: _Target, *, refused: bool = False) -> None:
        now = self._clock()
        if refused:
            target.next_attempt = now + target.backoff.refused(self._rng)
        else:
            target.next_attempt = now + target.backoff.failed(now, self._rng)
        target.dialing = False
        self._wake.set()

    async def _dial(self, target: _Target) -> None:
        address = target.address
        if target.node_id is not None:
            record = self._record(target.node_id)
            if record.state is PeerState.DOWN:
                record.state = PeerState.CONNECTING
        fast = target.backoff.since is None or (
            self._clock() - target.backoff.since < FAST_RETRY_WINDOW
        )
        timeout = self._timings.connect_timeout
        if fast:
            timeout = min(timeout, FAST_CONNECT_TIMEOUT)
        try:
            channel = await self._connect(address.host, address.port, timeout)
        except AuthError as exc:
            log.warning("refused peer at %s: %s", address, exc)
            if target.node_id is not None:
                record = self._record(target.node_id)
                record.state, record.reason = PeerState.REFUSED, str(exc)
                self._emit("refused", record)
            self._retry_later(target, refused=True)
            return
        except LinkError as exc:
            log.debug("dial %s failed: %s", address, exc)
            if target.node_id is not None:
                record = self._record(target.node_id)
                if record.state is PeerState.CONNECTING:
                    record.state, record.reason = PeerState.DOWN, str(exc)
            self._retry_later(target)
            return
        link = self._new_link(channel, outbound=True)
        try:
            await link.handshake()
        except ChannelClosed as exc:
            # Hung up before its hello: with TLS 1.3 this is how a peer that does
            # not accept our certificate (e.g. we are revoked) answers.
            log.info("%s closed the link before its hello: %s", address, exc)
            self._retry_later(target, refused=True)
            return
        except (LinkError, WireError) as exc:
            log.info("hello with %s failed: %s", address, exc)
            self._retry_later(target)
            return
        peer_id = link.peer_id
        hello = link.peer_hello
        if peer_id == self._my_id:
            target.dialing = False
            if hello is not None and hello.instance != self._hello.instance:
                await self._refuse_twin(link, address, None)
                self._retry_later(target, refused=True)
                return
            log.info("%s is this node itself; not dialling it again", address)
            target.is_self = True
            await link.close("that is me")
            return
        if target.node_id != peer_id:
            target.node_id = peer_id
        self.add_address(address, peer_id)
        target.dialing = False
        if await self._twin_of_live_link(link, address):
            self._retry_later(target, refused=True)
            return
        if self._adopt(link, address):
            await self._serve(link)
