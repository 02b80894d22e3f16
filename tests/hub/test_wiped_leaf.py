"""A city HQ's leaf node loses its JetStream folder (a wiped disk, a restored
backup without it) during a WAN cut, with records in it that the hub had not
sourced yet: the city's stream starts again at sequence 1. The publisher
sees the stream behind the sequence it had acknowledged, publishes the store
again from the start under the same message ids, and the hub ends up with every
record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from loopback import loopback_config
from waits import AsyncWaitUntil

from meshdesk._lifecycle import cancel_and_wait
from meshdesk.cases.model import Personal
from meshdesk.config import Endpoint, HubSettings
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.hub.projection import Projection
from meshdesk.hub.testbed import HubBed, free_port
from meshdesk.identity import Role
from meshdesk.node import Node

pytestmark = pytest.mark.timeout(120)


async def test_a_wiped_leaf_stream_is_published_again_and_the_hub_takes_it_once(
    hub_bed: HubBed,
    tmp_path: Path,
    stack: contextlib.AsyncExitStack,
    async_wait_until: AsyncWaitUntil,
) -> None:
    bed = hub_bed
    city = next(iter(bed.credentials))
    deployment = await build_deployment(
        tmp_path / city, f"City {city}", [HomeSpec("本部", Role.HQ, folder="hq")],
        now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    home = deployment.homes["本部"]
    bed.join(home, city)
    hub = HubSettings(enabled=True, leaf_listen=Endpoint("127.0.0.1", free_port()),
                      batch=50, poll_interval=0.1, restart_delay=0.3)  # fmt: skip
    node = await stack.enter_async_context(Node(home, replace(loopback_config(home, []), hub=hub)))
    assert node.hub is not None
    projection = Projection(bed.client_urls, bed.postgres.dsn, [city], batch=4, retry_delay=0.3,
                            tls=bed.projection_tls())  # fmt: skip
    task = asyncio.create_task(projection.run())
    stack.push_async_callback(cancel_and_wait, task)
    db = await asyncpg.connect(bed.postgres.dsn)
    stack.push_async_callback(db.close)

    async def opened(count: int) -> None:
        for i in range(count):
            await node.cases.open_case(op="受付", category="medical", urgency="high",
                                       personal=Personal(name=f"市民{i}"), consent=[])  # fmt: skip

    async def hub_has(cases: int) -> bool:
        try:
            held = await db.fetchval("SELECT count(*) FROM hub_cases")
        except asyncpg.UndefinedTableError:
            return False
        return int(held) == cases

    await opened(6)
    await async_wait_until(lambda: hub_has(6), timeout=60, message="the first cases never came")
    acked = node.hub.publisher.stats.position
    assert acked > 0

    # The wide-area link is cut (every hub server down); the HQ goes on, its leaf
    # acknowledges 4 new cases that the hub has not sourced yet ...
    for server in bed.servers:
        await server.stop()
    await opened(4)
    await async_wait_until(lambda: node.hub.publisher.stats.position > acked, timeout=30,
                           message="the leaf never acknowledged the cases of the cut")  # fmt: skip
    # ... and then loses its JetStream folder while it is down.
    await node.hub.leaf.stop()
    shutil.rmtree(node.hub.leaf.folder / "jetstream")
    await node.hub.leaf.start()
    await async_wait_until(lambda: node.hub.publisher.stats.restarts == 1, timeout=30,
                           message="the publisher never saw the stream start again")  # fmt: skip
    for server in bed.servers:
        await server.start()
    await opened(2)
    await async_wait_until(lambda: hub_has(12), timeout=60,
                           message="the cases of the cut never reached the hub")  # fmt: skip
    events = await node.store.events_in_order(0, 100_000)
    await async_wait_until(
        lambda: _hub_events_are(db, len(events)), timeout=30,
        message="the hub's records never matched the city's events",
    )  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM hub_cases") == 12


async def _hub_events_are(db: asyncpg.Connection, n: int) -> bool:
    return int(await db.fetchval("SELECT count(*) FROM hub_events")) == n
