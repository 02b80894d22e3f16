"""A city HQ's feed is woken by what the node stores, not by its poll."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from loopback import loopback_config
from nats.js.errors import NotFoundError
from waits import AsyncWaitUntil

from meshdesk.cases.model import Personal
from meshdesk.config import Endpoint, HubSettings
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.hub.natsconf import city_stream
from meshdesk.hub.testbed import free_port
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.prefecture.city import join_hub, plan_join
from meshdesk.prefecture.home import PrefectureHome

pytestmark = pytest.mark.timeout(120)

CITY = "221007"


@pytest.mark.usefixtures("hub_tools")
async def test_a_new_case_reaches_the_leaf_stream_without_waiting_for_the_poll(
    tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    now = dt.datetime.now(dt.UTC)
    prefecture = PrefectureHome(tmp_path / "prefecture")
    prefecture.init("テスト県", now=now)
    prefecture.issue_server("hub-1", ["127.0.0.1"], now=now)
    credential = tmp_path / f"{CITY}.cred"
    # Nothing listens at the hub URL: the wide-area link is down, the leaf's stream
    # (on the HQ) takes the feed all the same.
    prefecture.issue_city(CITY, name="静岡市", urls=[f"tls://127.0.0.1:{free_port()}"],
                          out=credential, now=now)  # fmt: skip
    city = await build_deployment(tmp_path / "city", "City", [HomeSpec("本部", Role.HQ)], now=now)
    home = city.homes["本部"]
    join_hub(home, plan_join(home, credential, now=now), confirmed=True)
    # An hour between polls: only a wake brings a new case out within the test.
    hub = HubSettings(enabled=True, leaf_listen=Endpoint("127.0.0.1", free_port()),
                      poll_interval=3600.0, restart_delay=0.3)  # fmt: skip
    async with Node(home, replace(loopback_config(home, []), hub=hub)) as node:
        assert node.hub is not None
        nc = await nats.connect(node.hub.leaf.url, allow_reconnect=False)
        js = nc.jetstream()

        async def messages_at_least(n: int) -> bool:
            try:
                info = await js.stream_info(city_stream(CITY))
            except NotFoundError:
                return False
            return int(info.state.messages) >= n

        async def open_case() -> None:
            await node.cases.open_case(op="受付", category="medical", urgency="high",
                                       personal=Personal(name="山田 花子"))  # fmt: skip

        try:
            await open_case()
            await async_wait_until(lambda: messages_at_least(1), timeout=30,
                                   message="the first case never reached the leaf")  # fmt: skip
            # The publisher has published what it found and waits (an hour) for more.
            await open_case()
            await async_wait_until(lambda: messages_at_least(2), timeout=30,
                                   message="the new case waited for the poll")  # fmt: skip
        finally:
            await nc.close()
        # No failure either, whose retry would have started a session reading it.
        assert node.hub.publisher.stats.failures == 0
