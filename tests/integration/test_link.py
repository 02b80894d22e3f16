"""One link over an in-memory channel: hello rules, liveness, flood limits."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from waits import AsyncWaitUntil

from meshdesk.config import Timings
from meshdesk.errors import ChannelClosed, LinkError
from meshdesk.identity import CertificateAuthority, NodeInfo, Role, verify_node_cert
from meshdesk.net.link import PROTOCOL_VERSION, FloodLimits, Link
from meshdesk.net.memory import MemoryChannel, memory_pair
from meshdesk.wire import Frame, Hello, PeerExchange, Ping

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
FAST = Timings(heartbeat_interval=0.05, dead_after=0.3, connect_timeout=1.0)


def info(ca: CertificateAuthority, name: str) -> NodeInfo:
    key = Ed25519PrivateKey.generate()
    cert = ca.issue(key.public_key(), name=name, site="s", role=Role.DESK, now=NOW)
    return verify_node_cert(cert, ca.cert, now=NOW)


def hello(node: NodeInfo, **changes: object) -> Hello:
    fields: dict[str, object] = {
        "proto": PROTOCOL_VERSION,
        "node_id": str(node.node_id),
        "name": node.name,
        "site": node.site,
        "role": str(node.role),
        "listen_port": 7420,
        "features": (),
    }
    fields.update(changes)
    return Hello(**fields)  # type: ignore[arg-type]


async def nothing(link: Link, frame: Frame) -> None:
    return None


def make_link(channel: MemoryChannel, me: NodeInfo, **kw: object) -> Link:
    return Link(channel, hello=hello(me), outbound=True, timings=FAST, on_frame=nothing, **kw)  # type: ignore[arg-type]


async def test_hello_exchange_and_frames_reach_the_handler(
    ca: CertificateAuthority, async_wait_until: AsyncWaitUntil
) -> None:
    a, b = info(ca, "a"), info(ca, "b")
    ca_side, cb_side = memory_pair(a, b)
    got: list[Frame] = []

    async def collect(link: Link, frame: Frame) -> None:
        got.append(frame)

    la = Link(ca_side, hello=hello(a), outbound=True, timings=FAST, on_frame=collect)
    lb = make_link(cb_side, b)
    peer_hellos = await asyncio.gather(la.handshake(), lb.handshake())
    assert peer_hellos[0].name == "b"
    run_a = asyncio.create_task(la.run())
    run_b = asyncio.create_task(lb.run())
    await lb.send(PeerExchange(peers=()))
    await async_wait_until(lambda: got, 5, message="the frame reached the handler")
    await async_wait_until(lambda: la.rtt is not None, 5, message="a ping was answered")
    assert got == [PeerExchange(peers=())]
    await lb.close("test over")
    assert await asyncio.wait_for(run_a, 2) == "peer said goodbye: test over"
    assert await asyncio.wait_for(run_b, 2) == "test over"


async def test_hello_naming_another_node_is_refused(ca: CertificateAuthority) -> None:
    a, b, other = info(ca, "a"), info(ca, "b"), info(ca, "other")
    ca_side, cb_side = memory_pair(a, b)
    la = make_link(ca_side, a)
    liar = Link(cb_side, hello=hello(other), outbound=False, timings=FAST, on_frame=nothing)
    results = await asyncio.gather(la.handshake(), liar.handshake(), return_exceptions=True)
    assert isinstance(results[0], LinkError)
    assert "claims" in str(results[0])


async def test_wrong_protocol_version_is_refused(ca: CertificateAuthority) -> None:
    a, b = info(ca, "a"), info(ca, "b")
    ca_side, cb_side = memory_pair(a, b)
    la = make_link(ca_side, a)
    future = Link(cb_side, hello=hello(b, proto=99), outbound=False, timings=FAST, on_frame=nothing)
    results = await asyncio.gather(la.handshake(), future.handshake(), return_exceptions=True)
    assert isinstance(results[0], LinkError)
    assert "protocol 99" in str(results[0])


async def test_silent_peer_is_declared_dead(ca: CertificateAuthority) -> None:
    a, b = info(ca, "a"), info(ca, "b")
    pair = memory_pair(a, b)
    la, lb = make_link(pair[0], a), make_link(pair[1], b)
    await asyncio.gather(la.handshake(), lb.handshake())
    run_a = asyncio.create_task(la.run())
    run_b = asyncio.create_task(lb.run())
    pair.cut()  # no FIN, nothing arrives any more: a pulled cable
    reason = await asyncio.wait_for(run_a, 2)
    assert "dead link" in reason
    await asyncio.wait_for(run_b, 2)
    assert pair[0].closed


async def test_flooding_peer_is_cut_off(ca: CertificateAuthority) -> None:
    a, b = info(ca, "a"), info(ca, "b")
    ca_side, cb_side = memory_pair(a, b)
    la = make_link(ca_side, a, flood=FloodLimits(rate=100.0, burst=50.0))
    await asyncio.gather(la.handshake(), cb_side.send(hello(b)), cb_side.recv())
    run_a = asyncio.create_task(la.run())
    with contextlib.suppress(ChannelClosed):  # a bounded burst far over the limit
        for nonce in range(1000):
            await cb_side.send(Ping(nonce=nonce, sent_ms=0))
            await asyncio.sleep(0)
    assert "flooding" in await asyncio.wait_for(run_a, 2)
    assert ca_side.closed


async def test_second_hello_is_a_protocol_error(ca: CertificateAuthority) -> None:
    a, b = info(ca, "a"), info(ca, "b")
    ca_side, cb_side = memory_pair(a, b)
    la = make_link(ca_side, a)
    await asyncio.gather(la.handshake(), cb_side.send(hello(b)), cb_side.recv())
    run_a = asyncio.create_task(la.run())
    await cb_side.send(hello(b))
    assert "second hello" in await asyncio.wait_for(run_a, 2)
