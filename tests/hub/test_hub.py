"""Two cities feed the prefecture hub (issue 17, point 5), end to end on one machine.

Two city deployments (in-process HQ nodes, each with its supervised leaf node), a
3-server JetStream hub and PostgreSQL, all started here. While the wide-area link
is cut (every hub server down) the cities keep working: new cases, edits, an
erasure, an announcement; a city's leaf node is killed and comes back by itself.
Then the hub returns, and one hub server is killed in the middle of the stream.
At the end the hub's views equal what both HQs hold, every record is there once,
and no personal block reached the hub without the citizen's consent. Finally the
prefecture revokes a city: the projection's roster gate drops what its still-open
link sends, and once the hub servers reload their authorization (rendered from
the roster) its leaf node is refused when it reconnects while the other city's
comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import asyncpg
import nats
import pytest
from loopback import loopback_config
from nats.js.errors import ServiceUnavailableError
from waits import AsyncWaitUntil

from meshdesk._lifecycle import cancel_and_wait
from meshdesk.cases.model import Personal
from meshdesk.config import Endpoint, HubSettings
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.hub.feed import PREFECTURE
from meshdesk.hub.gate import RosterGate
from meshdesk.hub.projection import Projection
from meshdesk.hub.testbed import HubBed, free_port
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.notices.events import NoticeKind

pytestmark = pytest.mark.timeout(180)

NAME = "山田 花子"


async def start_city(stack: contextlib.AsyncExitStack, root: Path, city: str, bed: HubBed) -> Node:
    deployment = await build_deployment(
        root / city, f"City {city}", [HomeSpec("本部", Role.HQ, site="市役所", folder="hq")],
        now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    home = deployment.homes["本部"]
    bed.join(home, city)  # `meshdesk hub join`: city name and hub URLs come with it
    hub = HubSettings(enabled=True, leaf_listen=Endpoint("127.0.0.1", free_port()),
                      batch=50, poll_interval=0.1, restart_delay=0.3)  # fmt: skip
    config = replace(loopback_config(home, []), hub=hub)
    return await stack.enter_async_context(Node(home, config))


async def open_cases(node: Node, count: int, *, consent_every: int = 3) -> list[str]:
    ids = []
    for i in range(count):
        consent = [PREFECTURE] if i % consent_every == 0 else ["福祉課"]
        state = await node.cases.open_case(
            op="受付", category=("medical", "housing", "supplies")[i % 3],
            urgency=("immediate", "high", "normal")[i % 3],
            personal=Personal(name=NAME, phone="090-0000-0000"), consent=consent,
        )  # fmt: skip
        ids.append(state.id)
    return ids


def feedable(node_events: list[tuple[int, object]]) -> int:
    return sum(
        1
        for _, e in node_events
        if getattr(e, "case_id", None) is not None
        or getattr(e, "kind", 0) == NoticeKind.ANNOUNCEMENT
    )


async def test_two_cities_feed_the_hub_through_cuts_and_a_killed_server(
    hub_bed: HubBed,
    tmp_path: Path,
    stack: contextlib.AsyncExitStack,
    async_wait_until: AsyncWaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bed = hub_bed
    city_a, city_b = bed.credentials  # municipality codes the prefecture admitted
    alpha = await start_city(stack, tmp_path, city_a, bed)
    beta = await start_city(stack, tmp_path, city_b, bed)
    projection = Projection(bed.client_urls, bed.postgres.dsn, [city_a, city_b], batch=4,
                            retry_delay=0.3, tls=bed.projection_tls(),
                            admitted=RosterGate(bed.prefecture, check_every=0.0))  # fmt: skip
    task = asyncio.create_task(projection.run())
    stack.push_async_callback(cancel_and_wait, task)
    db = await asyncpg.connect(bed.postgres.dsn)
    stack.push_async_callback(db.close)

    async def hub_cases() -> int:
        try:
            return int(await db.fetchval("SELECT count(*) FROM hub_cases"))
        except asyncpg.UndefinedTableError:
            return 0

    # Before any cut: the first cases arrive.
    first = await open_cases(alpha, 6) + await open_cases(beta, 6)
    await async_wait_until(lambda: _at_least(hub_cases, len(first)), timeout=60,
                           message="the first cases never reached the hub")  # fmt: skip
    # A city's leaf link carries the sourcing and nothing else: a client of its leaf
    # node (anyone on the HQ machine) cannot reach the hub's JetStream API.
    await _hub_api_out_of_reach(alpha.hub.leaf.url)

    # The wide-area link is cut: every hub server goes down.
    for server in bed.servers:
        await server.stop()
    alpha_more = await open_cases(alpha, 20)
    await alpha.cases.set_status(alpha_more[0], op="受付", status="resolved")
    erased = first[0]  # alpha's first case: consented to the prefecture, fed before the cut
    await alpha.cases.steward.erase(erased, op="本部", reason="本人の申し出")
    alpha.hub.leaf.kill_now()  # a leaf crash during the cut: its supervisor restarts it
    beta_more = await open_cases(beta, 15)
    await beta.notices.announce(op="本部", title="給水", body="14時から", lang="ja")
    await beta.cases.add_consent(beta_more[1], op="受付", department=PREFECTURE)

    # The hub returns; a hub server is killed while the backlog streams in.
    for server in bed.servers:
        await server.start()
    await async_wait_until(lambda: _at_least(hub_cases, len(first) + 5), timeout=60,
                           message="the backlog never started to flow")  # fmt: skip
    await bed.servers[1].stop(kill=True)
    late = await open_cases(beta, 5)
    total = len(first) + len(alpha_more) + len(beta_more) + len(late)
    await async_wait_until(lambda: _at_least(hub_cases, total), timeout=90,
                           message="the hub never caught up")  # fmt: skip
    expected = {}
    for city, node in ((city_a, alpha), (city_b, beta)):
        expected[city] = feedable(await node.store.events_in_order(0, 100_000))
    await async_wait_until(lambda: _records_equal(db, expected), timeout=60,
                           message="hub records never matched the cities' events")  # fmt: skip

    assert alpha.hub.leaf.starts >= 2  # restarted after the kill
    assert alpha.hub.publisher.stats.failures >= 1  # ... and the publisher resumed
    # The views equal what both HQs hold.
    for city, node in ((city_a, alpha), (city_b, beta)):
        summaries = [await node.store.index.summary(c) for c in await node.store.case_ids()]
        held = {s.case_id: s for s in summaries if s is not None}
        rows = await db.fetch("SELECT * FROM hub_cases WHERE city = $1", city)
        assert {r["case_id"] for r in rows} == set(held)
        for row in rows:
            s = held[row["case_id"]]
            assert (row["site"], row["category"], row["urgency"], row["status"]) == (
                s.site, s.category, s.urgency, s.status,
            )  # fmt: skip
            assert row["events"] == s.events
        by_category = Counter(s.category for s in held.values())
        view = await db.fetch(
            "SELECT category, cases FROM hub_cases_by_category WHERE city = $1", city
        )
        assert {r["category"]: r["cases"] for r in view} == by_category
        by_status = Counter(s.status for s in held.values())
        view = await db.fetch("SELECT status, cases FROM hub_cases_by_status WHERE city = $1", city)
        assert {r["status"]: r["cases"] for r in view} == by_status
        status = await db.fetchrow("SELECT * FROM hub_city_status WHERE city = $1", city)
        assert status["cases"] == len(held)
        assert status["open_cases"] == sum(
            s.status not in ("resolved", "closed") for s in held.values()
        )
        assert status["last_contact"] is not None

    # Nothing duplicated: one row per record, every record the cities hold.
    counts = await db.fetch("SELECT city, count(*) AS n FROM hub_events GROUP BY city")
    assert {r["city"]: r["n"] for r in counts} == expected

    # Nothing personal without consent: sealed blocks of consented cases only, none
    # for the erased one, and never the name in plaintext anywhere.
    personal = await db.fetch("SELECT city, case_id, sealed FROM hub_personal")
    consented = set()
    for city, node in ((city_a, alpha), (city_b, beta)):
        for case_id in await node.store.case_ids():
            s = await node.store.index.summary(case_id)
            if s is not None and PREFECTURE in s.consent:
                consented.add((city, case_id))
    assert {(r["city"], r["case_id"]) for r in personal} == consented - {(city_a, erased)}
    assert (city_b, beta_more[1]) in consented  # consent given during the cut
    for row in personal:
        assert NAME.encode() not in bytes(row["sealed"])
    assert await db.fetchval("SELECT erased FROM hub_cases WHERE case_id = $1", erased)
    assert await db.fetchval("SELECT count(*) FROM hub_erasures") == 1
    dump = await db.fetchval("SELECT string_agg(t::text, '') FROM hub_cases AS t")
    assert NAME not in dump
    assert "090-0000-0000" not in dump
    notices = await db.fetch("SELECT city, title_ja FROM hub_announcements")
    assert [(r["city"], r["title_ja"]) for r in notices] == [(city_b, "給水")]

    # The prefecture revokes city b: its link is still open (until it reconnects),
    # but the projection's roster gate drops whatever it sends from now on.
    bed.prefecture.revoke_city(city_b, reason="認証情報の紛失", now=dt.datetime.now(dt.UTC))
    held_b = await db.fetchval("SELECT count(*) FROM hub_cases WHERE city = $1", city_b)
    refused = projection.stats.refused
    await open_cases(beta, 2)
    await async_wait_until(lambda: projection.stats.refused > refused, timeout=60,
                           message="city b's records after its revocation never came")  # fmt: skip
    await open_cases(alpha, 2)
    await async_wait_until(lambda: _at_least(hub_cases, total + 2), timeout=60,
                           message="city a's feed stopped too")  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM hub_cases WHERE city = $1", city_b) == held_b

    # The hub servers refuse city b's leaf node too: their authorization, rendered
    # again from the roster and reloaded (SIGHUP), has city b's certificate among
    # its users no more. Its link, open since before, ends when the leaf next
    # reconnects (here a crash of each city's leaf): a's is let in, b's refused.
    leaf_a, leaf_b = f"city-{city_a}", f"city-{city_b}"
    assert {leaf_a, leaf_b} <= bed.leaf_names()
    bed.reload_trust()
    starts = (alpha.hub.leaf.starts, beta.hub.leaf.starts)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meshdesk.hub.nats"):
        alpha.hub.leaf.kill_now()
        beta.hub.leaf.kill_now()
        await async_wait_until(
            lambda: alpha.hub.leaf.starts > starts[0] and beta.hub.leaf.starts > starts[1],
            timeout=30, message="the leaf nodes never restarted",
        )  # fmt: skip
        await async_wait_until(lambda: _refused(caplog, city_b), timeout=60,
                               message="city b's leaf was never refused")  # fmt: skip
        await open_cases(alpha, 2)
        await async_wait_until(lambda: _at_least(hub_cases, total + 4), timeout=60,
                               message="city a's feed stopped after its reconnection")  # fmt: skip
    assert leaf_a in bed.leaf_names()
    assert leaf_b not in bed.leaf_names()


async def _hub_api_out_of_reach(leaf_url: str) -> None:
    nc = await nats.connect(leaf_url, allow_reconnect=False)
    try:
        js = nc.jetstream(domain="hub", timeout=3)
        with pytest.raises((ServiceUnavailableError, nats.errors.TimeoutError)):
            await js.account_info()
    finally:
        await nc.close()


def _refused(caplog: pytest.LogCaptureFixture, city: str) -> bool:
    """City ``city``'s leaf node logged that the hub refused its credential."""
    return any(
        f"leaf {city}" in r.getMessage() and "Authorization Violation" in r.getMessage()
        for r in caplog.records
    )


async def _at_least(count: object, n: int) -> bool:
    return await count() >= n  # type: ignore[operator,no-any-return]


async def _records_equal(db: asyncpg.Connection, expected: dict[str, int]) -> bool:
    rows = await db.fetch("SELECT city, count(*) AS n FROM hub_events GROUP BY city")
    return {r["city"]: r["n"] for r in rows} == expected
