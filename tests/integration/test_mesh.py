"""The link manager over in-memory channels: tie-break, exchange, loss, revocation."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from waits import AsyncWaitUntil

from meshdesk.config import Timings
from meshdesk.errors import LinkError
from meshdesk.identity import CertificateAuthority, NodeInfo, Role, verify_node_cert
from meshdesk.net.channel import Channel, PeerAddress
from meshdesk.net.link import PROTOCOL_VERSION
from meshdesk.net.memory import MemoryPair, memory_pair
from meshdesk.net.mesh import LinkManager, PeerEvent
from meshdesk.wire import Hello

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
FAST = Timings(
    heartbeat_interval=0.05,
    dead_after=0.3,
    connect_timeout=1.0,
    reconnect_min=0.05,
    reconnect_max=0.4,
)


def make_info(ca: CertificateAuthority, name: str) -> NodeInfo:
    key = Ed25519PrivateKey.generate()
    cert = ca.issue(key.public_key(), name=name, site="s", role=Role.CENTER, now=NOW)
    return verify_node_cert(cert, ca.cert, now=NOW)


@dataclass
class Net:
    """A switchboard: addresses to managers, with cables that can be pulled."""

    nodes: dict[str, LinkManager] = field(default_factory=dict)
    infos: dict[str, NodeInfo] = field(default_factory=dict)
    pairs: list[tuple[str, str, MemoryPair]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    events: list[tuple[str, PeerEvent]] = field(default_factory=list)

    def addr(self, name: str) -> str:
        """Each node gets an IP literal, as peer exchange only gossips those."""
        return f"10.99.0.{list(self.infos).index(name) + 10}"

    def connector(self, me: str) -> Callable[[str, int, float], Awaitable[Channel]]:
        async def connect(host: str, port: int, wait: float) -> Channel:
            names = {self.addr(n): n for n in self.nodes}
            to = names.get(host)
            if to is None or to in self.down or me in self.down:
                raise LinkError(f"{host}:{port} unreachable")
            remotes = (f"{host}:{port}", f"{self.addr(me)}:40000")
            pair = memory_pair(self.infos[me], self.infos[to], remotes=remotes)
            self.pairs.append((me, to, pair))
            mine, theirs = pair
            task = asyncio.create_task(self.nodes[to].accept(theirs))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return mine

        return connect

    def cut(self, name: str) -> None:
        self.down.add(name)
        for a, b, pair in self.pairs:
            if name in (a, b):
                pair.cut()

    def restore(self, name: str) -> None:
        self.down.discard(name)
        for a, b, pair in self.pairs:
            if name in (a, b) and pair.is_cut:
                pair.restore()

    def linked(self, name: str) -> list[str]:
        names = {str(info.node_id): n for n, info in self.infos.items()}
        return sorted(names[node_id] for node_id in self.nodes[name].linked())

    def state(self, name: str, of: str) -> str:
        target = str(self.infos[of].node_id)
        for record in self.nodes[name].peers():
            if record.node_id == target:
                return str(record.state)
        return "unknown"


@pytest.fixture
async def net(ca: CertificateAuthority) -> AsyncIterator[Callable[..., Awaitable[Net]]]:
    async with AsyncExitStack() as stack:
        built: list[Net] = []

        async def build(*names: str, instance: int = 1) -> Net:
            network = built[0] if built else Net()
            if not built:
                built.append(network)
            for name in names:
                info = make_info(ca, name)
                network.infos[name] = info
                hello = Hello(
                    proto=PROTOCOL_VERSION,
                    node_id=str(info.node_id),
                    name=name,
                    site="s",
                    role="center",
                    listen_port=7420,
                    features=(),
                    instance=instance,
                )
                manager = LinkManager(
                    info,
                    hello=hello,
                    timings=FAST,
                    connect=network.connector(name),
                    rng=random.Random(name),
                )
                manager.add_listener(lambda e, n=name: network.events.append((n, e)))
                network.nodes[name] = await stack.enter_async_context(manager)
            return network

        yield build
        for network in built:
            for task in network.tasks:
                task.cancel()
            await asyncio.gather(*network.tasks, return_exceptions=True)


def dial(network: Net, frm: str, to: str, source: str = "static") -> None:
    network.nodes[frm].add_address(PeerAddress(network.addr(to), 7420, source), None)


async def test_simultaneous_dials_leave_exactly_one_link(
    net: Callable[..., Awaitable[Net]], async_wait_until: AsyncWaitUntil
) -> None:
    network = await net("a", "b")
    dial(network, "a", "b")
    dial(network, "b", "a")
    await async_wait_until(lambda: network.linked("a") == ["b"] and network.linked("b") == ["a"], 3)
    await asyncio.sleep(FAST.dead_after * 2)  # duplicates are closed, nothing flaps
    assert network.linked("a") == ["b"]
    assert network.linked("b") == ["a"]
    ups = [n for n, e in network.events if e.kind == "linked"]
    downs = [n for n, e in network.events if e.kind == "down"]
    assert downs == []
    assert ups.count("a") <= 2
    assert ups.count("b") <= 2


async def test_peer_exchange_links_nodes_that_only_know_one_peer(
    net: Callable[..., Awaitable[Net]], async_wait_until: AsyncWaitUntil
) -> None:
    network = await net("hub", "left", "right")
    dial(network, "left", "hub")
    dial(network, "right", "hub")
    await async_wait_until(lambda: network.linked("hub") == ["left", "right"], 3)
    await async_wait_until(lambda: network.linked("left") == ["hub", "right"], 3)
    await async_wait_until(lambda: network.linked("right") == ["hub", "left"], 3)


async def test_a_cut_link_is_noticed_and_restored(
    net: Callable[..., Awaitable[Net]], async_wait_until: AsyncWaitUntil
) -> None:
    network = await net("a", "b")
    dial(network, "a", "b")
    await async_wait_until(lambda: network.linked("a") == ["b"], 3)
    network.cut("b")
    await async_wait_until(lambda: network.linked("a") == [], 2)
    assert network.state("a", "b") in ("down", "connecting")
    network.restore("b")
    await async_wait_until(lambda: network.linked("a") == ["b"], 2)


async def test_revoked_peer_is_cut_off_and_stays_refused(
    net: Callable[..., Awaitable[Net]], async_wait_until: AsyncWaitUntil
) -> None:
    network = await net("a", "b")
    dial(network, "a", "b")
    await async_wait_until(lambda: network.linked("a") == ["b"], 3)
    bad = network.infos["b"].serial
    cut = network.nodes["a"].revoke(lambda info: info.serial == bad, "revoked (list #1)")
    assert cut == [str(network.infos["b"].node_id)]
    await async_wait_until(lambda: network.linked("a") == [], 2)
    await asyncio.sleep(FAST.reconnect_max * 2)  # b keeps dialling; a keeps refusing
    assert network.linked("a") == []
    assert network.state("a", "b") == "refused"


async def test_restarted_peer_replaces_its_stale_link(
    net: Callable[..., Awaitable[Net]], async_wait_until: AsyncWaitUntil, ca: CertificateAuthority
) -> None:
    network = await net("a", "b")
    dial(network, "b", "a")
    await async_wait_until(lambda: network.linked("a") == ["b"], 3)
    # "b" vanishes without a goodbye and comes back at once as a new process (same
    # identity, new instance) before "a" could notice the old link is dead.
    old_b = network.nodes.pop("b")
    for _, _, pair in network.pairs:
        pair.cut()
    await old_b.aclose()  # the old process is gone: its goodbye is lost on the cut pair
    info = network.infos["b"]
    hello = Hello(
        proto=PROTOCOL_VERSION,
        node_id=str(info.node_id),
        name="b",
        site="s",
        role="center",
        listen_port=7420,
        features=(),
        instance=2,
    )
    async with LinkManager(info, hello=hello, timings=FAST, connect=network.connector("b")) as b2:
        network.nodes["b"] = b2
        b2.add_address(PeerAddress(network.addr("a"), 7420, "static"))
        await async_wait_until(lambda: network.linked("b") == ["a"], 1)
        await async_wait_until(lambda: network.linked("a") == ["b"], 1)
        await asyncio.sleep(FAST.dead_after * 2)  # the old link dies; the new one stays
        assert network.linked("a") == ["b"]


async def test_malformed_hello_is_refused_and_the_node_keeps_serving(
    net: Callable[..., Awaitable[Net]], async_wait_until: AsyncWaitUntil, ca: CertificateAuthority
) -> None:
    network = await net("a", "b")
    # A channel whose peer claims another node id in its hello than its certificate.
    liar = make_info(ca, "liar")
    mine, theirs = memory_pair(liar, network.infos["a"])
    serving = asyncio.create_task(network.nodes["a"].accept(theirs))
    await mine.send(
        Hello(
            proto=PROTOCOL_VERSION,
            node_id=str(network.infos["b"].node_id),
            name="liar",
            site="s",
            role="center",
            listen_port=1,
            features=(),
        )
    )
    await asyncio.wait_for(serving, 2)
    assert network.linked("a") == []
    dial(network, "b", "a")
    await async_wait_until(lambda: network.linked("a") == ["b"], 3)
