"""Whole nodes in one process over TLS on loopback (mDNS off, static peers)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from waits import AsyncWaitUntil

from meshdesk import admin, control
from meshdesk.config import Config, Timings, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.ops import OPS

NOW = dt.datetime.now(dt.UTC)
FAST = Timings(heartbeat_interval=0.2, dead_after=1.0, connect_timeout=2.0, reconnect_min=0.1)


def peers(node: Node) -> list[dict[str, object]]:
    """What the ``peers`` operation answers."""
    return [record.to_json() for record in node.manager.peers()]


@dataclass
class Mesh:
    root: Path
    homes: dict[str, NodeHome]
    nodes: dict[str, Node]

    def linked(self, name: str) -> set[str]:
        return {p["name"] for p in peers(self.nodes[name]) if p["state"] == "linked"}


def config(home: NodeHome, peers: list[str]) -> Config:
    base = replace(load_config(home.config_path), timings=FAST)
    return base.with_overrides(
        listen="127.0.0.1:0",
        static_peers=peers,
        mdns=False,
        web_listen="127.0.0.1:0",
        web_redirect="127.0.0.1:0",
    )


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    specs = [
        HomeSpec("本部", Role.HQ, "市役所", folder="hq"),
        HomeSpec("shelter", Role.CENTER, "s"),
        HomeSpec("welfare", Role.DESK, "s", ("福祉課",)),
    ]
    homes = dict((await build_deployment(tmp_path, "テスト市", specs, now=NOW)).homes)
    hq = homes["本部"]
    async with AsyncExitStack() as stack:
        nodes = {"本部": await stack.enter_async_context(Node(hq, config(hq, [])))}
        hq_port = nodes["本部"].listener.port
        for name in ("shelter", "welfare"):
            node = Node(homes[name], config(homes[name], [f"127.0.0.1:{hq_port}"]))
            nodes[name] = await stack.enter_async_context(node)
        yield Mesh(tmp_path, homes, nodes)


async def test_nodes_link_through_one_static_peer(
    mesh: Mesh, async_wait_until: AsyncWaitUntil
) -> None:
    await async_wait_until(lambda: mesh.linked("本部") == {"shelter", "welfare"}, 10)
    await async_wait_until(lambda: mesh.linked("shelter") == {"本部", "welfare"}, 10)
    found = {p["name"]: p["found_by"] for p in peers(mesh.nodes["shelter"])}
    assert "exchange" in found["welfare"] or "inbound" in found["welfare"]


async def test_directory_spreads_to_every_node(
    mesh: Mesh, async_wait_until: AsyncWaitUntil
) -> None:
    async def names(node: str) -> set[str]:
        return {i.name for i in await mesh.nodes[node].directory.nodes()}

    async def complete() -> bool:
        return await names("shelter") == {"本部", "shelter", "welfare"}

    await async_wait_until(complete, 10)
    infos = {i.name: i for i in await mesh.nodes["shelter"].directory.nodes()}
    assert infos["welfare"].departments == ("福祉課",)
    assert infos["welfare"].sealing_key is not None


async def test_bad_certificates_change_nothing(mesh: Mesh) -> None:
    node = mesh.nodes["shelter"]
    # Gossip may still be filling the directory meanwhile: assert what garbage did
    # (nothing taken) and that only this deployment's nodes are in it.
    garbage = (b"garbage", b"\x30\x03\x02\x01\x01")
    assert await node.directory.take_certificates(garbage, source=None) == 0
    assert {i.name for i in await node.directory.nodes()} <= {"本部", "shelter", "welfare"}


async def test_revocation_reaches_the_running_mesh(
    mesh: Mesh, async_wait_until: AsyncWaitUntil
) -> None:
    await async_wait_until(lambda: mesh.linked("welfare") == {"本部", "shelter"}, 10)
    await admin.revoke_node(mesh.homes["本部"], "shelter", reason="lost", now=NOW)
    result = await control.call(mesh.homes["本部"].control_socket, "reload_revocations")
    assert result == {"adopted": True, "number": 1}
    await async_wait_until(lambda: "shelter" not in mesh.linked("welfare"), 5)
    await async_wait_until(lambda: "shelter" not in mesh.linked("本部"), 5)
    states = {p["name"]: p["state"] for p in peers(mesh.nodes["welfare"])}
    assert states["shelter"] in ("refused", "down", "connecting")


async def test_control_socket_answers_status(mesh: Mesh, async_wait_until: AsyncWaitUntil) -> None:
    await async_wait_until(lambda: len(mesh.linked("本部")) == 2, 10)
    status = await control.call(mesh.homes["本部"].control_socket, "status")
    assert status["name"] == "本部"
    assert status["running"] is True
    assert status["peers_linked"] == 2


async def test_a_new_case_reaches_linked_peers_by_itself(
    mesh: Mesh, async_wait_until: AsyncWaitUntil
) -> None:
    await async_wait_until(lambda: len(mesh.linked("shelter")) == 2, 10)
    created = await control.call(
        mesh.homes["shelter"].control_socket,
        "case_new",
        {
            "operator": "佐藤",
            "category": "welfare_eldercare",
            "urgency": "immediate",
            "name": "山田 花子",
            "summary": "薬が足りない",
            "consent": ["福祉課"],
        },
    )
    case_id = created["id"]

    async def arrived(name: str) -> bool:
        return case_id in await mesh.nodes[name].store.case_ids()

    await async_wait_until(lambda: arrived("本部"), 10)
    await async_wait_until(lambda: arrived("welfare"), 10)
    for name in ("本部", "welfare"):
        view = await control.call(mesh.homes[name].control_socket, "case_show", {"id": case_id})
        assert view["readable"], name
        assert view["name"] == "山田 花子"
        assert view["notes"][0]["text"] == "薬が足りない"
    # An edit at HQ flows back to the origin the same way.
    await control.call(
        mesh.homes["本部"].control_socket,
        "case_status",
        {"id": case_id, "operator": "鈴木", "status": "in_progress"},
    )

    async def in_progress() -> bool:
        state = await mesh.nodes["shelter"].cases.state(case_id)
        return str(state.status) == "in_progress"

    await async_wait_until(in_progress, 10)


async def test_events_and_sync_progress_reach_control_clients(
    mesh: Mesh, async_wait_until: AsyncWaitUntil
) -> None:
    await async_wait_until(lambda: len(mesh.linked("本部")) == 2, 10)
    hq_sock = mesh.homes["本部"].control_socket
    async with control.subscribe(hq_sock, ["case", "sync"]) as events:
        created = await control.call(
            mesh.homes["shelter"].control_socket,
            "case_new",
            {"operator": "佐藤", "name": "田中", "category": "housing", "urgency": "high"},
        )
        seen: dict[str, object] = {}
        async with asyncio.timeout(10):
            async for event in events:
                if event.kind == "case" and created["id"] in event.data["case_ids"]:
                    seen["case"] = event.data["source"]
                if event.kind == "sync":
                    seen["sync"] = event.data["peers"]
                if "case" in seen and "sync" in seen:
                    break
    assert seen["case"] == "sync"  # HQ got it from the shelter, not from its own edit
    progress = await control.call(hq_sock, "sync")
    assert {p["name"] for p in progress} == {"shelter", "welfare"}
    shelter = next(p for p in progress if p["name"] == "shelter")
    assert shelter["received_events"] >= 1
    assert shelter["last_exchange_ms"] is not None
    assert shelter["inbox"] == 0


async def test_digest_op_tells_equal_stores_from_unequal_ones(
    mesh: Mesh, async_wait_until: AsyncWaitUntil
) -> None:
    await async_wait_until(lambda: len(mesh.linked("shelter")) == 2, 10)
    socks = {name: home.control_socket for name, home in mesh.homes.items()}

    async def digests() -> dict[str, dict[str, object]]:
        return {name: await control.call(sock, "digest") for name, sock in socks.items()}

    empty = await digests()
    assert {d["events"] for d in empty.values()} == {0}
    assert len({d["digest"] for d in empty.values()}) == 1
    args = {"operator": "佐藤", "category": "supplies", "urgency": "high", "name": "田中 一郎"}
    await control.call(socks["shelter"], "case_new", args)
    # Right after the write only the shelter holds it: its digest differs.
    after = await digests()
    assert after["shelter"]["events"] > 0
    assert after["shelter"]["digest"] != empty["shelter"]["digest"]
    shelter_id = (await control.call(socks["shelter"], "status"))["node_id"]
    ((chain, head),) = after["shelter"]["heads"].items()  # one chain: this run's
    assert chain.startswith(f"{shelter_id}/")
    assert head == after["shelter"]["events"]

    async def converged() -> bool:
        now = await digests()
        return len({d["digest"] for d in now.values()}) == 1

    await async_wait_until(converged, 10)


async def test_the_node_serves_every_registered_operation(mesh: Mesh) -> None:
    node = mesh.nodes["本部"]
    streaming = [spec.name for spec in OPS if spec.streams]
    assert streaming == ["subscribe"]  # served by the control socket from the bus
    assert sorted(node.serve_ops().handled() + streaming) == OPS.names()
    sock = mesh.homes["本部"].control_socket
    with pytest.raises(MeshdeskError, match="unknown argument 'id' for status"):
        await control.call(sock, "status", {"id": "x"})
    with pytest.raises(MeshdeskError, match=r"^unknown operation 'case' \(known: announce_ack, "):
        await control.call(sock, "case", {"op": "list", "args": {}})
    # A call op refuses a bad argument before the call manager sees it.
    with pytest.raises(MeshdeskError, match=r"^audio_only must be true or false$"):
        await control.call(sock, "call_start", {"peer": "shelter", "audio_only": "yes"})
    assert await control.call(sock, "calls") == []
