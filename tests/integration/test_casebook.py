"""Cases across nodes: sealed to the audience, verified on receipt, readable where consented."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding

from meshdesk.cases.book import CaseBook
from meshdesk.cases.chain import UnsignedEvent, author_node, verify_run
from meshdesk.cases.model import Personal
from meshdesk.cases.summary import case_store
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import SyncError, UsageError
from meshdesk.identity import NodeInfo, NodeKit, Role
from meshdesk.store import CaseQuery, Store

NOW = dt.datetime.now(dt.UTC)
NODES = {
    "本部": (Role.HQ, ()),
    "shelter": (Role.CENTER, ()),
    "welfare": (Role.DESK, ("福祉課",)),
    "housing": (Role.DESK, ("住宅課",)),
    "relay": (Role.CENTER, ()),
}
CITIZEN = Personal(
    name="山田 花子", furigana="やまだ はなこ", phone="090-1234-5678", shelter="第一小学校"
)


@dataclass
class Site:
    kit: NodeKit
    store: Store
    book: CaseBook


async def replicate(src: Store, dst: Store, keys: dict[str, Ed25519PublicKey]) -> int:
    """Copy what ``dst`` lacks, verifying every run as a receiving node must."""
    copied = 0
    theirs = await dst.heads()
    for author, (seq, _) in (await src.heads()).items():
        head = theirs.get(author)
        after = head[0] if head else 0
        if after >= seq:
            continue
        events = await src.events_after(author, after, 100_000)
        for checkpoint in await src.checkpoints(author, after):
            run = [e for e in events if head_seq(head) < e.seq <= checkpoint.seq]
            unsigned = [
                UnsignedEvent(e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash) for e in run
            ]
            verified = verify_run(author, head, unsigned, checkpoint, keys[author_node(author)])
            copied += await dst.append_run(verified, checkpoint, received_at=1)
            head = (checkpoint.seq, checkpoint.hash)
    return copied


def head_seq(head: tuple[int, bytes] | None) -> int:
    return head[0] if head else 0


@pytest.fixture
async def sites(tmp_path: Path) -> AsyncIterator[dict[str, Site]]:
    specs = [
        HomeSpec(name, role, "市役所" if role is Role.HQ else name, depts)
        for name, (role, depts) in NODES.items()
    ]
    homes = dict((await build_deployment(tmp_path, "秋田市", specs, now=NOW)).homes)
    kits = {name: home.load_identity(now=NOW) for name, home in homes.items()}
    directory = [k.info for k in kits.values()]

    async def known() -> list[NodeInfo]:
        return directory

    clock = iter(range(1_795_300_000_000, 1_795_400_000_000, 1000))
    async with AsyncExitStack() as stack:
        out = {}
        for name, home in homes.items():
            store = await stack.enter_async_context(case_store(home.store_path))
            book = CaseBook(store, kits[name], directory=known, wall_ms=lambda: next(clock))
            out[name] = Site(kits[name], store, book)
        yield out


def keys(sites: dict[str, Site]) -> dict[str, Ed25519PublicKey]:
    out = {}
    for site in sites.values():
        key = x509.load_der_x509_certificate(site.kit.cert.public_bytes(Encoding.DER)).public_key()
        assert isinstance(key, Ed25519PublicKey)
        out[str(site.kit.node_id)] = key
    return out


async def spread(sites: dict[str, Site], src: str) -> None:
    for name, site in sites.items():
        if name != src:
            await replicate(sites[src].store, site.store, keys(sites))


async def test_case_is_readable_only_by_its_audience(sites: dict[str, Site]) -> None:
    state = await sites["shelter"].book.open_case(
        op="佐藤", category="welfare_eldercare", urgency="high", personal=CITIZEN,
        summary="母の介護と子育てについて相談", consent=["福祉課"],
    )  # fmt: skip
    await spread(sites, "shelter")
    views = {name: site.book.view(await site.book.state(state.id)) for name, site in sites.items()}
    for name in ("shelter", "本部", "welfare"):
        assert views[name]["readable"], name
        assert views[name]["name"] == "山田 花子"
        notes = views[name]["notes"]
        assert isinstance(notes, list)
        assert notes[0]["text"] == "母の介護と子育てについて相談"
    for name in ("housing", "relay"):  # they hold the case, sealed
        assert not views[name]["readable"], name
        assert views[name]["personal"] is None
        assert views[name]["notes"][0]["text"] is None  # type: ignore[index]
        assert views[name]["urgency"] == "high"  # triage metadata stays readable
        assert views[name]["category"] == "welfare_eldercare"


async def test_new_consent_is_granted_by_an_audience_member(sites: dict[str, Site]) -> None:
    state = await sites["shelter"].book.open_case(
        op="佐藤", category="housing", urgency="normal", personal=CITIZEN, consent=[]
    )
    await sites["shelter"].book.add_note(state.id, op="佐藤", text="屋根が壊れた")
    await spread(sites, "shelter")
    housing = sites["housing"].book
    assert not housing.view(await housing.state(state.id))["readable"]
    await sites["本部"].book.add_consent(state.id, op="本部長", department="住宅課")
    await spread(sites, "本部")
    view = housing.view(await housing.state(state.id))
    assert view["readable"]
    assert view["notes"][0]["text"] == "屋根が壊れた"  # type: ignore[index]
    assert not sites["relay"].book.view(await sites["relay"].book.state(state.id))["readable"]


async def test_edits_merge_and_conflicts_stay_visible(sites: dict[str, Site]) -> None:
    state = await sites["shelter"].book.open_case(
        op="佐藤", category="medical", urgency="normal", personal=CITIZEN
    )
    await spread(sites, "shelter")
    await sites["shelter"].book.set_field(state.id, op="佐藤", field="urgency", value="high")
    await sites["本部"].book.set_field(state.id, op="鈴木", field="urgency", value="immediate")
    await spread(sites, "shelter")
    await spread(sites, "本部")
    states = [await site.book.state(state.id) for site in sites.values()]
    assert all(s == states[0] for s in states)  # every replica folds to the same state
    conflicts = sites["relay"].book.view(states[0])["conflicts"]
    assert isinstance(conflicts, list)
    assert {c["value"] for c in conflicts[0]["candidates"]} == {"high", "immediate"}
    await sites["本部"].book.resolve_conflict(
        state.id, op="鈴木", field="urgency", value="immediate"
    )
    await spread(sites, "本部")
    resolved = sites["shelter"].book.view(await sites["shelter"].book.state(state.id))
    assert resolved["conflicts"] == []
    assert resolved["urgency"] == "immediate"


async def test_invalid_operations_change_nothing(sites: dict[str, Site]) -> None:
    book = sites["shelter"].book
    state = await book.open_case(op="佐藤", category="other", urgency="low", personal=CITIZEN)
    before = await sites["shelter"].store.counts()
    await book.set_status(state.id, op="佐藤", status="resolved")
    with pytest.raises(UsageError, match="cannot go from resolved to referred"):
        await book.set_status(state.id, op="佐藤", status="referred")
    with pytest.raises(UsageError, match="no case"):
        await book.resolve_id("ffffffff")
    with pytest.raises(UsageError):
        await book.set_field(state.id, op="佐藤", field="category", value="not-a-category")
    with pytest.raises(UsageError, match="operator"):
        await book.add_note(state.id, op=" ", text="x")
    after = await sites["shelter"].store.counts()
    assert after.events == before.events + 1  # only the valid status change
    assert await book.resolve_id(state.id[:8]) == state.id


async def test_tampered_replica_data_is_refused(sites: dict[str, Site]) -> None:
    await sites["shelter"].book.open_case(
        op="佐藤", category="other", urgency="low", personal=CITIZEN
    )
    src, dst = sites["shelter"].store, sites["relay"].store
    (author,) = await src.heads()  # the shelter's chain (one per book)
    assert author_node(author) == str(sites["shelter"].kit.node_id)
    events = await src.events_after(author, 0, 100)
    checkpoint = (await src.checkpoints(author))[0]
    forged = [
        UnsignedEvent(e.seq, e.hlc, e.case_id, e.kind, e.body + b"!", e.prev_hash) for e in events
    ]
    with pytest.raises(SyncError):
        verify_run(author, None, forged, checkpoint, keys(sites)[author_node(author)])
    assert (await dst.counts()).events == 0


async def test_a_note_by_another_node_is_sealed_to_the_case_audience(
    sites: dict[str, Site],
) -> None:
    state = await sites["shelter"].book.open_case(
        op="佐藤", category="welfare_eldercare", urgency="normal", personal=CITIZEN,
        consent=["福祉課"],
    )  # fmt: skip
    await spread(sites, "shelter")
    await sites["welfare"].book.add_note(state.id, op="福祉 高橋", text="訪問を手配した")
    await spread(sites, "welfare")
    for name in ("shelter", "本部", "welfare"):  # the origin reads a desk's note too
        view = sites[name].book.view(await sites[name].book.state(state.id))
        assert view["notes"][0]["text"] == "訪問を手配した", name  # type: ignore[index]
    relay = sites["relay"].book.view(await sites["relay"].book.state(state.id))
    assert relay["notes"][0]["text"] is None  # type: ignore[index]


async def _names_found(book: CaseBook, word: str) -> list[object]:
    await book.listing.index_search()
    page = await book.listing.page(CaseQuery(), search=word)
    return [c["name"] for c in page["cases"]]  # type: ignore[index,union-attr]


async def test_name_search_finds_only_what_this_node_may_read(sites: dict[str, Site]) -> None:
    state = await sites["shelter"].book.open_case(
        op="佐藤", category="housing", urgency="high", personal=CITIZEN, consent=[]
    )
    await spread(sites, "shelter")
    assert await _names_found(sites["本部"].book, "山田") == ["山田 花子"]
    assert await _names_found(sites["housing"].book, "山田") == []  # sealed from housing
    assert await _names_found(sites["relay"].book, "やまだ") == []
    await sites["本部"].book.add_consent(state.id, op="本部長", department="住宅課")
    await spread(sites, "本部")
    # the key grant changed what housing may read: its search terms are made again
    assert await _names_found(sites["housing"].book, "やまだ") == ["山田 花子"]


async def test_lists_show_a_conflict_with_its_candidates(sites: dict[str, Site]) -> None:
    state = await sites["shelter"].book.open_case(
        op="佐藤", category="housing", urgency="normal", personal=CITIZEN
    )
    await spread(sites, "shelter")
    await sites["shelter"].book.set_field(state.id, op="佐藤", field="urgency", value="high")
    await sites["本部"].book.set_field(state.id, op="本部長", field="urgency", value="low")
    await spread(sites, "shelter")
    await spread(sites, "本部")
    page = await sites["本部"].book.listing.page(CaseQuery(conflicts=True))
    cases = page["cases"]
    assert isinstance(cases, list)
    assert [c["id"] for c in cases] == [state.id]
    (conflict,) = cases[0]["conflicts"]
    assert conflict["field"] == "urgency"
    assert {c["value"] for c in conflict["candidates"]} == {"high", "low"}
    assert page == await sites["本部"].book.listing.page(CaseQuery(conflicts=True))  # cached


async def test_a_listed_case_shows_a_conflict_made_by_an_older_write_arriving_late(
    sites: dict[str, Site],
) -> None:
    state = await sites["shelter"].book.open_case(
        op="佐藤", category="housing", urgency="normal", personal=CITIZEN
    )
    await spread(sites, "shelter")
    # The shelter writes first (an older HLC) but is cut off; HQ writes after it.
    await sites["shelter"].book.set_field(state.id, op="佐藤", field="urgency", value="high")
    await sites["本部"].book.set_field(state.id, op="本部長", field="urgency", value="low")
    listing = sites["本部"].book.listing
    before = await listing.page(CaseQuery())
    assert before["cases"][0]["conflicts"] == []  # type: ignore[index]
    await spread(sites, "shelter")  # the older write arrives: the newest time stays HQ's
    page = await listing.page(CaseQuery())
    (conflict,) = page["cases"][0]["conflicts"]  # type: ignore[index]
    assert {c["value"] for c in conflict["candidates"]} == {"high", "low"}
