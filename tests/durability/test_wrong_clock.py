"""A real ``meshdesk run`` whose clock fell 400 days back (``faketime``) still works.

Unlike the in-process test (tests/integration/test_clocks.py), nothing here is
injected: the process's own clock is wrong for OpenSSL's handshake, the kit check at
start-up and the records it stamps. It must start, link with HQ, record a case that
reaches HQ, and say that its clock is wrong.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from meshdesk import admin, control
from meshdesk.config import Timings, load_config
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.node import Node

pytestmark = pytest.mark.durability

NOW = dt.datetime.now(dt.UTC)
DAY_MS = 86_400_000
AsyncWaitUntil = Callable[..., Awaitable[None]]


def _require_faketime() -> None:
    if shutil.which("faketime") is not None:
        return
    message = "faketime is missing (apt-get install faketime, or run .ci/run)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} — CI must run the durability tier", pytrace=False)
    pytest.skip(message)


async def test_a_process_400_days_in_the_past_starts_links_and_records(
    tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    _require_faketime()
    hq = NodeHome(tmp_path / "hq")
    await admin.create_deployment(
        hq, deployment="時計市", node_name="本部", site="市役所", departments=(), now=NOW
    )
    kit = tmp_path / "c4.kit"
    await admin.issue_kit(
        hq, name="c4", site="第四小学校", role=Role.CENTER, departments=(),
        out=kit, passphrase=None, now=NOW,
    )  # fmt: skip
    shelter = NodeHome(tmp_path / "c4")
    await admin.provision(shelter, kit_path=kit, passphrase=None, expect_deployment=None, now=NOW)
    fast = Timings(heartbeat_interval=0.2, dead_after=2.0, connect_timeout=2.0, reconnect_min=0.1)
    config = replace(load_config(hq.config_path), timings=fast).with_overrides(
        listen="127.0.0.1:0", static_peers=[], mdns=False
    )
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
