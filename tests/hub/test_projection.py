"""The hub projection against a real PostgreSQL (issue 17, point 4): idempotent,
order-independent, erasures final, hostile messages refused, position kept with
the rows."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest
from test_feed import SEALED, event, summary

from meshdesk.cases.events import EventKind
from meshdesk.cases.ids import new_id
from meshdesk.hub.feed import PREFECTURE, FeedRecord, encode_message, records_of
from meshdesk.hub.natsconf import city_subject
from meshdesk.hub.projection import (
    Message,
    ProjectionStats,
    apply_batch,
    ensure_schema,
    stored_position,
)
from meshdesk.hub.testbed import Postgres
from meshdesk.store import CaseSummary

NOW = dt.datetime(2026, 12, 6, 5, 0, tzinfo=dt.UTC)


@pytest.fixture
async def db(postgres: Postgres) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await ensure_schema(conn)
        await ensure_schema(conn)  # twice: idempotent
        yield conn
    finally:
        await conn.close()


def messages(records: list[FeedRecord], first_seq: int) -> list[Message]:
    return [
        Message(first_seq + i, city_subject(r.city), encode_message([r]))
        for i, r in enumerate(records)
    ]


def case_record(
    case_id: str, pos: int, s: CaseSummary, *, erased: bool = False, kind: int = 2
) -> FeedRecord:
    (record,) = records_of(
        "alpha", [(pos, event(pos, case_id, kind))], {case_id: s}, {case_id: SEALED},
        {case_id} if erased else set(),
    )  # fmt: skip
    return record


async def test_duplicates_and_old_records_change_nothing(db: asyncpg.Connection) -> None:
    case_id = new_id(1_780_000_000_000, random.Random(5))
    opened = summary(case_id, (PREFECTURE,))
    resolved = opened._replace(status="resolved", events=4)
    newer = case_record(case_id, 2, resolved)
    older = case_record(case_id, 1, opened)
    stats = ProjectionStats()
    await apply_batch(db, messages([newer], 1), stats, now=NOW)
    await apply_batch(db, messages([older, newer], 2), stats, now=NOW)  # late and repeated
    row = await db.fetchrow("SELECT status, events, pos FROM hub_cases")
    assert (row["status"], row["events"], row["pos"]) == ("resolved", 4, 2)
    assert await db.fetchval("SELECT count(*) FROM hub_events") == 2
    assert stats.duplicates == 1
    assert await stored_position(db) == 3
    assert await db.fetchval("SELECT sealed FROM hub_personal") == SEALED


async def test_an_erasure_is_final(db: asyncpg.Connection) -> None:
    case_id = new_id(1_780_000_000_000, random.Random(6))
    s = summary(case_id, (PREFECTURE,))
    stats = ProjectionStats()
    await apply_batch(db, messages([case_record(case_id, 1, s)], 1), stats, now=NOW)
    assert await db.fetchval("SELECT count(*) FROM hub_personal") == 1
    erasure = case_record(case_id, 5, s, kind=EventKind.CASE_ERASED)
    # A record of a higher position still carrying the block (forged or misordered):
    late = case_record(case_id, 6, s)
    assert late.personal == SEALED
    await apply_batch(db, messages([erasure, late], 2), stats, now=NOW)
    assert await db.fetchval("SELECT count(*) FROM hub_personal") == 0
    assert await db.fetchval("SELECT erased FROM hub_cases") is True
    assert await db.fetchval("SELECT status FROM hub_cases") == "in_progress"  # open data stays


async def test_withdrawn_consent_drops_the_sealed_block(db: asyncpg.Connection) -> None:
    case_id = new_id(1_780_000_000_000, random.Random(7))
    stats = ProjectionStats()
    given = case_record(case_id, 1, summary(case_id, (PREFECTURE,)))
    withdrawn = case_record(case_id, 2, summary(case_id, ()))
    assert withdrawn.personal is None
    await apply_batch(db, messages([given, withdrawn], 1), stats, now=NOW)
    assert await db.fetchval("SELECT count(*) FROM hub_personal") == 0


async def test_hostile_messages_change_nothing_but_the_position(
    db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    case_id = new_id(1_780_000_000_000, random.Random(8))
    good = case_record(case_id, 1, summary(case_id, ()))
    stats = ProjectionStats()
    hostile = [
        Message(1, city_subject("alpha"), b"\xc1garbage"),
        Message(2, city_subject("beta"), encode_message([good])),  # beta claims alpha's record
    ]
    await apply_batch(db, hostile, stats, now=NOW)
    assert stats.refused == 2
    assert "refused" in caplog.text
    assert await db.fetchval("SELECT count(*) FROM hub_events") == 0
    assert await db.fetchval("SELECT count(*) FROM hub_cases") == 0
    assert await db.fetchval("SELECT count(*) FROM hub_cities") == 0
    assert await stored_position(db) == 2


async def test_records_of_a_city_the_roster_does_not_admit_are_dropped(
    db: asyncpg.Connection,
) -> None:
    case_id = new_id(1_780_000_000_000, random.Random(9))
    record = case_record(case_id, 1, summary(case_id, (PREFECTURE,)))
    stats = ProjectionStats()
    await apply_batch(db, messages([record], 1), stats, now=NOW, admitted=lambda city: False)
    assert stats.refused == 1
    assert await db.fetchval("SELECT count(*) FROM hub_events") == 0
    assert await stored_position(db) == 1
    await apply_batch(db, messages([record], 2), stats, now=NOW, admitted=lambda c: c == "alpha")
    assert await db.fetchval("SELECT count(*) FROM hub_cases") == 1


async def test_a_hub_made_before_the_rename_gets_open_cases(postgres: Postgres) -> None:
    """``hub_city_status.backlog`` (an older hub's name) becomes ``open_cases``."""
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(
            "CREATE TABLE hub_cities (city text PRIMARY KEY, records bigint NOT NULL,"
            " last_contact timestamptz NOT NULL, last_event_at timestamptz);"
            "CREATE VIEW hub_city_status AS SELECT city, 0::bigint AS backlog FROM hub_cities;"
        )
        await ensure_schema(conn)
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'hub_city_status'"
        )
        names = {r["column_name"] for r in columns}
        assert "open_cases" in names
        assert "backlog" not in names
    finally:
        await conn.close()
