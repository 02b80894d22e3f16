"""Benches' case data: :func:`fill_cases` writes cases into a home's store offline.

Cases are written the way a busy node commits: :class:`CaseWriter` openings, the
personal block (and a note) sealed with :func:`seal`, appended to the node's
:class:`ChainWriter`, one signed checkpoint and one :meth:`Store.append_run` per
``batch_events`` events, through a store that keeps the case index (so the index is
built as a node builds it).

Two shapes:

- the default (``bench sync``): every case an opening (welfare, high urgency, the
  node's own site) with a sealed personal block and a sealed summary note, ≈ 1 KB of
  bodies per case;
- :class:`CaseMix` ``varied`` (``bench scale``): categories, urgencies, sites and
  departments drawn from a realistic mix, and as the second event either a sealed
  note or a status change, so filters select realistic shares. With ``terms`` the
  fill also writes each case's search terms, which it can compute from the names it
  sealed (a node computes the same terms by opening the block).

Sealing dominates the cost (two X25519 operations per block). With ``workers`` the
blocks of the next chunk of cases are sealed in worker processes while the main
process stores the current one, so 1,000,000 cases take minutes, not an hour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import multiprocessing
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

from meshdesk.cases.book import case_aad
from meshdesk.cases.chain import ChainWriter
from meshdesk.cases.events import CaseOpened, EventRef, FieldSet, NoteAdded, Payload
from meshdesk.cases.fold import CaseWriter, Draft
from meshdesk.cases.hlc import Clock
from meshdesk.cases.ids import new_id
from meshdesk.cases.model import CaseField, Category, Personal, Status, Urgency
from meshdesk.cases.sealing import Recipient, audience, seal
from meshdesk.cases.search import SearchKey
from meshdesk.cases.summary import case_store, personal_digest
from meshdesk.home import NodeHome
from meshdesk.store import Store, StoredEvent

__all__ = ["CaseMix", "FillStats", "event_bytes", "fill_cases"]

#: The summary note of every generated case (sealed; ≈ 1 KB of bodies per case).
_SUMMARY = (
    "避難所で生活中。持病の薬（血圧）が残り3日分。息子と連絡が取れていない。"
    "Visitor asks about temporary housing and the application deadline; documents "
    "copied, originals returned. Needs an interpreter (Vietnamese) for the next visit. "
    "Call back after the site inspection on Tuesday; referred to the health desk."
)
_NAMES = ("山田 花子", "佐藤 太郎", "鈴木 一郎", "Nguyen Van An", "高橋 美咲", "伊藤 健")
_SURNAMES = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村",
    "小林", "加藤", "吉田", "山田", "佐々木", "山口", "松本", "井上", "木村", "林",
    "斎藤", "清水", "山崎", "森", "池田", "橋本", "阿部", "石川", "山下", "中島",
    "石井", "小川", "前田", "岡田", "長谷川", "藤田", "後藤", "近藤", "村上",
    "遠藤", "青木", "坂本")  # fmt: skip
_GIVEN = ("花子", "太郎", "一郎", "美咲", "健", "翔太", "陽菜", "蓮", "結衣",
    "大翔", "さくら", "悠真", "葵", "湊", "凛", "陽翔", "芽依", "樹", "美月",
    "大輝", "千尋", "和子", "正", "幸子", "博", "節子", "茂", "トメ", "清", "ハル")  # fmt: skip
_LATIN = ("Nguyen Van An", "Maria Santos", "Tran Thi Lan", "John Smith", "Kim Min-jun")
_DEPARTMENTS = ("福祉課", "健康推進課", "子育て支援課", "住宅課", "税務課", "危機管理課")
_URGENCIES = (Urgency.IMMEDIATE, Urgency.HIGH, Urgency.NORMAL, Urgency.LOW)
_URGENCY_WEIGHTS = (5, 20, 60, 15)
_LATER_STATUS = (Status.IN_PROGRESS, Status.IN_PROGRESS, Status.REFERRED, Status.RESOLVED)
#: Cases planned, sealed and stored per step of the pipeline.
_CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class CaseMix:
    """What generated cases look like (see the module docstring).

    Attributes:
        varied: Draw category, urgency, site, department and the second event.
        sites: Sites to draw from when ``varied`` (default: 50 shelters).
        terms: Also write the search terms of each case.
    """

    varied: bool = False
    sites: tuple[str, ...] = tuple(f"避難所{n:02d}" for n in range(1, 51))
    terms: bool = False


@dataclass(frozen=True, slots=True)
class FillStats:
    """What :func:`fill_cases` wrote: events, cases, checkpoints, byte sums."""

    events: int
    cases: int
    checkpoints: int
    body_bytes: int
    event_bytes: int
    seconds: float


def event_bytes(event: StoredEvent) -> int:
    """Size of a stored event: body + its detached sealed payloads + author + case id +
    seq, hlc, kind (8 B each) + prev_hash and hash (32 B each)."""
    case = len(event.case_id.encode()) if event.case_id is not None else 0
    payloads = sum(len(blob) for blob in event.payloads)
    return len(event.body) + payloads + len(event.author.encode()) + case + 3 * 8 + 2 * 32


def seal_blocks(recipients: Sequence[tuple[str, bytes]], jobs: Sequence[tuple[str, str, bytes]]
                ) -> list[bytes]:  # fmt: skip
    """Seal ``(case_id, part, plaintext)`` blocks to ``recipients`` (a worker's job)."""
    people = [Recipient(node_id, key) for node_id, key in recipients]
    return [seal(plain, people, aad=case_aad(case_id, part)) for case_id, part, plain in jobs]


@dataclass
class _Case:
    """One planned case: its opening (unsealed yet), the citizen, the second event."""

    opening: Draft
    personal: Personal
    second: str  # "note", "status" or "" (an odd count's last case)
    second_hlc: int
    status: Status = Status.NEW
    note_id: str = ""


class _Planner:
    """Draws cases (pure; its rng and clock only)."""

    def __init__(self, writer: CaseWriter, clock: Clock, rng: random.Random, site: str,
                 mix: CaseMix) -> None:  # fmt: skip
        self.writer, self.clock, self.rng, self.site, self.mix = writer, clock, rng, site, mix

    def case(self, wall: int, with_second: bool) -> _Case:
        rng, mix = self.rng, self.mix
        if mix.varied:
            name = (
                rng.choice(_LATIN)
                if rng.random() < 0.03
                else f"{rng.choice(_SURNAMES)} {rng.choice(_GIVEN)}"
            )
            draft = self.writer.open_case(
                wall_ms=wall,
                site=rng.choice(mix.sites),
                category=rng.choice(list(Category)),
                urgency=rng.choices(_URGENCIES, _URGENCY_WEIGHTS)[0],
                department=rng.choice(_DEPARTMENTS) if rng.random() < 0.6 else None,
            )
            second = "note" if rng.random() < 0.5 else "status"
        else:
            name = rng.choice(_NAMES)
            draft = self.writer.open_case(
                wall_ms=wall, site=self.site, category="welfare_eldercare", urgency="high"
            )
            second = "note"
        personal = Personal(
            name=name,
            age=rng.randint(1, 99),
            phone=f"090-{rng.randint(0, 9999):04d}-{rng.randint(0, 9999):04d}",
            shelter="第二小学校体育館",
            household_size=rng.randint(1, 6),
        )
        case = _Case(draft, personal, second if with_second else "", 0)
        if case.second:
            case.second_hlc = self.clock.now(wall, after=draft.hlc)
            case.status = rng.choice(_LATER_STATUS)
            case.note_id = new_id(wall, rng)
        return case


def _jobs(cases: Sequence[_Case]) -> list[tuple[str, str, bytes]]:
    jobs = []
    for c in cases:
        jobs.append((c.opening.case_id, "personal", c.personal.to_msgpack()))
        if c.second == "note":
            jobs.append((c.opening.case_id, "note", _SUMMARY.encode()))
    return jobs


class _Sink:
    """Appends finished cases to the chain; commits every ``batch`` events."""

    def __init__(self, store: Store, chain: ChainWriter, batch: int, received_at: int) -> None:
        self.store, self.chain, self.batch, self.received_at = store, chain, batch, received_at
        self.pending = self.checkpoints = self.body_sum = self.size_sum = self.written = 0

    def add(self, case_id: str, hlc: int, payload: Payload) -> StoredEvent:
        event = self.chain.append(hlc=hlc, case_id=case_id, kind=payload.KIND,
                                  body=payload.encode(), payloads=payload.detached())  # fmt: skip
        self.pending += 1
        self.written += 1
        return event

    async def commit(self, force: bool = False) -> None:
        if self.pending and (force or self.pending >= self.batch):
            events, checkpoint = self.chain.commit()
            await self.store.append_run(events, checkpoint, received_at=self.received_at)
            self.body_sum += sum(len(e.body) + sum(map(len, e.payloads)) for e in events)
            self.size_sum += sum(event_bytes(e) for e in events)
            self.checkpoints += 1
            self.pending = 0


async def _store_chunk(
    sink: _Sink, cases: Sequence[_Case], sealed: Sequence[bytes], key: SearchKey | None
) -> None:
    blocks = iter(sealed)
    digests: list[bytes | None] = []
    for c in cases:
        opening = c.opening.payload
        assert isinstance(opening, CaseOpened)
        block = next(blocks)
        digests.append(personal_digest(block))
        first = sink.add(c.opening.case_id, c.opening.hlc,
                         dataclasses.replace(opening, sealed=block))  # fmt: skip
        if c.second == "note":
            sink.add(c.opening.case_id, c.second_hlc,
                     NoteAdded("bench", c.note_id, next(blocks)))  # fmt: skip
        elif c.second == "status":
            seen = (EventRef(first.author, first.seq),)
            status = FieldSet("bench", CaseField.STATUS, str(c.status), seen)
            sink.add(c.opening.case_id, c.second_hlc, status)
        await sink.commit()
    await sink.commit(force=True)  # a chunk's cases are in the index before its terms
    if key is not None:
        ids = [c.opening.case_id for c in cases]
        keys = await sink.store.index.keys(ids)
        await sink.store.set_search_terms(
            [
                (keys[c.opening.case_id], digest, key.terms_of(c.personal))
                for c, digest in zip(cases, digests, strict=True)
            ]
        )


async def fill_cases(
    home: NodeHome,
    *,
    events: int,
    batch_events: int,
    now: dt.datetime,
    seed: int = 2026,
    progress: Callable[[str], None] | None = None,
    mix: CaseMix | None = None,
    workers: int = 0,
) -> FillStats:
    """Append ``events`` case events (two per case) to ``home``'s store.

    The home's node is the author; its store must not be open elsewhere. The last
    case of an odd count has only its opening.

    Args:
        mix: What the cases look like (default: the ``bench sync`` shape).
        workers: Processes that seal blocks meanwhile (0: seal in this process).
    """
    start = time.perf_counter()
    mix = mix or CaseMix()
    kit = home.load_identity(now=now)
    me = str(kit.node_id)
    rng = random.Random(seed)
    people = audience(origin=me, consent=(), directory=[kit.info])
    recipients = [(p.node_id, p.sealing_key) for p in people]
    key = SearchKey.of(kit.sealing_key) if mix.terms and kit.sealing_key is not None else None
    wall = int(now.timestamp() * 1000) - events * 500
    cases = 0
    pool: Executor | None = None
    if workers > 0:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.get_running_loop()
    try:
        async with case_store(home.store_path) as store:
            head = (await store.heads()).get(me)
            clock = Clock()
            if head is not None:
                last = await store.events_after(me, head[0] - 1, 1)
                clock = Clock(last[0].hlc)
            sink = _Sink(store, ChainWriter(me, kit.key, head), batch_events, wall)
            planner = _Planner(CaseWriter("bench", clock, rng), clock, rng, kit.info.site, mix)
            planned = 0
            previous: tuple[list[_Case], asyncio.Future[list[bytes]]] | None = None
            while planned < events or previous is not None:
                chunk: list[_Case] = []
                while planned < events and len(chunk) < _CHUNK:
                    wall += 1000
                    case = planner.case(wall, events - planned >= 2)
                    chunk.append(case)
                    planned += 2 if case.second else 1
                future: asyncio.Future[list[bytes]] | None = None
                if chunk:
                    future = loop.run_in_executor(pool, seal_blocks, recipients, _jobs(chunk))
                if previous is not None:
                    done, sealed = previous
                    await _store_chunk(sink, done, await sealed, key)
                    cases += len(done)
                    if progress is not None and (cases // 25_000) != (cases - len(done)) // 25_000:
                        progress(f"  {sink.written:,} of {events:,} events written")
                previous = (chunk, future) if future is not None else None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return FillStats(
        sink.written,
        cases,
        sink.checkpoints,
        sink.body_sum,
        sink.size_sum,
        time.perf_counter() - start,
    )
