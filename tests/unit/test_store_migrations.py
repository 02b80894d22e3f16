"""Opening a database: schema versions, migrations, and refusing what we must not touch."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import aiosqlite
import pytest
from waits import AsyncWaitUntil

from meshdesk.errors import StoreError
from meshdesk.store import MIGRATIONS, SCHEMA_VERSION, ZERO_HASH, Migration, Store, StoredEvent
from meshdesk.store._schema import APPLICATION_ID

#: Version of the first migration this meshdesk does not know yet.
NEXT = SCHEMA_VERSION + 1

TABLES = {
    "events",
    "meta",
    "issued_nodes",
    "revocation_lists",
    "revoked",
    "checkpoints",
    "certificates",
    "case_index",
    "case_counts",
    "case_index_todo",
    "case_terms",
    "case_search",
    "erased",
    "search_todo",
}
SIDE_FILES = ("-wal", "-shm", "-journal")


def raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A plain sqlite3 connection, bypassing the Store."""
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


def pragma(path: Path, name: str) -> int:
    with raw(path) as conn:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def pragma_in_header(path: Path, name: str) -> int:
    """A header field as stored in the main file, without SQLite replaying the WAL."""
    offset = {"user_version": 60, "application_id": 68}[name]
    with path.open("rb") as file:
        return int.from_bytes(file.read(100)[offset : offset + 4], "big")


def tables(path: Path) -> set[str]:
    with raw(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Replace the file's bytes with ``change(old bytes)``."""
    path.write_bytes(change(path.read_bytes() if path.exists() else b""))


def side_files(path: Path) -> list[str]:
    return [suffix for suffix in SIDE_FILES if path.with_name(path.name + suffix).exists()]


def make_raw_db(path: Path, *statements: str) -> None:
    """A database written without the Store, then closed (so no -wal is left)."""
    with raw(path) as conn:
        for statement in statements:
            conn.execute(statement)


def chain(author: str, count: int) -> list[StoredEvent]:
    events, prev = [], ZERO_HASH
    for seq in range(1, count + 1):
        body = os.urandom(200)  # incompressible, so the file has many pages
        digest = hashlib.sha256(prev + body).digest()
        events.append(StoredEvent(author, seq, seq, "case-1", 1, body, prev, digest))
        prev = digest
    return events


async def make_store_db(path: Path, events: int = 0) -> None:
    async with Store.open(path, create=True) as store:
        if events:
            await store.append_events(chain("node-a", events), 0)


async def assert_refused(path: Path, match: str, **options: object) -> None:
    """Opening ``path`` fails with ``match`` and leaves the file exactly as it was."""
    before = sha256(path)
    side_before = side_files(path)
    with pytest.raises(StoreError, match=match):
        async with Store.open(path, **options):  # type: ignore[arg-type]
            pass
    assert sha256(path) == before
    assert side_files(path) == side_before


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


# -- migrating -----------------------------------------------------------------------


async def test_new_database_gets_the_current_schema(db_path: Path) -> None:
    async with Store.open(db_path, create=True) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert pragma(db_path, "user_version") == SCHEMA_VERSION
    assert pragma(db_path, "application_id") == APPLICATION_ID
    assert tables(db_path) == TABLES


async def test_empty_file_is_migrated_from_version_zero(db_path: Path) -> None:
    rewrite(db_path, lambda _: b"")
    async with Store.open(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert tables(db_path) == TABLES


async def test_version_zero_sqlite_database_is_migrated(db_path: Path) -> None:
    make_raw_db(db_path, "PRAGMA page_size = 8192", "VACUUM")
    assert pragma(db_path, "user_version") == 0
    async with Store.open(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert tables(db_path) == TABLES


async def test_reopen_runs_no_migration_again(db_path: Path) -> None:
    runs: list[int] = []

    async def step(db: aiosqlite.Connection) -> None:
        runs.append(NEXT)
        await db.execute("INSERT INTO meta (key, value) VALUES ('migrated', x'01')")

    migrations: Sequence[Migration] = [*MIGRATIONS, (NEXT, step)]
    for _ in range(3):
        async with Store.open(db_path, create=True, migrations=migrations) as store:
            assert store.schema_version == NEXT
            assert await store.get_meta("migrated") == b"\x01"
    assert runs == [NEXT]
    assert pragma(db_path, "user_version") == NEXT


async def test_future_migration_then_older_meshdesk_is_refused(db_path: Path) -> None:
    await make_store_db(db_path)
    future = [*MIGRATIONS, (NEXT, "CREATE TABLE attachments (id TEXT PRIMARY KEY);")]
    async with Store.open(db_path, migrations=future) as store:
        assert store.schema_version == NEXT
    assert tables(db_path) == {*TABLES, "attachments"}
    await assert_refused(
        db_path,
        f"^database {re.escape(str(db_path))} has schema version {NEXT}, this meshdesk knows up to "
        f"{SCHEMA_VERSION}; upgrade meshdesk$",
    )


async def test_failed_migration_is_rolled_back(db_path: Path) -> None:
    await make_store_db(db_path)
    broken = [*MIGRATIONS, (NEXT, "CREATE TABLE half (a); CREATE TABLE broken (")]
    with pytest.raises(StoreError, match=rf"cannot migrate database .* to schema version {NEXT}"):
        async with Store.open(db_path, migrations=broken):
            pass
    assert pragma(db_path, "user_version") == SCHEMA_VERSION
    assert tables(db_path) == TABLES


async def test_failed_python_migration_is_rolled_back(db_path: Path) -> None:
    await make_store_db(db_path)

    async def step(db: aiosqlite.Connection) -> None:
        await db.execute("CREATE TABLE half (a)")
        raise StoreError("cannot convert old cases")

    with pytest.raises(StoreError, match="cannot convert old cases"):
        async with Store.open(db_path, migrations=[*MIGRATIONS, (NEXT, step)]):
            pass
    assert pragma(db_path, "user_version") == SCHEMA_VERSION
    assert tables(db_path) == TABLES


@pytest.mark.parametrize(
    "migrations",
    [[], [(2, "SELECT 1")], [(1, "SELECT 1"), (3, "SELECT 1")], [(1, "SELECT 1")] * 2],
)
def test_migration_versions_must_count_from_one(
    tmp_path: Path, migrations: Sequence[Migration]
) -> None:
    with pytest.raises(ValueError, match="migration versions"):
        Store(tmp_path / "node.db", migrations=migrations)


# -- refusing --------------------------------------------------------------------


async def test_newer_database_is_refused_untouched(db_path: Path) -> None:
    make_raw_db(db_path, "CREATE TABLE events (x)", "PRAGMA user_version = 9")
    await assert_refused(
        db_path,
        f"^database {re.escape(str(db_path))} has schema version 9, this meshdesk knows up to "
        f"{SCHEMA_VERSION}; upgrade meshdesk$",
    )


async def test_newer_version_in_an_unreplayed_wal_is_refused(tmp_path: Path) -> None:
    """The header check cannot see a version still in the WAL; SQLite's check can."""
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    await make_store_db(live)
    with raw(live) as conn:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA user_version = 9")
        # Copy while the connection is open: the copy has a hot WAL, an old header.
        shutil.copyfile(live, copy)
        shutil.copyfile(live.with_name("live.db-wal"), copy.with_name("copy.db-wal"))
    assert pragma_in_header(copy, "user_version") == SCHEMA_VERSION
    with pytest.raises(StoreError, match="has schema version 9"):
        async with Store.open(copy):
            pass


async def test_random_bytes_are_refused_untouched(db_path: Path) -> None:
    rewrite(db_path, lambda _: os.urandom(64 * 1024))
    await assert_refused(
        db_path, f"^{re.escape(str(db_path))} is not a usable meshdesk database: not an SQLite"
    )


async def test_short_file_is_refused_untouched(db_path: Path) -> None:
    rewrite(db_path, lambda _: b"SQLite format 3\x00")
    await assert_refused(db_path, "not an SQLite database")


async def test_truncated_database_is_refused_untouched(db_path: Path) -> None:
    await make_store_db(db_path, events=500)
    rewrite(db_path, lambda data: data[: len(data) // 2])
    await assert_refused(db_path, "truncated")


async def test_damaged_page_is_found_by_quick_check(db_path: Path) -> None:
    await make_store_db(db_path, events=500)

    def damage(data: bytes) -> bytes:
        page = int.from_bytes(data[16:18], "big")
        start = page * 3  # page 4: inside the events b-tree
        return data[:start] + os.urandom(512) + data[start + 512 :]

    rewrite(db_path, damage)
    await assert_refused(db_path, "is not a usable meshdesk database: damaged")


async def test_other_applications_database_is_refused_untouched(db_path: Path) -> None:
    make_raw_db(db_path, "CREATE TABLE photos (x)", "PRAGMA application_id = 42")
    await assert_refused(db_path, "another application")


async def test_foreign_sqlite_database_without_version_is_refused(db_path: Path) -> None:
    make_raw_db(db_path, "CREATE TABLE photos (x)")
    await assert_refused(db_path, "holds tables but no meshdesk schema version")


async def test_a_large_database_is_checked_in_the_background(
    db_path: Path, caplog: pytest.LogCaptureFixture, async_wait_until: AsyncWaitUntil
) -> None:
    await make_store_db(db_path, events=500)

    def damage(data: bytes) -> bytes:
        page = int.from_bytes(data[16:18], "big")
        start = page * 3  # page 4: inside the events b-tree
        return data[:start] + os.urandom(512) + data[start + 512 :]

    rewrite(db_path, damage)
    # above the limit: ready at once, the damage found meanwhile (an error, not a crash)
    async with Store.open(db_path, check_in_background_above=0) as store:
        await async_wait_until(lambda: store.damage is not None, 10, message="the verdict")
        assert "damaged" in str(store.damage)
    assert any(r.levelname == "ERROR" and "damaged" in r.getMessage() for r in caplog.records)
    with pytest.raises(StoreError, match="damaged"):  # below it: refused before ready
        await Store.open(db_path, check_in_background_above=2**40).start()
