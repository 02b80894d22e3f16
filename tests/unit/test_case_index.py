"""The case index: a pure summary of each case's events, kept by the store.

Properties, on histories drawn by Hypothesis (tests/histories.py):

- :func:`summarise` (a line read off the last writes, else the fold) gives exactly
  what the full fold of every event gives, in any order, undecodable events left out;
- a store keeping the index while runs arrive in any interleaving holds the same
  rows as the index rebuilt from its events, and as a fresh store given every event
  at once.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from histories import AUTHORS, PROPERTY, Scenario, Sim, scenarios
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.cases.chain import event_hash
from meshdesk.cases.events import EventKind
from meshdesk.cases.fold import Event, fold
from meshdesk.cases.summary import (
    STATUS_RANK,
    UNKNOWN_RANK,
    URGENCY_RANK,
    case_store,
    fold_run,
    personal_digest,
    run_rank,
    summarise,
)
from meshdesk.store import ZERO_HASH, CaseQuery, CaseSummary, Checkpoint, Store, StoredEvent

#: A body no decoder accepts (not a msgpack map).
GARBAGE = b"\xc1"


def stored(events: Iterable[Event]) -> list[StoredEvent]:
    """Decoded events back as the store keeps them (hashes do not matter here)."""
    return [
        StoredEvent(
            e.author, e.seq, e.hlc, e.case_id, int(e.kind), e.payload.encode(), ZERO_HASH, ZERO_HASH
        )
        for e in events
    ]


def reference(case_id: str, events: Sequence[StoredEvent]) -> CaseSummary:
    """The row by the definition: the full fold of every event that decodes."""
    decoded = []
    for e in events:
        try:
            decoded.append(Event.from_stored(e))
        except Exception:
            continue
    updated = max(e.hlc for e in events)
    grants = sum(1 for e in events if e.kind == EventKind.KEY_GRANT)
    if not decoded:
        return summarise(case_id, events)  # nothing but envelope facts
    state = fold(decoded)
    urgency = "" if state.urgency is None else str(state.urgency)
    status = "" if state.status is None else str(state.status)
    return CaseSummary(
        case_id=case_id,
        opened=state.opened,
        created_hlc=state.created_hlc or min(e.hlc for e in events),
        updated_hlc=updated,
        events=len(events),
        origin=state.origin or "",
        site=state.site or "",
        category="" if state.category is None else str(state.category),
        urgency=urgency,
        urgency_rank=URGENCY_RANK.get(urgency, UNKNOWN_RANK),
        status=status,
        status_rank=STATUS_RANK.get(status, UNKNOWN_RANK),
        department=state.department or "",
        consent=state.consent,
        referrals=tuple((r.department, str(r.state)) for r in state.referrals),
        conflicts=tuple(c.field for c in state.conflicts),
        personal=personal_digest(state.personal_sealed),
        grants=grants,
    )


@PROPERTY
@given(scenarios(), st.data())
def test_summary_is_the_fold_of_the_events(scenario: Scenario, data: st.DataObject) -> None:
    for events in scenario.reordered:
        rows = list({(e.author, e.seq): e for e in stored(events)}.values())
        case_id = rows[0].case_id
        assert case_id is not None
        if data.draw(st.booleans()):  # an author signed a body nobody can read
            bad = data.draw(st.sampled_from(rows))
            rows.append(
                StoredEvent(
                    bad.author,
                    10_000,
                    bad.hlc + 1,
                    case_id,
                    EventKind.FIELD_SET,
                    GARBAGE,
                    ZERO_HASH,
                    ZERO_HASH,
                )
            )
        assert summarise(case_id, rows) == reference(case_id, rows)
        # As sync works out each run: the rank it is sent by and the same row, from
        # one decoding (a body that does not decode sets no urgency in either).
        rank, folded = fold_run(rows)
        assert folded == {case_id: reference(case_id, rows)}
        assert rank == run_rank(rows)


def test_summary_refuses_events_of_another_case() -> None:
    a, b = (
        StoredEvent(
            AUTHORS[0],
            i,
            1,
            f"0190a1b2-0000-7000-8000-00000000000{i}",
            1,
            GARBAGE,
            ZERO_HASH,
            ZERO_HASH,
        )
        for i in (1, 2)
    )
    with pytest.raises(ValueError, match="another case"):
        summarise(str(a.case_id), [a, b])
    with pytest.raises(ValueError, match="at least one"):
        summarise(str(a.case_id), [])


# -- the store keeps it ------------------------------------------------------------------


def chains(histories: Sequence[Scenario]) -> dict[str, list[StoredEvent]]:
    """Every author's events with real hash chains, seq order."""
    by_author: dict[str, list[Event]] = {}
    for history in histories:
        union = {e.ref: e for events in history.sets for e in events}
        for event in union.values():
            by_author.setdefault(event.author, []).append(event)
    out: dict[str, list[StoredEvent]] = {}
    for author, events in by_author.items():
        prev, chain = ZERO_HASH, []
        for e in sorted(events, key=lambda e: e.seq):
            body = e.payload.encode()
            digest = event_hash(author, e.seq, e.hlc, e.case_id, int(e.kind), body, prev)
            chain.append(
                StoredEvent(author, e.seq, e.hlc, e.case_id, int(e.kind), body, prev, digest)
            )
            prev = digest
        out[author] = chain
    return out


async def rows_of(store: Store) -> dict[str, CaseSummary]:
    page = await store.index.page(CaseQuery(limit=1000))
    assert page is not None
    assert not page.more_after
    return {row.case_id: row for row in page.rows}


def runs_of(batch: Sequence[StoredEvent]) -> list[tuple[list[StoredEvent], Checkpoint]]:
    """A batch as runs of one author each, ended by a checkpoint (signature unchecked
    by the store)."""
    runs: list[list[StoredEvent]] = []
    for event in batch:
        if runs and runs[-1][-1].author == event.author:
            runs[-1].append(event)
        else:
            runs.append([event])
    return [(r, Checkpoint(r[-1].author, r[-1].seq, r[-1].hash, bytes(64))) for r in runs]


def epoch_authors(case: int) -> list[str]:
    """Chains of their own per case (``NODE-ID/EPOCH``), so cases share a store."""
    return [f"{author}/CASE{'ABC'[case]}AA{'XYZ'[i]}" for i, author in enumerate(AUTHORS)]


@settings(PROPERTY, max_examples=40)
@given(
    st.integers(1, 3).flatmap(
        lambda cases: st.tuples(
            *(scenarios(max_steps=12, authors=epoch_authors(i)) for i in range(cases))
        )
    ),
    st.data(),
)
def test_incremental_index_equals_rebuilt_and_fresh(
    histories: tuple[Scenario, ...], data: st.DataObject
) -> None:
    all_chains = chains(histories)
    # Runs arrive as they would from peers: each step stores the next few events of
    # some chains (continuing where each left off), all in one transaction.
    steps: list[list[StoredEvent]] = []
    taken = dict.fromkeys(all_chains, 0)
    while any(taken[a] < len(c) for a, c in all_chains.items()):
        batch: list[StoredEvent] = []
        for author in data.draw(st.lists(st.sampled_from(sorted(all_chains)), min_size=1)):
            n = data.draw(st.integers(1, 3))
            batch += all_chains[author][taken[author] : taken[author] + n]
            taken[author] = min(len(all_chains[author]), taken[author] + n)
        if batch:
            steps.append(batch)

    async def run(folder: Path) -> None:
        async with case_store(folder / "a.db", create=True) as store:
            for batch in steps:
                await store.append_events(batch, received_at=1)
            incremental = await rows_of(store)
            await store.rebuild_case_index()
            rebuilt = await rows_of(store)
        # As sync stores them: runs with checkpoints, grouped, each folded beforehand
        # (a case that two runs of a group touch, or one already indexed, is folded
        # again in the transaction).
        async with case_store(folder / "c.db", create=True) as synced:
            for batch in steps:
                runs = runs_of(batch)
                folded = [synced.fold_run(events)[1] for events, _ in runs]
                await synced.append_runs(runs, received_at=1, folded=folded)
            assert await rows_of(synced) == incremental
        async with case_store(folder / "b.db", create=True) as fresh:
            await fresh.append_events([e for c in all_chains.values() for e in c], received_at=1)
            at_once = await rows_of(fresh)
        assert incremental == rebuilt == at_once
        by_case: dict[str, list[StoredEvent]] = {}
        for chain in all_chains.values():
            for e in chain:
                assert e.case_id is not None
                by_case.setdefault(e.case_id, []).append(e)
        assert incremental == {c: reference(c, es) for c, es in by_case.items()}

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


async def test_events_stored_without_an_indexer_are_folded_when_one_opens(
    tmp_path: Path,
) -> None:
    events = chains([_one_case()])
    flat = [e for chain in events.values() for e in chain]
    async with Store.open(tmp_path / "s.db", create=True) as plain:
        await plain.append_events(flat, received_at=1)
        assert (await plain.counts()).cases == 1  # queued, counted
    async with case_store(tmp_path / "s.db") as store:
        rows = await rows_of(store)
    assert list(rows) == [flat[0].case_id]
    assert rows[str(flat[0].case_id)] == reference(str(flat[0].case_id), flat)


def _one_case() -> Scenario:
    """An opening and two edits by one replica."""
    sim = Sim(0, 0)
    opening = sim.writer.open_case(
        wall_ms=1_700_000_000_000, site="横手南小学校", category="medical", urgency="high"
    )
    sim.write(opening)
    state = fold(sim.events.values())
    sim.write(sim.writer.set_status(state, "in_progress", wall_ms=1_700_000_001_000))
    state = fold(sim.events.values())
    sim.write(sim.writer.set_field(state, "urgency", "low", wall_ms=1_700_000_002_000))
    events = tuple(sim.events.values())
    return Scenario((events,), (events,))


async def test_a_run_folded_beforehand_is_refolded_for_a_case_already_indexed(
    tmp_path: Path,
) -> None:
    """Sync folds each run as it verifies it (``fold_run``); the store takes that row
    only for a case new to the index that no other run of the group touches."""
    flat = [e for chain in chains([_one_case()]).values() for e in chain]
    case_id = str(flat[0].case_id)
    async with case_store(tmp_path / "s.db", create=True) as store:
        first = runs_of(flat[:1])
        await store.append_runs(first, received_at=1, folded=[store.fold_run(flat[:1])[1]])
        # The next events of the same case, folded on their own, as a run is.
        rest = runs_of(flat[1:])
        await store.append_runs(rest, received_at=1, folded=[store.fold_run(flat[1:])[1]])
        # One case in two runs of one group: neither run's own fold is the case.
        async with case_store(tmp_path / "t.db", create=True) as other:
            split = runs_of(flat[:2]) + runs_of(flat[2:])
            await other.append_runs(
                split, received_at=1, folded=[other.fold_run(r)[1] for r, _ in split]
            )
            assert await rows_of(other) == {case_id: reference(case_id, flat)}
        assert await rows_of(store) == {case_id: reference(case_id, flat)}
