"""Stored runs are answered by a task of their own, in commit order: a hook that fails
while one run is answered is logged, and every later run is still stored and answered."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from loopback import hq_and_centre, loopback_config
from waits import AsyncWaitUntil

from meshdesk.bench._fill import fill_cases
from meshdesk.node import Node
from meshdesk.store import StoredEvent

CASES = 400


async def test_a_failing_hook_is_logged_and_later_runs_are_still_answered(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    async_wait_until: AsyncWaitUntil,
) -> None:
    hq, centre = await hq_and_centre(tmp_path, deployment="陸前高田市")
    await fill_cases(hq, events=2 * CASES, batch_events=100, now=dt.datetime.now(dt.UTC))
    told: list[int] = []
    stored = Node._stored

    def first_fails(node: Node, events: list[StoredEvent]) -> None:
        told.append(len(events))
        if len(told) == 1:
            raise RuntimeError("a hook broke on the first run")
        stored(node, events)

    monkeypatch.setattr(Node, "_stored", first_fails)
    caplog.set_level(logging.ERROR, logger="meshdesk.sync.driver")
    async with Node(hq, loopback_config(hq, [])) as hq_node:
        peer = f"127.0.0.1:{hq_node.listener.port}"
        async with Node(centre, loopback_config(centre, [peer])) as joining:
            await async_wait_until(
                lambda: joining.sync.stored_events == 2 * CASES, 20, message="every event stored"
            )

            def settled() -> bool:  # HQ heard every answer: nothing left in flight
                progress = hq_node.sync.progress()
                return len(progress) == 1 and progress[0]["outbox"] == 0

            await async_wait_until(settled, 10, message="HQ has every run answered")
            assert (await joining.store.counts()).events == 2 * CASES
    assert sum(told) == 2 * CASES  # every run reached the hook
    assert len(told) > 1
    failures = [r for r in caplog.records if "answering a stored run" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "a hook broke" in str(failures[0].exc_info[1])
