"""TLS links on 127.0.0.1: mutual TLS 1.3, trust checks, and hostile clients.

What a refused client sees (TLS 1.3 finishes the client's handshake before the
server judges the client's certificate): ``connect`` returns a channel, and the
refusal shows on its first ``recv`` as ChannelClosed. The server reports the
refusal through ``on_refused``; the fingerprint is "-" when OpenSSL rejected the
certificate (it does not reveal it), the node ID when TrustPolicy did.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from waits import AsyncWaitUntil

from meshdesk._fs import write_private
from meshdesk.errors import AuthError, ChannelClosed, KitError, LinkError, WireError
from meshdesk.identity import CertificateAuthority, NodeKit, RevocationList, Role
from meshdesk.net.tls import (
    TlsChannel,
    TlsListener,
    client_context,
    connect,
    serve,
    server_context,
)
from meshdesk.net.trust import TrustPolicy
from meshdesk.wire import Frame, Goodbye, Hello, PeerAddr, PeerExchange, Ping

HOST = "127.0.0.1"
HANDSHAKE_TIMEOUT = 0.5


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)  # OpenSSL checks validity against the real clock too


@dataclass(frozen=True)
class Node:
    kit: NodeKit
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class World:
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Node
    client: Node
    revoked: Node
    foreign: Node  # issued by other_ca
    foreign_server: Node  # issued by other_ca
    crl: RevocationList


def _make_node(ca: CertificateAuthority, folder: Path, name: str, role: Role) -> Node:
    now = clock()
    key = Ed25519PrivateKey.generate()
    cert = ca.issue(key.public_key(), name=name, site="中央区", role=role, now=now)
    kit = NodeKit.assemble(key, cert, ca.cert, now=now)
    folder.mkdir(mode=0o700)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(folder / "node.key", key_pem)
    (folder / "node.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Node(kit, folder / "node.crt", folder / "node.key")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority.create("デモ市", now=clock())
    other_ca = CertificateAuthority.create("別の町", now=clock())
    revoked = _make_node(ca, root / "revoked", "紛失したノートPC", Role.DESK)
    return World(
        ca=ca,
        other_ca=other_ca,
        server=_make_node(ca, root / "server", "市役所本部", Role.HQ),
        client=_make_node(ca, root / "client", "第一小学校", Role.CENTER),
        revoked=revoked,
        foreign=_make_node(other_ca, root / "foreign", "よその避難所", Role.CENTER),
        foreign_server=_make_node(other_ca, root / "foreign-server", "よその本部", Role.HQ),
        crl=RevocationList.build(
            ca, [(revoked.kit.cert.serial_number, clock())], number=1, now=clock()
        ),
    )


@dataclass
class Recorder:
    """An echo server's view: channels handed over, refusals, how handlers ended."""

    channels: list[TlsChannel] = field(default_factory=list)
    received: list[Frame] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    ended: list[Exception] = field(default_factory=list)

    async def on_channel(self, channel: TlsChannel) -> None:
        self.channels.append(channel)
        try:
            while True:
                frame = await channel.recv()
                self.received.append(frame)
                await channel.send(frame)
        except (ChannelClosed, WireError) as exc:
            self.ended.append(exc)

    def on_refused(self, fingerprint: str, address: str, reason: str) -> None:
        self.refused.append((fingerprint, address, reason))


@dataclass
class Served:
    listener: TlsListener
    rec: Recorder

    @property
    def port(self) -> int:
        return self.listener.port


async def _serve(world: World, node: Node, trust: TrustPolicy) -> Served:
    rec = Recorder()
    listener = await serve(
        HOST,
        0,
        cert_path=node.cert_path,
        key_path=node.key_path,
        trust=trust,
        now=clock,
        on_channel=rec.on_channel,
        on_refused=rec.on_refused,
        handshake_timeout=HANDSHAKE_TIMEOUT,
        close_timeout=0.5,
    )
    return Served(listener, rec)


@pytest.fixture
async def server(world: World) -> AsyncIterator[Served]:
    served = await _serve(world, world.server, TrustPolicy(world.ca.cert, world.crl))
    try:
        yield served
    finally:
        await served.listener.aclose()


async def dial(
    world: World,
    port: int,
    node: Node | None = None,
    *,
    trust: TrustPolicy | None = None,
    within: float = 5.0,
) -> TlsChannel:
    node = node or world.client
    return await connect(
        HOST,
        port,
        cert_path=node.cert_path,
        key_path=node.key_path,
        ca_cert=world.ca.cert,
        trust=trust or TrustPolicy(world.ca.cert),
        now=clock,
        timeout=within,
        close_timeout=0.5,
    )


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    async with asyncio.timeout(5.0):
        while chunk := await reader.read(65536):
            data += chunk
    return bytes(data)


async def _close_raw(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()
    await asyncio.sleep(0)


def _hello(name: str) -> Hello:
    return Hello(
        proto=1,
        node_id="MFZWI3D-BONSGYC-YLTMRWG-C43ENR5",
        name=name,
        site="大町",
        role="center",
        listen_port=7443,
        features=("sync", "通話"),
    )


# -- contexts -----------------------------------------------------------------------


def test_contexts_are_mutual_tls13_without_hostnames(world: World) -> None:
    node = world.server
    for make in (server_context, client_context):
        ctx = make(node.kit, cert_path=node.cert_path, key_path=node.key_path)
        assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode is ssl.CERT_REQUIRED
        assert ctx.check_hostname is False


def test_context_refuses_files_of_another_node(world: World) -> None:
    with pytest.raises(KitError, match="is not the certificate of node"):
        server_context(
            world.server.kit,
            cert_path=world.client.cert_path,
            key_path=world.client.key_path,
        )
    with pytest.raises(KitError, match="cannot load"):
        client_context(
            world.server.kit,
            cert_path=world.server.cert_path,
            key_path=world.client.key_path,  # the wrong key
        )


# -- the good path ------------------------------------------------------------------


async def test_mutual_tls_round_trip_and_peers_on_both_sides(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    async with await dial(world, server.port) as channel:
        assert channel.peer == world.server.kit.info
        assert channel.remote == f"{HOST}:{server.port}"
        assert channel.peer_cert_der == world.server.kit.cert.public_bytes(
            serialization.Encoding.DER
        )
        frames: list[Frame] = [
            _hello("第一小学校 避難所"),
            Ping(nonce=7, sent_ms=123),
            PeerExchange(peers=(PeerAddr("MFZWI3D-BONSGYC", "127.0.0.1", 7443, "mdns"),)),
            Goodbye(reason="本日の受付は終了しました"),
        ]
        for frame in frames:
            await channel.send(frame)
        assert [await channel.recv() for _ in frames] == frames
        await async_wait_until(lambda: len(server.rec.channels) == 1, timeout=5)
        inbound = server.rec.channels[0]
        assert inbound.peer == world.client.kit.info
        assert inbound.peer_cert_der == world.client.kit.cert.public_bytes(
            serialization.Encoding.DER
        )
        assert inbound.remote.startswith(f"{HOST}:")
        assert server.rec.received == frames
    assert server.rec.refused == []


async def test_concurrent_sends_do_not_interleave(world: World, server: Served) -> None:
    # Large frames (up to ~60 KB) so that writes outrun the socket and drain waits.
    def frame(n: int) -> Goodbye:
        return Goodbye(reason=f"{n:03d}" + "あ" * (n % 40) * 6)

    def big(n: int) -> Hello:
        return _hello(f"{n:03d}" + "避" * 40)

    sent: list[Frame] = [frame(n) if n % 2 else big(n) for n in range(100)]
    async with await dial(world, server.port) as channel:

        async def collect() -> list[Frame]:
            return [await channel.recv() for _ in sent]

        async with asyncio.TaskGroup() as tg:
            echoed = tg.create_task(collect())
            for f in sent:
                tg.create_task(channel.send(f))
        got = echoed.result()
    assert sorted(map(repr, got)) == sorted(map(repr, sent))
    assert sorted(map(repr, server.rec.received)) == sorted(map(repr, sent))


async def test_concurrent_large_sends_stay_whole(world: World, server: Served) -> None:
    sent = [
        PeerExchange(
            peers=tuple(
                PeerAddr(f"{n:03d}-{i:03d}", "127.0.0.1", i, "exchange") for i in range(256)
            )
        )
        for n in range(100)
    ]
    async with await dial(world, server.port) as channel:

        async def collect() -> list[Frame]:
            return [await channel.recv() for _ in sent]

        async with asyncio.TaskGroup() as tg:
            echoed = tg.create_task(collect())
            for f in sent:
                tg.create_task(channel.send(f))
    assert sorted(map(repr, echoed.result())) == sorted(map(repr, sent))


# -- refusals -----------------------------------------------------------------------


async def test_a_client_of_another_deployment_is_refused(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    # It trusts our CA (so its own handshake completes) but presents a foreign cert.
    channel = await dial(world, server.port, world.foreign)
    try:
        with pytest.raises(
            ChannelClosed, match=r"refused our certificate|may not trust our certificate"
        ):
            await channel.recv()
    finally:
        await channel.aclose()
    await async_wait_until(lambda: bool(server.rec.refused), timeout=5)
    fingerprint, address, reason = server.rec.refused[0]
    assert fingerprint == "-"  # OpenSSL rejected it before we could see it
    assert address.startswith(f"{HOST}:")
    assert "not of this deployment" in reason
    assert server.rec.channels == []


async def test_a_server_of_another_deployment_is_refused_by_the_client(
    world: World, async_wait_until: AsyncWaitUntil
) -> None:
    foreign = await _serve(world, world.foreign_server, TrustPolicy(world.other_ca.cert))
    try:
        with pytest.raises(AuthError, match=f"{HOST}:{foreign.port}.*not of this deployment"):
            await dial(world, foreign.port)
        await async_wait_until(lambda: bool(foreign.rec.refused), timeout=5)
        assert foreign.rec.refused[0][0] == "-"
        assert "handshake" in foreign.rec.refused[0][2]  # an alert or a reset
        assert foreign.rec.channels == []
    finally:
        await foreign.listener.aclose()


async def test_a_revoked_client_is_refused_by_the_server(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    channel = await dial(world, server.port, world.revoked)
    try:
        with pytest.raises(ChannelClosed, match="before sending anything"):
            await channel.recv()
        assert channel.closed
    finally:
        await channel.aclose()
    await async_wait_until(lambda: bool(server.rec.refused), timeout=5)
    fingerprint, _, reason = server.rec.refused[0]
    assert fingerprint == str(world.revoked.kit.node_id)
    assert "revoked" in reason
    assert server.rec.channels == []


async def test_a_revoked_server_is_refused_by_the_client(world: World) -> None:
    revoked = await _serve(world, world.revoked, TrustPolicy(world.ca.cert))
    try:
        with pytest.raises(AuthError, match="revoked") as err:
            await dial(world, revoked.port, trust=TrustPolicy(world.ca.cert, world.crl))
        assert str(world.revoked.kit.node_id) in str(err.value)
        assert f"{HOST}:{revoked.port}" in str(err.value)
    finally:
        await revoked.listener.aclose()


async def test_plain_tcp_garbage_is_refused_and_others_are_served(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        await writer.drain()
        await _read_to_eof(reader)  # the server hangs up
    finally:
        await _close_raw(writer)
    await async_wait_until(lambda: bool(server.rec.refused), timeout=5)
    assert server.rec.refused[0][0] == "-"
    assert "TLS handshake failed" in server.rec.refused[0][2]
    async with await dial(world, server.port) as channel:
        await channel.send(Ping(nonce=1, sent_ms=1))
        assert await channel.recv() == Ping(nonce=1, sent_ms=1)


async def test_a_silent_client_is_dropped_and_blocks_no_one(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        # While the silent one holds its connection, a good client is served.
        async with await dial(world, server.port) as channel:
            await channel.send(Ping(nonce=2, sent_ms=2))
            assert await channel.recv() == Ping(nonce=2, sent_ms=2)
        assert server.rec.refused == []
        assert await _read_to_eof(reader) == b""  # dropped after the handshake timeout
    finally:
        await _close_raw(writer)
    await async_wait_until(lambda: bool(server.rec.refused), timeout=5)
    assert server.rec.refused[0][0] == "-"
    assert f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s" in server.rec.refused[0][2]


async def test_an_oversized_frame_is_a_wire_error_and_closes(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    ctx = client_context(
        world.client.kit,
        cert_path=world.client.cert_path,
        key_path=world.client.key_path,
    )
    reader, writer = await asyncio.open_connection(HOST, server.port, ssl=ctx)
    try:
        writer.write(struct.pack(">I", 2 * 1024 * 1024) + b"\x00" * 1024)
        await writer.drain()
        # The server drops the connection: EOF or a reset.
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            assert await _read_to_eof(reader) == b""
    finally:
        await _close_raw(writer)
    await async_wait_until(lambda: bool(server.rec.ended), timeout=5)
    assert isinstance(server.rec.ended[0], WireError)
    assert "exceeds" in str(server.rec.ended[0])
    assert server.rec.channels[0].closed
    with pytest.raises(ChannelClosed):
        await server.rec.channels[0].recv()


# -- closing ------------------------------------------------------------------------


async def test_peer_hang_up_is_channel_closed(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    channel = await dial(world, server.port)
    try:
        await channel.send(Ping(nonce=3, sent_ms=3))
        assert await channel.recv() == Ping(nonce=3, sent_ms=3)
        await async_wait_until(lambda: len(server.rec.channels) == 1, timeout=5)
        await server.rec.channels[0].aclose()  # the server side hangs up
        with pytest.raises(ChannelClosed, match="closed the link"):
            await channel.recv()
        assert channel.closed
        with pytest.raises(ChannelClosed):
            await channel.send(Ping(nonce=4, sent_ms=4))
    finally:
        await channel.aclose()


async def test_client_hang_up_ends_the_server_handler(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    channel = await dial(world, server.port)
    await channel.send(Ping(nonce=5, sent_ms=5))
    assert await channel.recv() == Ping(nonce=5, sent_ms=5)
    await channel.aclose()
    await async_wait_until(lambda: bool(server.rec.ended), timeout=5)
    assert isinstance(server.rec.ended[0], ChannelClosed)
    await async_wait_until(lambda: not server.listener.channels, timeout=5)


async def test_an_abrupt_reset_is_channel_closed(
    world: World, server: Served, async_wait_until: AsyncWaitUntil
) -> None:
    channel = await dial(world, server.port)
    await channel.send(Ping(nonce=6, sent_ms=6))
    assert await channel.recv() == Ping(nonce=6, sent_ms=6)
    channel._writer.transport.abort()  # a crash, not a close
    await async_wait_until(lambda: bool(server.rec.ended), timeout=5)
    assert isinstance(server.rec.ended[0], ChannelClosed)
    await channel.aclose()


async def test_aclose_is_idempotent_and_wakes_a_pending_recv(world: World, server: Served) -> None:
    channel = await dial(world, server.port)
    pending = asyncio.ensure_future(channel.recv())
    await asyncio.sleep(0)  # a yield: the recv starts and waits for data
    assert not pending.done()
    await asyncio.gather(channel.aclose(), channel.aclose())
    await channel.aclose()
    assert channel.closed
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(pending, 2.0)
    with pytest.raises(ChannelClosed):
        await channel.send(Ping(nonce=7, sent_ms=7))
    with pytest.raises(ChannelClosed):
        await channel.recv()


async def test_closing_the_listener_closes_its_links(world: World) -> None:
    served = await _serve(world, world.server, TrustPolicy(world.ca.cert))
    port = served.port
    channel = await dial(world, port)
    try:
        await channel.send(Ping(nonce=8, sent_ms=8))
        assert await channel.recv() == Ping(nonce=8, sent_ms=8)
        await served.listener.aclose()
        await served.listener.aclose()  # idempotent
        with pytest.raises(ChannelClosed):
            await channel.recv()
        assert served.rec.channels[0].closed
        assert not served.listener.channels
    finally:
        await channel.aclose()
    with pytest.raises(LinkError, match="refused the connection"):
        await dial(world, port)


# -- dialling failures --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def test_nothing_listening_is_a_link_error(world: World) -> None:
    with pytest.raises(LinkError, match="refused the connection"):
        await dial(world, _free_port())


async def test_a_server_that_never_answers_times_out(world: World) -> None:
    writers: list[asyncio.StreamWriter] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accept TCP, never speak TLS

    mute = await asyncio.start_server(accept, HOST, 0)
    try:
        port = mute.sockets[0].getsockname()[1]
        with pytest.raises(LinkError, match=r"within 0\.3 s"):
            await dial(world, port, within=0.3)
    finally:
        mute.close()
        for writer in writers:
            writer.transport.abort()
        await mute.wait_closed()
        await asyncio.sleep(0)
