"""A full disk: one clear error, nothing half written, and the node carries on.

The shelter's store sits on a tiny tmpfs made for the test, filled to the last byte.
A new case is refused with one line that says the disk is full; nothing of it is
stored; the node still answers reads and sends its own records to HQ; records HQ
sends are deferred, not refused; and when space is freed, both work again by
themselves, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from loopback import hq_and_centre, loopback_config
from tiers import require

from meshdesk import control
from meshdesk.cases.model import Personal
from meshdesk.errors import StoreFull
from meshdesk.node import Node

pytestmark = pytest.mark.durability

AsyncWaitUntil = Callable[..., Awaitable[None]]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own (root only)."""
    require(
        ["a tiny filesystem needs root (mount -t tmpfs)"] if os.geteuid() else [], tier="durability"
    )
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(disk: Path) -> Path:
    """Write zeros until the disk refuses one more byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 * 1024, 4096, 512, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while os.write(fd, bytes(size)):
                    pass
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="No space left") as full:
        (disk / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


async def _case(node: Node, name: str) -> str:
    state = await node.cases.open_case(
        op="佐藤", category="supplies", urgency="normal", personal=Personal(name=name)
    )
    return state.id


async def test_a_full_disk_refuses_writes_clearly_and_recovers_by_itself(
    tmp_path: Path,
    tiny_disk: Path,
    async_wait_until: AsyncWaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="meshdesk")
    hq, shelter = await hq_and_centre(tmp_path, deployment="満杯市")
    on_tiny = tiny_disk / "store.db"
    on_tiny.write_bytes(shelter.store_path.read_bytes())
    shelter.store_path.unlink()
    shelter.store_path.symlink_to(on_tiny)

    async with Node(hq, loopback_config(hq, [])) as hq_node:
        from_hq = {await _case(hq_node, f"本部 {i}") for i in range(5)}
        to_hq = f"127.0.0.1:{hq_node.listener.port}"
        # The shelter writes 3 cases offline, then its disk fills up.
        async with Node(shelter, loopback_config(shelter, [])) as node:
            ours = {await _case(node, f"避難所 {i}") for i in range(3)}
        async with Node(shelter, loopback_config(shelter, [to_hq])) as node:
            filler = await asyncio.to_thread(_fill, tiny_disk)
            before = await node.store.counts()
            with pytest.raises(StoreFull, match=r"disk holding .* is full: nothing was saved"):
                await _case(node, "満杯")
            # Nothing half written; reads and status still work.
            assert await node.store.counts() == before
            assert set(await node.store.case_ids()) >= ours
            assert (await control.call(node.home.control_socket, "status"))["store"][
                "cases"
            ] == before.cases

            # Outbound sync goes on: HQ receives the shelter's cases.
            async def hq_has_ours() -> bool:
                return ours <= set(await hq_node.store.case_ids())

            await async_wait_until(hq_has_ours, 15)
            # What HQ sends cannot be stored now: deferred, never refused.
            await async_wait_until(lambda: "until space returns" in _said(caplog), 15)

            # Space returns: the node stores HQ's cases and takes new ones by itself.
            await asyncio.to_thread(filler.unlink)

            async def has_hqs() -> bool:
                return from_hq <= set(await node.store.case_ids())

            await async_wait_until(has_hqs, 30)
            assert await _case(node, "空きあり")
    assert "refused" not in _said(caplog)
    db = sqlite3.connect(on_tiny)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def _said(caplog: pytest.LogCaptureFixture) -> str:
    return " ".join(r.getMessage() for r in caplog.records)
