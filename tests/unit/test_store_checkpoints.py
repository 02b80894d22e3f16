"""Store schema 2: checkpoints stored with their runs, and the certificate directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshdesk.cases.chain import ChainWriter
from meshdesk.errors import StoreError
from meshdesk.store import MIGRATIONS, SCHEMA_VERSION, Checkpoint, Store

AUTHOR = "AUTHOR"


def run(n: int, head: tuple[int, bytes] | None = None, key: Ed25519PrivateKey | None = None):  # type: ignore[no-untyped-def]
    writer = ChainWriter(AUTHOR, key or Ed25519PrivateKey.generate(), head)
    for i in range(n):
        writer.append(hlc=i, case_id="c", kind=2, body=b"b%d" % i)
    return writer.commit()


async def test_version_1_database_migrates_with_its_events(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    events, _ = run(3)
    async with Store.open(path, create=True, migrations=MIGRATIONS[:1]) as old:
        await old.append_events(events, received_at=1)
    async with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert (await store.heads())[AUTHOR][0] == 3
        assert await store.checkpoints(AUTHOR) == []


async def test_run_and_checkpoint_are_stored_together(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    first, cp1 = run(4, key=key)
    async with Store.open(tmp_path / "s.db", create=True) as store:
        assert await store.append_run(first, cp1, received_at=5) == 4
        assert await store.append_run(first, cp1, received_at=6) == 0  # idempotent
        second, cp2 = run(2, head=(4, first[-1].hash), key=key)
        await store.append_run(second, cp2, received_at=7)
        assert await store.checkpoints(AUTHOR) == [cp1, cp2]
        assert await store.checkpoints(AUTHOR, after_seq=4) == [cp2]


async def test_a_checkpoint_off_the_chain_stores_nothing(tmp_path: Path) -> None:
    events, cp = run(3)
    bad = Checkpoint(cp.author, cp.seq, bytes(32), cp.sig)
    async with Store.open(tmp_path / "s.db", create=True) as store:
        with pytest.raises(StoreError):
            await store.append_run(events, bad, received_at=1)
        assert await store.heads() == {}
        with pytest.raises(StoreError, match="author only"):
            await store.append_run(events, Checkpoint("OTHER", 3, cp.hash, cp.sig), received_at=1)
        assert (await store.counts()).events == 0


async def test_checkpoints_are_append_only(tmp_path: Path) -> None:
    events, cp = run(1)
    async with Store.open(tmp_path / "s.db", create=True) as store:
        await store.append_run(events, cp, received_at=1)
    with sqlite3.connect(tmp_path / "s.db") as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM checkpoints")
    conn.close()


async def test_certificate_directory(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db", create=True) as store:
        assert await store.save_certificate("N1", b"der-1", seen_at=1)
        assert not await store.save_certificate("N1", b"der-1", seen_at=2)
        await store.save_certificate("N2", "証明書".encode(), seen_at=3)
        assert await store.certificates() == {"N1": b"der-1", "N2": "証明書".encode()}
