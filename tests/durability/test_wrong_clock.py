"""A real ``meshdesk run`` whose clock fell 400 days back (``faketime``) still works.

Unlike the in-process test (tests/integration/test_clocks.py), nothing here is
injected: the process's own clock is wrong for OpenSSL's handshake, the kit check at
start-up and the records it stamps. It must start, link with HQ, record a case that
reaches HQ, and say that its clock is wrong.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from loopback import hq_and_centre, loopback_config
from tiers import require

from meshdesk import control
from meshdesk.node import Node

pytestmark = pytest.mark.durability

DAY_MS = 86_400_000
AsyncWaitUntil = Callable[..., Awaitable[None]]


def _require_faketime() -> None:
    missing = shutil.which("faketime") is None
    require(
        ["faketime is missing (apt-get install faketime, or run .ci/run)"] if missing else [],
        tier="durability",
    )


async def test_a_process_400_days_in_the_past_starts_links_and_records(
    tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    _require_faketime()
    hq, shelter = await hq_and_centre(tmp_path, deployment="時計市", centre="c4", site="第四小学校")
    config = loopback_config(hq, [])
    env = {**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    async with Node(hq, config) as hq_node:
        log = (tmp_path / "c4.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            "faketime", "-f", "-400d", sys.executable, "-m", "meshdesk", "run",
            "--home", str(shelter.path), "--listen", "127.0.0.1:0", "--no-mdns",
            "--peer", f"127.0.0.1:{hq_node.listener.port}",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            sock = shelter.control_socket

            async def status() -> Any:
                assert proc.returncode is None, (tmp_path / "c4.log").read_text()
                return await control.try_call(sock, "status")

            await async_wait_until(status, 30, message="c4 never answered")

            async def warned() -> bool:
                clock = (await status())["clock"]
                return clock["warning"] is not None and clock["skew_ms"] < -399 * DAY_MS

            await async_wait_until(warned, 30, message="c4 never warned about its clock")
            args = {"operator": "佐藤", "category": "supplies", "urgency": "high", "name": "田中"}
            case = await control.call(sock, "case_new", args)

            async def at_hq() -> bool:
                return case["id"] in set(await hq_node.store.case_ids())

            await async_wait_until(at_hq, 30, message="the case never reached HQ")
            peer = next(p for p in hq_node.manager.peers() if p.name == "c4")
            assert peer.clock_offset_ms < -399 * DAY_MS
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            log.close()
