"""Chains never fork: a node that lost its tail gets it back and loses nothing new.

A home restored from an older backup (or a disk that lied at a power cut) holds
fewer of its own events than its peers do. It must never sign a different event at a
sequence number it already used (the peers would refuse it as a fork, and the mesh
would split for good): each run of a node writes a chain of its own
(:mod:`meshdesk.cases.chain`), and the lost tail comes back from the peers.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from loopback import hq_and_centre, loopback_config

from meshdesk.cases.chain import author_node
from meshdesk.cases.model import Personal
from meshdesk.home import NodeHome
from meshdesk.node import Node

AsyncWaitUntil = Callable[..., Awaitable[None]]


async def _homes(root: Path) -> tuple[NodeHome, NodeHome]:
    return await hq_and_centre(root, deployment="復元市")


async def _open_cases(node: Node, count: int, label: str) -> set[str]:
    ids = set()
    for i in range(count):
        state = await node.cases.open_case(
            op="佐藤", category="supplies", urgency="normal",
            personal=Personal(name=f"{label} {i}"),
        )  # fmt: skip
        ids.add(state.id)
    return ids


async def _case_ids(node: Node) -> set[str]:
    return set(await node.store.case_ids())


async def test_a_node_restored_from_a_backup_gets_its_tail_back_without_a_fork(
    tmp_path: Path, async_wait_until: AsyncWaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    hq, shelter = await _homes(tmp_path)
    backup = tmp_path / "shelter-store-yesterday.db"
    shutil.copyfile(shelter.store_path, backup)  # the shelter's store before any case

    # Day 1: the shelter records 20 cases, and they reach HQ.
    async with Node(hq, loopback_config(hq, [])) as hq_node:
        peer = f"127.0.0.1:{hq_node.listener.port}"
        async with Node(shelter, loopback_config(shelter, [peer])) as node:
            day_one = await _open_cases(node, 20, "初日")
            await async_wait_until(lambda: _has(hq_node, day_one), 15)
        hq_port = hq_node.listener.port

        # The shelter's laptop comes back from yesterday's backup: its 20 cases are gone.
        _restore(backup, shelter.store_path)

        caplog.clear()
        # Offline, it records 5 more, then the link to HQ returns.
        async with Node(shelter, loopback_config(shelter, [])) as node:
            assert await _case_ids(node) == set()
            day_two = await _open_cases(node, 5, "二日目")
        async with Node(shelter, loopback_config(shelter, [f"127.0.0.1:{hq_port}"])) as node:
            everything = day_one | day_two
            await async_wait_until(lambda: _has(hq_node, everything), 15)
            await async_wait_until(lambda: _has(node, everything), 15)
            assert await _case_ids(node) == everything == await _case_ids(hq_node)
            # Both stores hold the same events, the shelter's lost chain included.
            assert await node.store.heads() == await hq_node.store.heads()
            shelter_chains = [
                a for a in await node.store.heads() if author_node(a) == str(node.kit.node_id)
            ]
            assert len(shelter_chains) == 2  # day one's (returned by HQ) and day two's

    said = [r.getMessage() for r in caplog.records]
    assert [m for m in said if "refused" in m or "fork" in m] == []


def _restore(backup: Path, store: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, store)


async def _has(node: Node, ids: set[str]) -> bool:
    return ids <= await _case_ids(node)


async def test_every_run_of_a_node_writes_a_chain_of_its_own(tmp_path: Path) -> None:
    hq, _ = await _homes(tmp_path)
    for _ in range(2):
        async with Node(hq, loopback_config(hq, [])) as node:
            await _open_cases(node, 2, "相談")
    async with Node(hq, loopback_config(hq, [])) as node:
        heads = await node.store.heads()
    assert len(heads) == 2
    assert {author_node(a) for a in heads} == {str(node.kit.node_id)}
    assert all(seq == 2 for seq, _ in heads.values())  # each chain starts at seq 1


async def test_a_home_copied_to_a_second_machine_is_refused_while_the_first_runs(
    tmp_path: Path, async_wait_until: AsyncWaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    hq, shelter = await _homes(tmp_path)
    async with Node(hq, loopback_config(hq, [])) as hq_node:
        to_hq = f"127.0.0.1:{hq_node.listener.port}"
        async with Node(shelter, loopback_config(shelter, [to_hq])) as first:
            shelter_id = str(first.kit.node_id)
            await async_wait_until(lambda: _state(hq_node, shelter_id) == "linked", 10)
            copy = NodeHome(tmp_path / "copied")
            await asyncio.to_thread(
                shutil.copytree,
                shelter.path,
                copy.path,
                ignore=shutil.ignore_patterns("control.sock"),  # a socket is no file
            )
            to_first = f"127.0.0.1:{first.listener.port}"
            async with Node(copy, loopback_config(copy, [to_hq, to_first])) as second:
                await async_wait_until(lambda: _refused_by(second, hq_node), 10)
                said = " ".join(r.getMessage() for r in caplog.records)
                assert "copied home" in said
                # HQ keeps the first one linked and names the copy's address.
                record = next(p for p in hq_node.manager.peers() if p.node_id == shelter_id)
                assert record.state == "linked"
                assert record.twin is not None
                # The first one refuses its copy too, and never links to it.
                await async_wait_until(lambda: "two running nodes" in _log(caplog), 10)
                assert first.manager.link(shelter_id) is None
            assert _state(hq_node, shelter_id) == "linked"


def _state(node: Node, node_id: str) -> str | None:
    return next(
        (str(p.state) for p in node.manager.peers() if p.node_id == node_id),
        None,
    )


def _refused_by(node: Node, other: Node) -> bool:
    record = next(
        (p for p in node.manager.peers() if p.node_id == str(other.kit.node_id)),
        None,
    )
    return record is not None and record.state == "refused"


def _log(caplog: pytest.LogCaptureFixture) -> str:
    return " ".join(r.getMessage() for r in caplog.records)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshdesk")
