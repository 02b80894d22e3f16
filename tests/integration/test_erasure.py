"""Erasure across every replica: four whole nodes over TLS on the loopback.

A citizen's case is opened at a shelter and read by a consented department; HQ erases
it while one node is still offline. After sync no node shows the citizen, every chain
still verifies, the offline node erases on its first link, HQ counts the receipts,
and no node's ``store.db`` or ``-wal`` holds the name, the ciphertext or a wrapped key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from loopback import loopback_config
from waits import AsyncWaitUntil

from meshdesk import control
from meshdesk.cases.chain import checkpoint_message, event_hash
from meshdesk.cases.events import is_redacted
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.store import ZERO_HASH

NAME = "山田 花子"
NOTE = "薬が足りない (insulin)"


@dataclass
class City:
    homes: dict[str, NodeHome]
    stack: AsyncExitStack
    nodes: dict[str, Node] = field(default_factory=dict)

    async def start(self, name: str, peers: list[str]) -> Node:
        home = self.homes[name]
        node = await self.stack.enter_async_context(Node(home, loopback_config(home, peers)))
        self.nodes[name] = node
        return node

    async def call(self, name: str, op: str, args: dict[str, Any]) -> Any:
        return await control.call(self.homes[name].control_socket, op, args)


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[City]:
    specs = [
        HomeSpec("本部", Role.HQ, "市役所", folder="hq"),
        HomeSpec("shelter", Role.CENTER, "第一小学校"),
        HomeSpec("welfare", Role.DESK, "市役所", ("福祉課",)),
        HomeSpec("late", Role.CENTER, "第二小学校"),
    ]
    deployment = await build_deployment(tmp_path, "テスト市", specs, now=dt.datetime.now(dt.UTC))
    async with AsyncExitStack() as stack:
        yield City(dict(deployment.homes), stack)


def _secrets(blobs: list[bytes]) -> list[bytes]:
    """What must vanish: each sealed blob, its ciphertext and every wrapped key."""
    out = []
    for blob in blobs:
        sealed = msgpack.unpackb(blob, raw=False)
        out += [blob, sealed["c"], *(wrapped for _, wrapped in sealed["k"].values())]
    return out


async def _chains_verify(node: Node) -> int:
    """Every stored chain recomputed from its bodies (a redacted body names its hash)
    and every checkpoint's signature checked; returns how many events."""
    count = 0
    for author, (head_seq, _) in (await node.store.heads()).items():
        events = await node.store.events_after(author, 0, head_seq)
        prev = ZERO_HASH
        hashes = {}
        for e in events:
            assert e.prev_hash == prev, (author, e.seq)
            digest = e.body[1:] if is_redacted(e.body) else event_hash(
                author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash
            )  # fmt: skip
            assert digest == e.hash, (author, e.seq)
            prev = hashes[e.seq] = digest
        key = await node.directory.author_key(author)
        assert key is not None
        for checkpoint in await node.store.checkpoints(author):
            assert hashes[checkpoint.seq] == checkpoint.hash
            key.verify(checkpoint.sig, checkpoint_message(author, checkpoint.seq, checkpoint.hash))
        count += len(events)
    return count


async def test_an_erasure_reaches_every_replica_and_leaves_no_bytes(
    city: City, async_wait_until: AsyncWaitUntil
) -> None:
    hq = await city.start("本部", [])
    hq_addr = [f"127.0.0.1:{hq.listener.port}"]
    for name in ("shelter", "welfare"):
        await city.start(name, hq_addr)
    created = await city.call(
        "shelter",
        "case_new",
        {"operator": "佐藤", "category": "medical", "urgency": "high", "name": NAME,
         "phone": "090-1234-5678", "summary": NOTE, "consent": ["福祉課"]},
    )  # fmt: skip
    case_id = created["id"]

    async def readable(name: str) -> bool:
        if case_id not in await city.nodes[name].store.case_ids():
            return False
        view = await city.call(name, "case_show", {"id": case_id})
        return bool(view["name"] == NAME and view["notes"] and view["notes"][0]["text"] == NOTE)

    for name in ("本部", "welfare"):
        await async_wait_until(lambda name=name: readable(name), 15)
    stored = await city.nodes["shelter"].store.events_for_case(case_id)
    secrets = [NAME.encode(), NOTE.encode(), *_secrets([b for e in stored for b in e.payloads])]
    assert len(secrets) >= 2 + 2 * 3  # two blobs, each with a ciphertext and wrapped keys

    def leaks(home: NodeHome, wanted: list[bytes] = secrets) -> list[str]:
        found = []
        for suffix in ("", "-wal"):
            path = home.store_path.with_name(home.store_path.name + suffix)
            data = path.read_bytes() if path.exists() else b""
            found += [f"{path.name}: {s[:12]!r}" for s in wanted if s in data]
        return found

    # Before: the sealed bytes are on disk (the check below can fail).
    assert any(leaks(city.homes[n], secrets[2:]) for n in ("本部", "shelter", "welfare"))

    # A department desk is neither HQ nor the origin: refused, nothing written.
    with pytest.raises(MeshdeskError, match="only an HQ node or the case's origin"):
        await city.call(
            "welfare", "case_erase", {"id": case_id, "operator": "田中", "reason": "test"}
        )

    erased = await city.call(
        "本部", "case_erase", {"id": case_id, "operator": "本部 鈴木", "reason": "本人の申出"}
    )
    assert erased["readable"] is False
    assert erased.get("name") is None
    assert erased["erasure"]["here"] is True
    assert "waiting for" in erased["erasure"]["line"]

    async def status() -> dict[str, Any]:
        view = await city.call("本部", "case_show", {"id": case_id})
        return dict(view["erasure"])

    async def erased_on(n: int) -> bool:
        return bool((await status())["erased"] == n)

    await async_wait_until(lambda: erased_on(3), 15)
    line = (await status())["line"]
    assert line.startswith("erased on 3 of 4 nodes; waiting for: late (last seen never)"), line

    # The node that was offline erases on its first link, and its receipt comes back.
    await city.start("late", hq_addr)
    await async_wait_until(lambda: erased_on(4), 15)
    assert (await status())["line"] == "erased on 4 of 4 nodes"

    for name, node in city.nodes.items():
        view = await city.call(name, "case_show", {"id": case_id})
        assert view["readable"] is False, name
        assert view.get("name") is None, name
        assert all(n["text"] is None for n in view["notes"]), name
        assert node.cases.steward.is_erased(case_id), name
        assert await _chains_verify(node) > 0, name
        trail = await city.call(name, "case_history", {"id": case_id})
        actions = [row["action"] for row in trail["events"]]
        assert actions[:2] == ["opened", "note added"], name
        assert actions.count("erasure applied") == 4, name
        found = [row for row in trail["events"] if row["action"] == "erased"]
        assert [(r["name"], r["op"], r["detail"]) for r in found] == [
            ("本部", "本部 鈴木", "本人の申出")
        ]
    digests = {name: (await node.store.event_hashes()) for name, node in city.nodes.items()}
    assert len({tuple(d) for d in digests.values()}) == 1  # the same events everywhere

    # While the nodes run (the WAL is live) and after they stop.
    for name in city.nodes:
        assert leaks(city.homes[name]) == [], name
    await city.stack.aclose()
    for name in city.nodes:
        assert leaks(city.homes[name]) == [], name
