"""An enrolled node that sends malformed frames is quarantined, not reconnected forever.

The hostile peer has a valid certificate (a stolen or broken laptop, not yet revoked):
it links, then sends garbage. Each time its link is cut and it is shut out for a
while that grows with every offence; the node logs it once per episode and shows it
as ``quarantined``; when the quarantine is over it may link again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshdesk.config import Timings
from meshdesk.errors import ChannelClosed, LinkError
from meshdesk.identity import CertificateAuthority, NodeInfo, Role, verify_node_cert
from meshdesk.net.channel import Channel
from meshdesk.net.link import ERR_QUARANTINED, PROTOCOL_VERSION
from meshdesk.net.liveness import Quarantine
from meshdesk.net.memory import MemoryChannel, memory_pair
from meshdesk.net.mesh import LinkManager
from meshdesk.wire import ErrorFrame, Hello

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
FAST = Timings(heartbeat_interval=0.05, dead_after=0.5, connect_timeout=1.0, reconnect_min=0.05)


def _info(ca: CertificateAuthority, name: str) -> NodeInfo:
    key = Ed25519PrivateKey.generate()
    cert = ca.issue(key.public_key(), name=name, site="s", role=Role.CENTER, now=NOW)
    return verify_node_cert(cert, ca.cert, now=NOW)


def _hello(info: NodeInfo, instance: int = 1) -> Hello:
    return Hello(
        proto=PROTOCOL_VERSION, node_id=str(info.node_id), name=info.name, site="s",
        role="center", listen_port=7420, features=(), instance=instance,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("隔離テスト", now=NOW)


@pytest.fixture
async def hq(ca: CertificateAuthority) -> AsyncIterator[tuple[LinkManager, NodeInfo]]:
    info = _info(ca, "本部")

    async def nowhere(host: str, port: int, wait: float) -> Channel:
        raise LinkError("no dialling in this test")

    async with LinkManager(
        info,
        hello=_hello(info),
        timings=FAST,
        connect=nowhere,
        quarantine=lambda: Quarantine(first=0.3, maximum=2.0, forgive_after=30.0),
    ) as manager:
        yield manager, info


async def _knock(
    manager: LinkManager, me: NodeInfo, them: NodeInfo, *, garbage: bool, wait: bool = True
) -> ErrorFrame | None:
    """Link as ``me`` (hello), send garbage if asked, and return the ErrorFrame that
    ends the link (None if the link ended without one, or ``wait`` is False)."""
    mine, theirs = memory_pair(me, them)
    serving = asyncio.create_task(manager.accept(theirs))
    assert isinstance(mine, MemoryChannel)
    await mine.send(_hello(me))
    assert isinstance(await mine.recv(), Hello)
    if garbage:
        mine.send_bytes(b"\x93\x01\xff\x90")  # not a frame of any kind
    refusal = None
    with contextlib.suppress(ChannelClosed, TimeoutError):
        async with asyncio.timeout(2 if wait else 0.2):
            while refusal is None:
                frame = await mine.recv()
                refusal = frame if isinstance(frame, ErrorFrame) else None
    await mine.aclose()
    await asyncio.wait_for(serving, 2)
    return refusal


def _record(manager: LinkManager, info: NodeInfo) -> dict[str, object]:
    return next(p.to_json() for p in manager.peers() if p.node_id == str(info.node_id))


async def test_a_peer_sending_malformed_frames_is_quarantined_with_growing_back_off(
    hq: tuple[LinkManager, NodeInfo],
    ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshdesk.net.mesh")
    manager, me = hq
    rogue = _info(ca, "盗難PC")

    await _knock(manager, rogue, me, garbage=True, wait=False)
    record = _record(manager, rogue)
    assert record["state"] == "quarantined"
    assert "malformed frame" in str(record["reason"])
    assert record["offences"] == 1

    # At once again: refused before anything else, with a reason it can log.
    answer = await _knock(manager, rogue, me, garbage=False)
    assert answer is not None
    assert answer.code == ERR_QUARANTINED
    assert manager.linked() == []

    # After the quarantine it may link, offends again, and is kept out longer.
    await asyncio.sleep(0.35)  # the first quarantine lasts 0.3 s
    await _knock(manager, rogue, me, garbage=True, wait=False)
    record = _record(manager, rogue)
    assert record["offences"] == 2
    assert "for 0.6 s" in str(record["reason"])

    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    warnings = [r for r in loud if "quarantined" in r.getMessage()]
    assert len(warnings) == 1  # once per episode, not once per offence
    assert "deployment revoke" in warnings[0].getMessage()


async def test_an_honest_peer_is_not_quarantined(
    hq: tuple[LinkManager, NodeInfo], ca: CertificateAuthority
) -> None:
    manager, me = hq
    honest = _info(ca, "避難所")
    assert await _knock(manager, honest, me, garbage=False, wait=False) is None
    assert _record(manager, honest)["state"] != "quarantined"
    assert _record(manager, honest)["offences"] == 0
