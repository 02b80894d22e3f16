"""The Store's lifecycle and API: events, node facts, the HQ registry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import re
import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import meshdesk.store
from meshdesk.errors import StoreError
from meshdesk.store import (
    ZERO_HASH,
    IssuedNode,
    RevokedNode,
    Store,
    StoreCounts,
    StoredEvent,
    StoreState,
)

NOW = 1_700_000_000_000


def chain(
    author: str,
    count: int,
    *,
    start: int = 1,
    prev: bytes = ZERO_HASH,
    case_id: str | None = "case-1",
    salt: bytes = b"",
) -> list[StoredEvent]:
    """``count`` well-linked events of ``author`` from ``start`` on."""
    events = []
    for seq in range(start, start + count):
        body = b"body %s %d %s" % (author.encode(), seq, salt)
        digest = hashlib.sha256(prev + body).digest()
        events.append(StoredEvent(author, seq, seq << 16, case_id, 1, body, prev, digest))
        prev = digest
    return events


def raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A plain sqlite3 connection, bypassing the Store."""
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


def file_mode(path: Path) -> int | None:
    """Permission bits of ``path``, or None if it does not exist."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def issued(node_id: str, name: str, serial: str, issued_at: int = NOW) -> IssuedNode:
    return IssuedNode(
        node_id=node_id,
        name=name,
        site="City Hall",
        role="desk",
        departments=("福祉課", "housing"),
        serial=serial,
        cert_pem="-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
        issued_at=issued_at,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with Store.open(db_path, create=True) as opened:
        yield opened


# -- package -----------------------------------------------------------------------


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(meshdesk.store).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(meshdesk.store.__all__) == public


# -- lifecycle -----------------------------------------------------------------------


async def test_missing_file_without_create_is_refused(db_path: Path) -> None:
    with pytest.raises(StoreError, match=f"^no database at {re.escape(str(db_path))}$"):
        async with Store.open(db_path):
            pass
    assert file_mode(db_path) is None


async def test_create_makes_owner_only_file(db_path: Path) -> None:
    async with Store.open(db_path, create=True) as store:
        assert store.state is StoreState.RUNNING
        assert file_mode(db_path) == 0o600
        assert file_mode(db_path.with_name(db_path.name + "-wal")) in (None, 0o600)
    assert file_mode(db_path) == 0o600


async def test_create_needs_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "node.db"
    with pytest.raises(StoreError, match="does not exist"):
        async with Store.open(path, create=True):
            pass
    assert not path.parent.exists()


async def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        async with Store.open(tmp_path):
            pass


async def test_reopen_keeps_data_and_wal(db_path: Path) -> None:
    events = chain("node-a", 5)
    async with Store.open(db_path, create=True) as store:
        assert await store.append_events(events, NOW) == 5
        await store.set_meta("node_id", b"node-a")
    async with Store.open(db_path) as store:
        assert await store.heads() == {"node-a": (5, events[-1].hash)}
        assert await store.events_after("node-a", 0, 100) == events
        assert await store.get_meta("node_id") == b"node-a"
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_start_and_aclose_explicitly(db_path: Path) -> None:
    store = Store(db_path, create=True)
    assert store.state is StoreState.NEW
    try:
        await store.start()
        assert store.state is StoreState.RUNNING
        assert store.schema_version == meshdesk.store.SCHEMA_VERSION
        with pytest.raises(StoreError, match="cannot be started twice"):
            await store.start()
    finally:
        await store.aclose()
    assert store.state is StoreState.CLOSED
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="cannot be started twice"):
        await store.start()


async def test_unstarted_store_is_refused(db_path: Path) -> None:
    store = Store(db_path, create=True)
    with pytest.raises(StoreError, match="not open yet"):
        await store.heads()
    await store.aclose()
    assert store.state is StoreState.CLOSED


async def test_failed_start_leaves_store_closed(db_path: Path) -> None:
    store = Store(db_path)
    with pytest.raises(StoreError, match="no database"):
        await store.start()
    assert store.state is StoreState.CLOSED
    await store.aclose()


CALLS: dict[str, Callable[[Store], Awaitable[Any]]] = {
    "append_events": lambda s: s.append_events(chain("a", 1), NOW),
    "append_nothing": lambda s: s.append_events([], NOW),
    "heads": lambda s: s.heads(),
    "events_after": lambda s: s.events_after("a", 0, 10),
    "events_for_case": lambda s: s.events_for_case("case-1"),
    "counts": lambda s: s.counts(),
    "get_meta": lambda s: s.get_meta("k"),
    "set_meta": lambda s: s.set_meta("k", b"v"),
    "record_issued": lambda s: s.record_issued(issued("n1", "desk 1", "1")),
    "issued_nodes": lambda s: s.issued_nodes(),
    "find_issued": lambda s: s.find_issued("n1"),
    "mark_revoked": lambda s: s.mark_revoked(RevokedNode("n1", "1", NOW, "lost")),
    "revoked_nodes": lambda s: s.revoked_nodes(),
    "is_revoked": lambda s: s.is_revoked("n1"),
    "save_revocation_list": lambda s: s.save_revocation_list(1, b"crl"),
    "revocation_list": lambda s: s.revocation_list(),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_closed_store_raises(db_path: Path, call: Callable[[Store], Awaitable[Any]]) -> None:
    async with Store.open(db_path, create=True) as store:
        await call(store)  # works while open
    with pytest.raises(StoreError, match="is closed"):
        await call(store)


async def test_aclose_waits_for_the_operation_in_flight(store: Store) -> None:
    events = chain("node-a", 2000)
    append = asyncio.ensure_future(store.append_events(events, NOW))
    await asyncio.sleep(0)  # the append holds the connection now
    await store.aclose()
    assert await append == 2000
    with pytest.raises(StoreError, match="is closed"):
        await store.heads()


async def test_lock_held_by_another_process_is_a_store_error(db_path: Path) -> None:
    async with Store.open(db_path, create=True, busy_timeout=0.05) as store:
        with raw(db_path) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match="locked by another process"):
                await store.set_meta("k", b"v")
            other.execute("ROLLBACK")
        await store.set_meta("k", b"v")
        assert await store.get_meta("k") == b"v"


# -- appending events ----------------------------------------------------------------


async def test_append_and_read_back(store: Store) -> None:
    a, b = chain("node-a", 3), chain("node-b", 2, case_id="case-2")
    assert await store.append_events([*a, *b], NOW) == 5
    assert await store.heads() == {"node-a": (3, a[-1].hash), "node-b": (2, b[-1].hash)}
    assert await store.events_after("node-a", 1, 10) == a[1:]
    assert await store.events_after("node-a", 0, 2) == a[:2]
    assert await store.events_after("node-c", 0, 10) == []
    assert await store.events_for_case("case-2") == b
    assert await store.events_for_case("nope") == []


async def test_events_after_needs_a_positive_limit(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.events_after("node-a", 0, 0)


async def test_batch_may_extend_stored_chain_and_itself_in_any_order(store: Store) -> None:
    events = chain("node-a", 6)
    await store.append_events(events[:2], NOW)
    interleaved = [*reversed(events[2:]), *chain("node-b", 2)]
    assert await store.append_events(interleaved, NOW) == 6
    assert (await store.heads())["node-a"] == (6, events[-1].hash)
    assert await store.events_after("node-a", 0, 10) == events


async def test_events_for_case_are_ordered_by_hlc(store: Store) -> None:
    a = chain("node-a", 2)
    b = [dataclasses.replace(e, hlc=e.hlc + 1) for e in chain("node-b", 2)]
    await store.append_events([*b, *a], NOW)
    assert await store.events_for_case("case-1") == [a[0], b[0], a[1], b[1]]


async def test_identical_events_are_skipped(store: Store) -> None:
    events = chain("node-a", 4)
    assert await store.append_events(events[:3], NOW) == 3
    assert await store.append_events(events, NOW) == 1
    assert await store.append_events([events[0], events[0]], NOW) == 0
    assert await store.append_events([*events, *events], NOW) == 0
    assert (await store.counts()).events == 4


async def test_identical_events_inside_one_batch_are_skipped(store: Store) -> None:
    events = chain("node-a", 3)
    assert await store.append_events([*events, *events], NOW) == 3


async def test_fork_against_stored_event_stores_nothing(store: Store) -> None:
    await store.append_events(chain("node-a", 3), NOW)
    other = chain("node-a", 3, salt=b"other")
    batch = [*chain("node-b", 2), *chain("node-a", 1, start=4, prev=other[2].hash), *other]
    with pytest.raises(StoreError, match="fork for author node-a at seq 1"):
        await store.append_events(batch, NOW)
    assert set(await store.heads()) == {"node-a"}
    assert (await store.counts()).events == 3


async def test_fork_inside_one_batch_stores_nothing(store: Store) -> None:
    events = chain("node-a", 2)
    forked = chain("node-a", 2, salt=b"other")
    with pytest.raises(StoreError, match="fork for author node-a at seq 1"):
        await store.append_events([*events, forked[0]], NOW)
    assert await store.heads() == {}


async def test_gap_stores_nothing(store: Store) -> None:
    events = chain("node-a", 5)
    await store.append_events(events[:2], NOW)
    with pytest.raises(StoreError, match="gap for author node-a: expected seq 3, got 4"):
        await store.append_events([*chain("node-b", 1), *events[3:]], NOW)
    assert await store.heads() == {"node-a": (2, events[1].hash)}


async def test_first_event_must_start_at_one(store: Store) -> None:
    with pytest.raises(StoreError, match="expected seq 1, got 2"):
        await store.append_events(chain("node-a", 2)[1:], NOW)


async def test_broken_chain_stores_nothing(store: Store) -> None:
    good = chain("node-a", 3)
    bad = chain("node-a", 1, start=3, prev=b"\x01" * 32)
    with pytest.raises(StoreError, match="broken chain for author node-a at seq 3"):
        await store.append_events([*good[:2], *bad], NOW)
    with pytest.raises(StoreError, match="broken chain for author node-a at seq 1"):
        await store.append_events(chain("node-a", 1, prev=b"\x01" * 32), NOW)
    assert await store.heads() == {}


async def test_bad_event_at_end_of_batch_stores_nothing(store: Store) -> None:
    events = chain("node-a", 100)
    broken = dataclasses.replace(events[-1], hash=b"x")
    with pytest.raises(StoreError, match="hash must be 32 bytes"):
        await store.append_events([*events[:-1], broken], NOW)
    assert await store.counts() == StoreCounts(0, 0, 0, 0, 0)
    assert await store.append_events(events, NOW) == 100


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("author", "", "author must be"),
        ("seq", 0, "seq must be"),
        ("hlc", 2**64, "hlc must be a 64-bit integer"),
        ("kind", "1", "kind must be"),
        ("case_id", b"case", "case_id must be"),
        ("body", "text", "body must be bytes"),
        ("prev_hash", bytes(31), "prev_hash must be 32 bytes"),
    ],
)
async def test_malformed_event_is_refused(
    store: Store, field: str, value: object, message: str
) -> None:
    event = dataclasses.replace(chain("node-a", 1)[0], **{field: value})
    with pytest.raises(StoreError, match=message):
        await store.append_events([event], NOW)


async def test_received_at_must_be_an_integer(store: Store) -> None:
    with pytest.raises(StoreError, match="received_at"):
        await store.append_events(chain("node-a", 1), 1.5)  # type: ignore[arg-type]


async def test_ten_thousand_events_in_one_batch(store: Store, db_path: Path) -> None:
    events = chain("node-a", 10_000)
    assert await store.append_events(events, NOW) == 10_000
    assert await store.events_after("node-a", 0, 10_000) == events
    page = await store.events_after("node-a", 9_990, 100)
    assert [e.seq for e in page] == list(range(9_991, 10_001))
    assert (await store.counts()).events == 10_000
    await store.aclose()
    with raw(db_path) as conn:
        assert conn.execute("SELECT DISTINCT received_at FROM events").fetchall() == [(NOW,)]


@pytest.mark.parametrize("steps", range(8))
async def test_cancelled_append_is_all_or_nothing(store: Store, steps: int) -> None:
    events = chain("node-a", 3000)
    await store.append_events(events[:1], NOW)
    append = asyncio.ensure_future(store.append_events(events[1:], NOW))
    for _ in range(steps):
        await asyncio.sleep(0)
    append.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await append
    heads = await store.heads()
    stored = await store.events_after("node-a", 0, 10_000)
    assert len(stored) in (1, 3000)
    assert heads == {"node-a": (len(stored), stored[-1].hash)}
    assert await store.append_events(events, NOW) == 3000 - len(stored)
    assert (await store.counts()).events == 3000


async def test_database_refuses_update_delete_and_broken_links(store: Store, db_path: Path) -> None:
    await store.append_events(chain("node-a", 2), NOW)
    gap = chain("node-a", 1, start=4)[0]
    row = (*[getattr(gap, f.name) for f in dataclasses.fields(gap)][:8], NOW)
    with raw(db_path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE"):
            conn.execute("UPDATE events SET body = x'00' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE"):
            conn.execute("DELETE FROM events")
        with pytest.raises(sqlite3.IntegrityError, match="hash chain"):
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)", row)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)


# -- counts and meta -----------------------------------------------------------------


async def test_counts(store: Store) -> None:
    assert await store.counts() == StoreCounts(0, 0, 0, 0, 0)
    await store.append_events(
        [*chain("a", 3), *chain("b", 2, case_id="case-2"), *chain("c", 1, case_id=None)], NOW
    )
    await store.record_issued(issued("n1", "desk 1", "11"))
    await store.mark_revoked(RevokedNode("n1", "11", NOW, "lost"))
    assert await store.counts() == StoreCounts(
        events=6, authors=3, cases=2, issued_nodes=1, revoked_nodes=1
    )


async def test_meta(store: Store) -> None:
    assert await store.get_meta("node_id") is None
    await store.set_meta("node_id", b"one")
    await store.set_meta("node_id", b"two")
    await store.set_meta("empty", b"")
    assert await store.get_meta("node_id") == b"two"
    assert await store.get_meta("empty") == b""
    with pytest.raises(StoreError, match="must be bytes"):
        await store.set_meta("node_id", "text")  # type: ignore[arg-type]


# -- HQ registry ---------------------------------------------------------------------


async def test_issued_registry(store: Store) -> None:
    first = issued("7F3A-91C2-0000", "受付 1", "1001", NOW)
    second = issued("7f3a-aaaa-1111", "desk 2", "1002", NOW + 1)
    await store.record_issued(second)
    await store.record_issued(first)
    assert await store.issued_nodes() == [first, second]
    assert await store.find_issued("7f3a") == [first, second]
    assert await store.find_issued("7F3A91") == [first]
    assert await store.find_issued(" 7f3a-91c2 ") == [first]
    assert await store.find_issued("受付 1") == [first]
    assert await store.find_issued("受付") == []
    assert await store.find_issued("91c2") == []
    assert await store.find_issued("") == []
    assert await store.find_issued("-") == []


async def test_issued_node_or_serial_twice_is_refused(store: Store) -> None:
    await store.record_issued(issued("n1", "desk 1", "1001"))
    with pytest.raises(StoreError, match="already recorded"):
        await store.record_issued(issued("n1", "desk 1", "1002"))
    with pytest.raises(StoreError, match="already recorded"):
        await store.record_issued(issued("n2", "desk 2", "1001"))
    assert [n.node_id for n in await store.issued_nodes()] == ["n1"]


async def test_revoked(store: Store) -> None:
    assert not await store.is_revoked("n1")
    first = RevokedNode("n1", "1001", NOW, "kit lost")
    assert await store.mark_revoked(first)
    assert not await store.mark_revoked(RevokedNode("n1", "1001", NOW + 5, "again"))
    assert await store.mark_revoked(RevokedNode("n0", "1000", NOW + 1, "stolen"))
    assert await store.is_revoked("n1")
    assert not await store.is_revoked("n2")
    assert [n.node_id for n in await store.revoked_nodes()] == ["n1", "n0"]
    assert (await store.revoked_nodes())[0] == first


async def test_revocation_list_keeps_the_newest(store: Store) -> None:
    assert await store.revocation_list() is None
    assert await store.save_revocation_list(5, b"crl-5")
    assert not await store.save_revocation_list(3, b"crl-3")
    assert not await store.save_revocation_list(5, b"crl-5-again")
    assert await store.revocation_list() == (5, b"crl-5")
    assert await store.save_revocation_list(7, b"crl-7")
    assert await store.revocation_list() == (7, b"crl-7")


@pytest.mark.parametrize("number", [-1, 2**63])
async def test_revocation_list_number_must_fit(store: Store, number: int) -> None:
    with pytest.raises(StoreError, match="CRL number"):
        await store.save_revocation_list(number, b"crl")
