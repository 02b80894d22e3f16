"""USB bundles between nodes that never link (issue 16, point 4).

HQ and a shelter each record 500 cases; HQ posts an announcement. A bundle walks
each way, the shelter's node writes its delivery receipt on import and its operator
acknowledges, a second bundle walks back: both stores hold the same events (equal
digests) and HQ sees the receipts that came on the stick. Importing again changes
nothing; a tampered byte or another deployment's bundle is refused whole with one
line, and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from loopback import loopback_config
from waits import AsyncWaitUntil

from meshdesk.bundles import BundleError, Bundles
from meshdesk.cases.chain import ChainWriter
from meshdesk.cases.model import Personal
from meshdesk.cli import main
from meshdesk.cli._notices import Session, notice_session
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.store import Checkpoint, StoredEvent, digest_of

CASES = 500  # per side: 1,000 cases cross


@asynccontextmanager
async def _node(home: NodeHome) -> AsyncIterator[tuple[Session, Bundles]]:
    async with notice_session(home) as s:

        async def imported(runs: list[tuple[list[StoredEvent], Checkpoint]]) -> None:
            await s.board.stored([e for events, _ in runs for e in events])

        yield s, Bundles(s.store, s.directory, s.kit, imported=imported)


async def _digest(home: NodeHome) -> str:
    async with _node(home) as (s, _):
        return digest_of(await s.store.event_hashes())


def _with_payloads(home: NodeHome) -> int:
    """Events of the (closed) store that keep sealed blobs beside their body."""
    with contextlib.closing(sqlite3.connect(home.store_path)) as db:
        row = db.execute("SELECT count(*) FROM events WHERE payloads IS NOT NULL").fetchone()
        return int(row[0])


async def _record(home: NodeHome, label: str) -> None:
    async with _node(home) as (s, _):
        for i in range(CASES):
            await s.book.open_case(
                op="佐藤", category="supplies", urgency="normal",
                personal=Personal(name=f"{label} {i}"),
            )  # fmt: skip


async def test_two_nodes_that_never_link_converge_by_bundles_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    city = await build_deployment(
        tmp_path / "city",
        "運搬市",
        [HomeSpec("本部", Role.HQ, site="市役所"), HomeSpec("避難所", Role.CENTER, site="体育館")],
        now=now,
    )
    hq, shelter = city.homes["本部"], city.homes["避難所"]
    await _record(hq, "本部")
    await _record(shelter, "避難所")
    async with _node(hq) as (s, bundles):
        posted = await s.board.announce(
            op="山田", title="給水は14時に体育館で", body=None, lang="ja", severity="severe"
        )
        to_shelter = await bundles.export(tmp_path / "to-shelter.bundle")
    assert to_shelter["events"] >= CASES
    async with _node(shelter) as (s, bundles):
        await bundles.export(tmp_path / "to-hq-1.bundle")
        got = await bundles.import_file(tmp_path / "to-shelter.bundle")
        assert got.new_events == to_shelter["events"]
        assert [a["id"] for a in await s.board.banner()] == [posted["id"]]
        await s.board.acknowledge(posted["id"], op="田中")
        back = await bundles.export(
            tmp_path / "to-hq-2.bundle", for_node=str(city.nodes["本部"].node_id)
        )
    assert back["authors"] >= 1
    async with _node(hq) as (s, bundles):
        await bundles.import_file(tmp_path / "to-hq-1.bundle")
        await bundles.import_file(tmp_path / "to-hq-2.bundle")
        view = await s.board.announcement_view(posted["id"], detail=True)
        assert len(await s.store.case_ids()) == 2 * CASES
        # The shelter's last bundle said what it holds: a bundle for it now carries
        # nothing (what it lacks), one for everyone everything.
        shelter_id = str(city.nodes["避難所"].node_id)
        assert (await bundles.export(tmp_path / "x.bundle", for_node=shelter_id))["events"] == 0
        everything = await bundles.export(tmp_path / "y.bundle")
        assert everything["events"] == len(await s.store.event_hashes())
    (row,) = view["sites"]["体育館"]
    assert row["delivered_at"] is not None
    assert row["read_by"] == "田中"
    assert view["not_delivered"] == []
    digest = await _digest(hq)
    assert digest == await _digest(shelter)
    # The sealed blobs kept beside the chain (personal blocks) came on the stick too.
    assert _with_payloads(hq) == _with_payloads(shelter) >= 2 * CASES

    # Importing again changes nothing.
    again = ["bundle", "import", str(tmp_path / "to-shelter.bundle"), "--home", str(shelter.path)]
    assert await asyncio.to_thread(main, again) == 0
    assert "Imported: 0 new of" in capsys.readouterr().out
    assert await _digest(shelter) == digest

    # One altered byte: refused whole, one line, nothing changes.
    data = bytearray((tmp_path / "to-shelter.bundle").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "bad.bundle").write_bytes(bytes(data))
    bad = ["bundle", "import", str(tmp_path / "bad.bundle"), "--home", str(shelter.path)]
    code = await asyncio.to_thread(main, bad)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1
    assert "refused, nothing imported" in err[0]
    assert await _digest(shelter) == digest

    # Another deployment's bundle: refused whole, naming the deployment.
    other = await build_deployment(
        tmp_path / "other", "他市", [HomeSpec("他本部", Role.HQ, site="他")], now=now
    )
    async with _node(other.homes["他本部"]) as (_, bundles):
        await bundles.export(tmp_path / "foreign.bundle")
    async with _node(shelter) as (_, bundles):
        with pytest.raises(BundleError, match="it is of deployment"):
            await bundles.import_file(tmp_path / "foreign.bundle")
    assert await _digest(shelter) == digest


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda b: b"NOT-A-BUNDLE" + b, "not a meshdesk bundle"),
        (lambda b: b[: len(b) - 30], "cut short"),
        (lambda b: b + b"\x00\x00\x00\x01\x90", "after its seal"),
        (lambda b: b[:16] + b"\x7f\xff\xff\xff" + b[16:], "a frame of 2147483647 bytes"),
        (lambda b: b[:16] + b"\x00\x00\x00\x03abc" + b[16:], "damaged"),
    ],
    ids=["magic", "truncated", "trailing", "huge-frame", "garbage-frame"],
)
async def test_a_damaged_bundle_is_refused_whole(
    tmp_path: Path, damage: Callable[[bytes], bytes], error: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    city = await build_deployment(
        tmp_path / "city",
        "運搬市",
        [HomeSpec("本部", Role.HQ, site="市役所"), HomeSpec("避難所", Role.CENTER, site="体育館")],
        now=now,
    )
    async with _node(city.homes["本部"]) as (s, bundles):
        await s.book.open_case(
            op="佐藤", category="supplies", urgency="normal", personal=Personal(name="一")
        )
        await bundles.export(tmp_path / "good.bundle")
    (tmp_path / "bad.bundle").write_bytes(damage((tmp_path / "good.bundle").read_bytes()))
    shelter = city.homes["避難所"]
    before = await _digest(shelter)
    async with _node(shelter) as (_, bundles):
        with pytest.raises(BundleError, match=error):
            await bundles.import_file(tmp_path / "bad.bundle")
    assert await _digest(shelter) == before


async def test_a_bundle_imported_by_a_running_node_goes_on_to_its_links(
    tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    city = await build_deployment(
        tmp_path,
        "運搬市",
        [
            HomeSpec("本部", Role.HQ, site="市役所"),
            HomeSpec("避難所", Role.CENTER, site="体育館"),
            HomeSpec("孤立所", Role.CENTER, site="山の学校"),  # no network reaches it
        ],
        now=dt.datetime.now(dt.UTC),
    )
    hq, shelter, cut_off = (city.homes[n] for n in ("本部", "避難所", "孤立所"))
    async with _node(cut_off) as (s, bundles):
        opened = await s.book.open_case(
            op="鈴木", category="medical", urgency="high", personal=Personal(name="山田太郎")
        )
        await bundles.export(tmp_path / "stick.bundle")
    async with Node(hq, loopback_config(hq, [])) as hq_node:
        peer = f"127.0.0.1:{hq_node.listener.port}"
        async with Node(shelter, loopback_config(shelter, [peer])) as node:
            result = await hq_node.serve_ops().run(
                "bundle_import", {"file": str(tmp_path / "stick.bundle")}
            )
            assert isinstance(result, dict)
            assert result["new_events"] >= 1

            async def arrived() -> bool:
                return opened.id in await node.store.case_ids()

            await async_wait_until(arrived, 15)


async def test_since_and_for_leave_out_what_the_target_has(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    city = await build_deployment(
        tmp_path / "city",
        "運搬市",
        [HomeSpec("本部", Role.HQ, site="市役所"), HomeSpec("避難所", Role.CENTER, site="体育館")],
        now=now,
    )
    async with _node(city.homes["本部"]) as (s, bundles):
        await s.book.open_case(
            op="佐藤", category="supplies", urgency="normal", personal=Personal(name="一")
        )
        hq = str(city.nodes["本部"].node_id)
        later = int((now + dt.timedelta(hours=1)).timestamp() * 1000)
        nothing_new = await bundles.export(tmp_path / "a.bundle", since_ms=later)
        assert (nothing_new["authors"], nothing_new["events"]) == (0, 0)
        everything = await bundles.export(tmp_path / "b.bundle", since_ms=0)
        assert (everything["authors"], everything["events"]) == (1, 1)
        assert (await bundles.export(tmp_path / "c.bundle", for_node=hq))["events"] == 0
        assert await bundles.node_id("本部") == hq
        with pytest.raises(UsageError, match="names 0 nodes"):
            await bundles.node_id("どこにもない")


async def test_a_bundle_that_forks_a_chain_or_leaves_a_gap_is_refused_whole(
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    city = await build_deployment(
        tmp_path / "city",
        "運搬市",
        [
            HomeSpec("本部", Role.HQ, site="市役所"),
            HomeSpec("避難所", Role.CENTER, site="体育館"),
            HomeSpec("分所", Role.CENTER, site="公民館"),
        ],
        now=now,
    )
    hq, shelter = city.homes["本部"], city.homes["避難所"]
    key = hq.load_identity(now=now).key
    author = f"{city.nodes['本部'].node_id}/AAAAAAAA"

    async def chain(home: NodeHome, bodies: list[bytes], received: list[int]) -> None:
        """The same chain name signed twice over (only a stolen key could do this)."""
        writer = ChainWriter(author, key, None)
        async with _node(home) as (s, _):
            for body, at in zip(bodies, received, strict=True):
                writer.append(hlc=1, case_id=None, kind=99, body=body)
                events, checkpoint = writer.commit()
                await s.store.append_run(events, checkpoint, received_at=at)

    await chain(hq, [b"a", b"b"], [1000, 5000])
    await chain(shelter, [b"a", b"X"], [1000, 1000])
    async with _node(hq) as (_, bundles):
        await bundles.export(tmp_path / "fork.bundle")
        await bundles.export(tmp_path / "gap.bundle", since_ms=2000)  # only seq 2
    before = await _digest(shelter)
    async with _node(shelter) as (_, bundles):
        with pytest.raises(BundleError, match="forks our chain at seq 2"):
            await bundles.import_file(tmp_path / "fork.bundle")
    assert await _digest(shelter) == before
    # A third node that never held the chain: seq 2 alone would leave a gap.
    async with _node(city.homes["分所"]) as (_, bundles):
        with pytest.raises(BundleError, match="skips seqs before 2"):
            await bundles.import_file(tmp_path / "gap.bundle")
