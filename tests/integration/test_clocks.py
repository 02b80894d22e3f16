"""Wrong clocks: a node whose clock is days or a year off still starts, records, syncs.

The shelter's clock is set wrong by an injected clock (the ``faketime`` test in the
durability tier does the same to a real process). It must start although its
certificate is "not valid yet" by its own clock, its cases must reach HQ, both sides
must see a clock warning naming the node and the offset, and once it has met HQ it
stamps new records with HQ's time. HQ can edit a case stamped a year ahead without
being dragged into the future.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from loopback import hq_and_centre, loopback_config

from meshdesk import control
from meshdesk.cases.hlc import hlc_wall_ms
from meshdesk.cases.model import Personal
from meshdesk.clock import SKEW_WARN_MS
from meshdesk.node import Node

NOW = dt.datetime.now(dt.UTC)
AsyncWaitUntil = Callable[..., Awaitable[None]]
DAY = dt.timedelta(days=1)


@pytest.mark.parametrize("skew", [-400 * DAY, -DAY, 2 * DAY, 365 * DAY], ids=str)
async def test_a_node_with_a_wrong_clock_records_syncs_and_is_told(
    tmp_path: Path,
    async_wait_until: AsyncWaitUntil,
    caplog: pytest.LogCaptureFixture,
    skew: dt.timedelta,
) -> None:
    hq, shelter = await hq_and_centre(tmp_path, deployment="時計市", centre="c4", site="第四小学校")

    def wrong() -> dt.datetime:
        return dt.datetime.now(dt.UTC) + skew

    # Offline first, with its wrong clock (the certificate is "not valid yet" at -1 d).
    async with Node(shelter, loopback_config(shelter, []), now=wrong) as alone:
        before = await alone.cases.open_case(
            op="佐藤", category="medical", urgency="high", personal=Personal(name="山田 太郎")
        )
    caplog.clear()
    async with Node(hq, loopback_config(hq, [])) as hq_node:
        to_hq = f"127.0.0.1:{hq_node.listener.port}"
        async with Node(shelter, loopback_config(shelter, [to_hq]), now=wrong) as node:
            await async_wait_until(lambda: node.clock.view.warning is not None, 10)
            status = await control.call(node.home.control_socket, "status")
            clock = status["clock"]
            assert isinstance(clock, dict)
            assert abs(clock["skew_ms"] - skew / dt.timedelta(milliseconds=1)) < SKEW_WARN_MS
            assert "c4" in clock["warning"]
            assert "HQ 本部" in clock["warning"]

            # HQ sees the offset of c4's clock and logs it with the node's name.
            def hq_sees_offset() -> bool:
                peer = next(p for p in hq_node.manager.peers() if p.name == "c4")
                offset = peer.clock_offset_ms
                return (
                    offset is not None and abs(offset - skew / dt.timedelta(milliseconds=1)) < 5_000
                )

            await async_wait_until(hq_sees_offset, 10)
            await async_wait_until(lambda: hq_node.clock.view.peers_off != (), 10)
            said = " ".join(r.getMessage() for r in caplog.records)
            assert "clock of c4" in said
            assert "clock of c4 is" in said  # the shelter's own warning

            # New records are stamped with HQ's time once the shelter knows better.
            after = await node.cases.open_case(
                op="佐藤", category="supplies", urgency="normal", personal=Personal(name="鈴木")
            )
            assert after.created_hlc is not None
            stamped = hlc_wall_ms(after.created_hlc) / 1000
            assert abs(stamped - dt.datetime.now(dt.UTC).timestamp()) < SKEW_WARN_MS / 1000

            # Both cases reach HQ, and HQ can work on the one stamped with the wrong clock.
            async def at_hq() -> bool:
                return {before.id, after.id} <= set(await hq_node.store.case_ids())

            await async_wait_until(at_hq, 10)
            edited = await hq_node.cases.add_note(before.id, op="本部 田中", text="確認しました")
            assert len(edited.notes) == 1
            # HQ was not dragged along by a case stamped in the future.
            fresh = await hq_node.cases.open_case(
                op="田中", category="other", urgency="low", personal=Personal(name="佐々木")
            )
            assert fresh.created_hlc is not None
            assert abs(hlc_wall_ms(fresh.created_hlc) / 1000 - NOW.timestamp()) < 3600
