"""Erasure on a store written before references: old bodies hold their sealed blob.

The store is written by the old code path (schema 3, bodies that carry the sealed
personal block and note inline), then opened by today's meshdesk (schema 4). The old
case still reads; its erasure redacts the old bodies (``0xC1`` + hash), every chain
still verifies — here and at a node that receives the redacted run — and neither
database holds the ciphertext or a wrapped key any more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk.cases.book import CaseBook, case_aad
from meshdesk.cases.chain import (
    ChainWriter,
    UnsignedEvent,
    author_node,
    new_chain_author,
    verify_run,
)
from meshdesk.cases.events import is_redacted
from meshdesk.cases.hlc import make_hlc
from meshdesk.cases.ids import new_id
from meshdesk.cases.model import Personal
from meshdesk.cases.sealing import audience, seal
from meshdesk.cases.summary import CaseIndexing, case_store
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.identity import NodeInfo, Role
from meshdesk.store import MIGRATIONS, SCHEMA_VERSION, Store

NOW = dt.datetime.now(dt.UTC)
T0 = 1_795_300_000_000
NAME = "佐藤 一郎"


def old_body(fields: dict[str, object]) -> bytes:
    """A body as meshdesk wrote it before references: the sealed blob inline."""
    return bytes(msgpack.packb(fields, use_bin_type=True))


async def verified_copy(src: Store, dst: Store, keys: dict[str, Ed25519PublicKey]) -> int:
    """Every run of ``src`` verified as a receiving node does, stored in ``dst``."""
    copied = 0
    for author, (seq, _) in (await src.heads()).items():
        events = await src.events_after(author, 0, seq)
        head: tuple[int, bytes] | None = None
        for cp in await src.checkpoints(author):
            low = head[0] if head else 0
            run = [
                UnsignedEvent(e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash, e.payloads)
                for e in events
                if low < e.seq <= cp.seq
            ]
            verified = verify_run(author, head, run, cp, keys[author_node(author)])
            copied += await dst.append_run(verified, cp, received_at=1)
            head = (cp.seq, cp.hash)
    return copied


async def test_an_old_store_migrates_reads_and_erases_with_chains_intact(tmp_path: Path) -> None:
    specs = [HomeSpec("本部", Role.HQ, "市役所"), HomeSpec("shelter", Role.CENTER, "第一小学校")]
    homes = (await build_deployment(tmp_path, "旧市", specs, now=NOW)).homes
    kits = {name: home.load_identity(now=NOW) for name, home in homes.items()}
    directory = [kit.info for kit in kits.values()]
    keys = {str(k.info.node_id): k.key.public_key() for k in kits.values()}

    async def known() -> list[NodeInfo]:
        return directory

    shelter = kits["shelter"]
    me = str(shelter.node_id)
    people = audience(origin=me, consent=(), directory=directory)
    case_id = new_id(T0)
    personal = seal(Personal(name=NAME).to_msgpack(), people, aad=case_aad(case_id, "personal"))
    note = seal("古い記録".encode(), people, aad=case_aad(case_id, "note"))
    old = tmp_path / "old.db"
    async with Store.open(old, create=True, migrations=MIGRATIONS[:3], indexer=CaseIndexing()):
        pass
    async with Store.open(old, migrations=MIGRATIONS[:3], indexer=CaseIndexing()) as store:
        assert store.schema_version == 3
        chain = ChainWriter(new_chain_author(me), shelter.key, None)
        opening = {"op": "佐藤", "site": "第一小学校", "category": "housing", "urgency": "high",
                   "consent": [], "department": None, "sealed": personal}  # fmt: skip
        chain.append(hlc=make_hlc(T0), case_id=case_id, kind=1, body=old_body(opening))
        noted = {"op": "佐藤", "note_id": new_id(T0 + 1), "sealed": note}
        chain.append(hlc=make_hlc(T0 + 1), case_id=case_id, kind=3, body=old_body(noted))
        events, checkpoint = chain.commit()
        await store.append_run(events, checkpoint, received_at=T0)
    assert personal in old.read_bytes() + _wal(old)

    clock = iter(range(T0 + 10_000, T0 + 10_000_000, 1000))
    async with case_store(old) as store:
        assert store.schema_version == SCHEMA_VERSION  # migrated to the newest
        book = CaseBook(store, shelter, directory=known, wall_ms=lambda: next(clock))
        view = book.view(await book.state(case_id))
        assert view["name"] == NAME  # the old inline form still reads
        assert view["notes"][0]["text"] == "古い記録"
        state = await book.steward.erase(case_id, op="佐藤", reason="本人の申出")
        assert book.view(state)["readable"] is False
        stored = {(e.author, e.seq): e for e in await store.events_for_case(case_id)}
        assert all(is_redacted(stored[e.author, e.seq].body) for e in events)
        assert [e.hash for e in events] == [stored[e.author, e.seq].hash for e in events]
        async with case_store(homes["本部"].store_path) as hq:
            assert await verified_copy(store, hq, keys) == len(stored)
            hq_book = CaseBook(hq, kits["本部"], directory=known, wall_ms=lambda: next(clock))
            assert hq_book.view(await hq_book.state(case_id))["readable"] is False
            history = await hq_book.steward.history(case_id)
            assert [r["action"] for r in history] == [
                "opened", "note added", "erased", "erasure applied"
            ]  # fmt: skip
            assert history[0]["detail"] == "(redacted by the erasure)"
        # A redaction is the only change the database allows: any other, even to an
        # event of the erased case, is refused by the database itself.
        with (
            contextlib.closing(sqlite3.connect(old)) as db,
            pytest.raises(sqlite3.IntegrityError, match="append-only"),
        ):
            db.execute("UPDATE events SET body = x'00' WHERE kind = 31")
    _check_no_secrets([old, homes["本部"].store_path], personal, note)


def _wal(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def _check_no_secrets(paths: list[Path], *blobs: bytes) -> None:
    secrets = []
    for blob in blobs:
        sealed = msgpack.unpackb(blob, raw=False)
        secrets += [blob, sealed["c"], *(wrapped for _, wrapped in sealed["k"].values())]
    for path in paths:
        data = path.read_bytes() + _wal(path)
        assert [s[:8] for s in secrets if s in data] == [], path


async def test_an_erasure_by_a_node_that_may_not_erase_is_ignored(tmp_path: Path) -> None:
    """A desk's signed CASE_ERASED (written past the check, as a hostile node could)
    is kept, since it is signed, but no node applies or counts it; HQ still erases."""
    specs = [
        HomeSpec("本部", Role.HQ, "市役所"),
        HomeSpec("shelter", Role.CENTER, "第一小学校"),
        HomeSpec("welfare", Role.DESK, "市役所", ("福祉課",)),
    ]
    homes = (await build_deployment(tmp_path, "権限市", specs, now=NOW)).homes
    kits = {name: home.load_identity(now=NOW) for name, home in homes.items()}
    keys = {str(k.info.node_id): k.key.public_key() for k in kits.values()}

    async def known() -> list[NodeInfo]:
        return [kit.info for kit in kits.values()]

    clock = iter(range(T0, T0 + 10_000_000, 1000))
    async with contextlib.AsyncExitStack() as stack:
        books, stores = {}, {}
        for name, home in homes.items():
            store = stores[name] = await stack.enter_async_context(case_store(home.store_path))
            books[name] = CaseBook(store, kits[name], directory=known, wall_ms=lambda: next(clock))
        opened = await books["shelter"].open_case(
            op="佐藤", category="housing", urgency="high", personal=Personal(name=NAME)
        )
        case_id = opened.id
        await verified_copy(books["shelter"]._store, books["welfare"]._store, keys)
        await books["welfare"].edit(
            case_id, "田中", lambda w, s: w.erase(s, "勝手に", wall_ms=next(clock))
        )
        for name in ("shelter", "welfare"):
            await verified_copy(books[name]._store, books["本部"]._store, keys)
        hq = books["本部"]
        assert await hq.steward.apply_erasure(case_id) is False
        state = await hq.state(case_id)
        assert hq.view(state)["name"] == NAME
        assert await hq.steward.erasure_status(state) is None
        done = await hq.steward.erase(case_id, op="本部", reason="本人の申出")
        assert hq.personal(done) is None
        status = await hq.steward.erasure_status(done)
        assert status is not None
        assert status["erased"] == 1
