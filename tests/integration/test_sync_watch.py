"""A node joining an HQ catches up while ``meshdesk sync --watch`` shows its progress,
and the HQ keeps answering case operations meanwhile."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from loopback import hq_and_centre, loopback_config
from waits import AsyncWaitUntil

from meshdesk import control
from meshdesk.bench._fill import fill_cases
from meshdesk.cli import main
from meshdesk.cli._sync import Progress
from meshdesk.node import Node

CASES = 1500


def test_progress_lines_rate_eta_and_caught_up() -> None:
    progress = Progress(window_s=10)
    peer = {"node_id": "N", "name": "本部", "site": "市役所", "inbox": 3000, "outbox": 0,
            "received_events": 0, "sent_events": 0, "idle": False}  # fmt: skip
    assert progress.lines([peer], 0.0) == [
        "本部 @ 市役所: received 0, sent 0; 3,000 to go (3,000 to receive, 0 to send)"
    ]
    later = {**peer, "inbox": 1000, "received_events": 2000}
    assert progress.lines([later], 2.0) == [
        "本部 @ 市役所: received 2,000, sent 0; 1,000 to go (1,000 to receive, 0 to send),"
        " about 1 s left; 1,000 events/s"
    ]
    done = {**later, "inbox": 0, "received_events": 3000, "idle": True}
    assert progress.lines([done], 3.0)[0].endswith("caught up")
    assert Progress.caught_up([done])
    assert not Progress.caught_up([later])
    assert not Progress.caught_up([])
    assert "comparing" in progress.lines([{**peer, "outbox": None}], 4.0)[0]


async def test_a_joining_node_shows_progress_and_hq_keeps_answering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], async_wait_until: AsyncWaitUntil
) -> None:
    hq, centre = await hq_and_centre(tmp_path, deployment="大船渡市")
    await fill_cases(hq, events=2 * CASES, batch_events=100, now=dt.datetime.now(dt.UTC))
    async with Node(hq, loopback_config(hq, [])) as hq_node:
        peer = f"127.0.0.1:{hq_node.listener.port}"
        async with Node(centre, loopback_config(centre, [peer])) as joining:
            watch = asyncio.create_task(
                asyncio.to_thread(main, ["sync", "--watch", "--home", str(centre.path)])
            )
            answers = 0
            while not watch.done():  # HQ answers the console's questions meanwhile
                page = await control.call(hq.control_socket, "case_list", {"limit": 20})
                assert len(page["cases"]) == 20
                answers += 1
                await asyncio.sleep(0.05)
            assert await watch == 0
            assert answers >= 1
            await async_wait_until(
                lambda: joining.sync.stored_events == 2 * CASES, 10, message="every event stored"
            )
    out = capsys.readouterr().out
    assert "本部 @ 市役所: received" in out
    assert out.rstrip().endswith("Caught up with every linked peer.")
