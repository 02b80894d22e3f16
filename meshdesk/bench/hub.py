"""``meshdesk bench hub``: a city HQ's feed into the prefecture's PostgreSQL, beside a
direct ``COPY`` of the same rows, and the catch-up after a wide-area cut.

One city HQ (in-process node, its supervised leaf node), a 3-server JetStream hub
and a throw-away PostgreSQL, all on 127.0.0.1 (:mod:`meshdesk.hub.testbed`):

- **feed** (``hub_events_per_s``): the HQ holds ``--cases`` cases (2 events each)
  written before its feed starts; the rate is timed from the first row in
  PostgreSQL to the last (``first_record_s``, from the node's start to the first
  row, is the leaf link and the stream source setting up), every record going
  store → leaf stream → hub stream → ``meshdesk hub run`` (a process of its own,
  as at the prefecture). Records wait in the city's stream while the link comes up,
  so this is the hub side's rate; ``city_publish_per_s`` (the HQ's store to its
  leaf's acknowledgements, from when the feed began reading the store: the node
  up and its leaf connected, ``city_ready_s`` after the node's start) is the city
  side's, beside it.
- **baseline** (``raw_copy_rows_per_s``): asyncpg ``copy_records_to_table`` of the
  same rows (the ``hub_events`` and ``hub_cases`` rows the feed wrote) into empty
  tables of the same shape.
- **catch-up** (``catchup_s``): the HQ's leaf reaches the hub through TCP relays
  on the loopback (:class:`~meshdesk.hub.wanlink.WanLink`). The link is cut (every
  relayed connection closed, new ones refused; the hub servers stay up, so their
  stream sources retry and back off as across a real cut) for ``--cut-seconds``
  (10 minutes by default); meanwhile ``--cut-cases`` new cases are written on the HQ
  (its node restarted, as an HQ would be over a long cut) and published to its own
  leaf. Then the link comes back and the clock runs until PostgreSQL holds every
  record.

Targets (issue 17): hub ≥ 0.2 × raw COPY, catch-up ≤ 60 s. Progress goes to stderr;
stdout carries only the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg

from meshdesk._lifecycle import stop_process
from meshdesk.bench._fill import CaseMix, fill_cases
from meshdesk.bench._stats import Row, format_table, rate, require_at_least
from meshdesk.config import Endpoint, HubSettings, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError, UsageError
from meshdesk.home import NodeHome
from meshdesk.hub.projection import ensure_schema
from meshdesk.hub.testbed import HubBed, free_port, start_hub_bed
from meshdesk.hub.wanlink import WanLink
from meshdesk.identity import Role
from meshdesk.node import Node

__all__ = ["HubBenchConfig", "HubBenchResult", "add_parser", "handle", "run_hub_bench"]

Progress = Callable[[str], None]
CITY = "221007"  # a municipality code, as the prefecture issues credentials by


@dataclass(frozen=True, slots=True)
class HubBenchConfig:
    """``cases`` fed with the link up, ``cut_cases`` written during the cut."""

    cases: int = 30_000
    cut_cases: int = 10_000
    cut_seconds: float = 600.0
    stall: float = 120.0

    def __post_init__(self) -> None:
        require_at_least("--cases", self.cases)
        require_at_least("--cut-cases", self.cut_cases)
        if self.cut_seconds < 0:
            raise UsageError(f"--cut-seconds must be 0 or more, got {self.cut_seconds}")


@dataclass(frozen=True, slots=True)
class HubBenchResult:
    config: HubBenchConfig
    feed_records: int
    feed_seconds: float
    first_record_seconds: float
    publish_seconds: float
    city_ready_seconds: float
    copy_rows: int
    copy_seconds: float
    cut_records: int
    cut_seconds: float
    #: Records of the cut that reached PostgreSQL before the link came back (0: the
    #: cut held).
    crossed_during_cut: int
    catchup_seconds: float
    complete: bool

    @property
    def hub_events_per_s(self) -> float:
        return rate(self.feed_records, self.feed_seconds)

    @property
    def raw_copy_rows_per_s(self) -> float:
        return rate(self.copy_rows, self.copy_seconds)

    @property
    def city_publish_per_s(self) -> float:
        return rate(self.feed_records, self.publish_seconds)

    def to_json(self) -> dict[str, Any]:
        copy = max(self.raw_copy_rows_per_s, 1e-9)
        ratio = self.hub_events_per_s / copy
        # The pipeline runs as fast as its slower side: the verdict takes that one.
        through = min(self.hub_events_per_s, self.city_publish_per_s) / copy
        return {
            "cases": self.config.cases,
            "feed_records": self.feed_records,
            "feed_seconds": round(self.feed_seconds, 3),
            "feed_measured": "from the first record in PostgreSQL to the last",
            "first_record_s": round(self.first_record_seconds, 2),
            "city_ready_s": round(self.city_ready_seconds, 2),
            "city_publish_per_s": round(self.city_publish_per_s),
            "hub_events_per_s": round(self.hub_events_per_s),
            "copy_rows": self.copy_rows,
            "raw_copy_rows_per_s": round(self.raw_copy_rows_per_s),
            "hub_over_copy": round(ratio, 3),
            "slower_side_over_copy": round(through, 3),
            "cut_cases": self.config.cut_cases,
            "cut_records": self.cut_records,
            "cut_seconds": round(self.cut_seconds, 1),
            "crossed_during_cut": self.crossed_during_cut,
            "cut_simulated_by": "the HQ's link to the hub cut (relays closed and refusing),"
            " hub servers up, cases written on the HQ meanwhile",
            "catchup_s": round(self.catchup_seconds, 2),
            "complete": self.complete,
            "target_met": through >= 0.2 and self.catchup_seconds <= 60 and self.complete,
        }

    def format_table(self) -> str:
        j = self.to_json()
        rows = [
            Row("hub side: rows into PostgreSQL (/s)", self.hub_events_per_s,
                self.raw_copy_rows_per_s),
            Row("city side: records acked by leaf (/s)", self.city_publish_per_s,
                self.raw_copy_rows_per_s),
        ]  # fmt: skip
        notes = [
            f"feed: {self.feed_records:,} records ({self.config.cases:,} cases) in"
            f" {self.feed_seconds:.2f} s from the first row in PostgreSQL to the last"
            f" (the first came {self.first_record_seconds:.2f} s after the HQ node"
            " started: leaf link and stream source setting up);"
            f" COPY: {self.copy_rows:,} rows in {self.copy_seconds:.2f} s.",
            f"city side: from when the feed began reading the store"
            f" ({self.city_ready_seconds:.2f} s after the HQ node started) to the leaf's"
            " last acknowledgement.",
            f"catch-up after a {self.cut_seconds:.0f} s cut of the HQ's link to the hub"
            f" ({self.config.cut_cases:,} cases written on the HQ meanwhile):"
            f" {self.catchup_seconds:.2f} s for {self.cut_records:,} records.",
            "targets: the slower side >= 0.2 x COPY, catch-up <= 60 s: "
            + ("met" if j["target_met"] else "NOT met"),
        ]
        return format_table("bench hub: city HQ to PostgreSQL vs raw COPY", rows,
                            headers=("hub feed", "raw COPY"), notes=notes)  # fmt: skip


def _stderr(line: str) -> None:
    print(f"bench hub: {line}", file=sys.stderr, flush=True)


async def _count(db: asyncpg.Connection) -> int:
    try:
        return int(await db.fetchval("SELECT count(*) FROM hub_events"))
    except asyncpg.UndefinedTableError:
        return 0


async def _wait_for(
    db: asyncpg.Connection, total: int, stall: float, progress: Progress
) -> tuple[bool, float]:
    """Until ``hub_events`` holds ``total`` rows: (done, when the first new row came,
    ``perf_counter``); not done when nothing moved for ``stall`` seconds."""
    start = await _count(db)
    last, moved, said, first = start, time.monotonic(), 0.0, 0.0
    while True:
        now_count = await _count(db)
        if now_count > start and not first:
            first = time.perf_counter()
        if now_count >= total:
            return True, first or time.perf_counter()
        if now_count != last:
            last, moved = now_count, time.monotonic()
        if time.monotonic() - moved > stall:
            return False, first
        if time.monotonic() - said > 5:
            said = time.monotonic()
            progress(f"  {now_count:,} of {total:,} records in PostgreSQL")
        await asyncio.sleep(0.02)


async def _copy(db: asyncpg.Connection) -> tuple[int, float]:
    """COPY the feed's rows into empty tables of the same shape: rows, seconds."""
    events = await db.fetch("SELECT * FROM hub_events")
    cases = await db.fetch("SELECT * FROM hub_cases")
    await db.execute("CREATE TABLE bench_events (LIKE hub_events INCLUDING ALL)")
    await db.execute("CREATE TABLE bench_cases (LIKE hub_cases INCLUDING ALL)")
    began = time.perf_counter()
    await db.copy_records_to_table("bench_events", records=[tuple(r) for r in events])
    await db.copy_records_to_table("bench_cases", records=[tuple(r) for r in cases])
    return len(events), time.perf_counter() - began


def _configure(home: NodeHome, wan: WanLink) -> Any:
    """The HQ's config: the feed on (city from its joined credential), the hub
    reached through the WAN link's relays."""
    hub = HubSettings(enabled=True, leaf_listen=Endpoint("127.0.0.1", free_port()),
                      hub_urls=tuple(wan.urls), poll_interval=0.1,
                      restart_delay=0.5)  # fmt: skip
    base = load_config(home.config_path).with_overrides(
        listen="127.0.0.1:0", mdns=False, web_listen="127.0.0.1:0", web_redirect="127.0.0.1:0"
    )
    return replace(base, hub=hub)


async def _published(node: Node, began: float) -> tuple[float, float]:
    """Seconds until the HQ's leaf acknowledged every stored event: from ``began``,
    and from when the feed began reading the store (the node started, the leaf
    connected)."""
    feed = node.hub
    assert feed is not None
    last = (await node.store.counts()).events
    while True:
        if feed.publisher.stats.position >= last:
            done = time.perf_counter()
            return done - began, done - max(feed.publisher.stats.feeding_since, began)
        await asyncio.sleep(0.01)


async def _start_projection(stack: contextlib.AsyncExitStack, bed: HubBed) -> None:
    """``meshdesk hub run`` in a process of its own, as the prefecture runs it."""
    argv = [sys.executable, "-m", "meshdesk", "hub", "run", "--postgres", bed.postgres.dsn,
            "--city", CITY, "--prefecture-home", str(bed.prefecture.path),
            *(a for url in bed.client_urls for a in ("--nats", url))]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
    )

    stack.push_async_callback(stop_process, process, signal.SIGINT)


async def _run(config: HubBenchConfig, folder: Path, progress: Progress) -> HubBenchResult:
    now = dt.datetime.now(dt.UTC)
    async with contextlib.AsyncExitStack() as stack:
        progress("starting PostgreSQL and a 3-server JetStream hub on 127.0.0.1")
        bed = await start_hub_bed(stack, folder / "hub", [CITY])
        wan = WanLink(bed.leaf_ports)
        await wan.start()
        stack.push_async_callback(wan.aclose)
        city = await build_deployment(folder / "city", "bench", [HomeSpec("hq", Role.HQ)], now=now)
        home = city.homes["hq"]
        bed.join(home, CITY)  # `meshdesk hub join`, the fingerprint confirmed
        progress(f"writing {config.cases:,} cases on the HQ")
        await fill_cases(home, events=2 * config.cases, batch_events=100, now=now,
                         mix=CaseMix(varied=True))  # fmt: skip
        await _start_projection(stack, bed)
        db = await asyncpg.connect(bed.postgres.dsn)
        stack.push_async_callback(db.close)
        await ensure_schema(db)
        progress("feed: starting the HQ node with its leaf node")
        records = 2 * config.cases
        began = time.perf_counter()
        node = await stack.enter_async_context(Node(home, _configure(home, wan)))
        progress(f"feed: node up after {time.perf_counter() - began:.2f} s")
        publish = asyncio.create_task(_published(node, began))
        complete, first = await _wait_for(db, records, config.stall, progress)
        if not complete:  # no rate means anything then: say so instead of printing one
            publish.cancel()
            raise MeshdeskError(
                f"the feed stalled: {await _count(db):,} of {records:,} records in PostgreSQL"
                f" and none more for {config.stall:.0f} s (run with -v to see the leaf's and"
                " the hub servers' logs)"
            )
        from_start_s, publish_s = await publish
        progress(f"feed: the HQ's leaf acknowledged every record {from_start_s:.2f} s after"
                 f" the node started, {publish_s:.2f} s after the feed began")  # fmt: skip
        done = time.perf_counter()
        feed_s, first_s = done - first, first - began
        progress(f"feed: first record {first_s:.2f} s after the node started; {records:,}"
                 f" records in {done - began:.2f} s")  # fmt: skip
        copy_rows, copy_s = await _copy(db)
        progress(f"COPY: {copy_rows:,} rows in {copy_s:.2f} s")

        progress("cut: the HQ's link to the hub goes down")
        wan.cut()
        cut_at = time.monotonic()
        await node.aclose()
        progress(f"cut: writing {config.cut_cases:,} cases on the HQ")
        later = dt.datetime.now(dt.UTC)
        await fill_cases(home, events=2 * config.cut_cases, batch_events=100, now=later,
                         seed=2027, mix=CaseMix(varied=True))  # fmt: skip
        node = await stack.enter_async_context(Node(home, _configure(home, wan)))
        feed = node.hub
        assert feed is not None
        last = (await node.store.counts()).events
        while True:  # the HQ publishes to its own leaf node meanwhile
            if feed.publisher.stats.position >= last:
                break
            await asyncio.sleep(0.05)
        total = records + 2 * config.cut_cases
        said = 0.0
        while (left := config.cut_seconds - (time.monotonic() - cut_at)) > 0:
            if time.monotonic() - said >= 60:
                said = time.monotonic()
                progress(f"cut: {left:.0f} s of the cut left")
            await asyncio.sleep(min(left, 1.0))
        cut_s = time.monotonic() - cut_at
        crossed = await _count(db) - records
        progress(f"cut ends after {cut_s:.0f} s: the link is back")
        began = time.perf_counter()
        wan.restore()
        caught_up, _ = await _wait_for(db, total, config.stall, progress)
        complete = caught_up and complete
        catchup_s = time.perf_counter() - began
        progress(f"catch-up: {2 * config.cut_cases:,} records in {catchup_s:.2f} s")
        return HubBenchResult(
            config=config,
            feed_records=records,
            feed_seconds=feed_s,
            first_record_seconds=first_s,
            publish_seconds=publish_s,
            city_ready_seconds=from_start_s - publish_s,
            copy_rows=copy_rows,
            copy_seconds=copy_s,
            cut_records=2 * config.cut_cases,
            cut_seconds=cut_s,
            crossed_during_cut=crossed,
            catchup_seconds=catchup_s,
            complete=complete and await _count(db) == total,
        )


def run_hub_bench(config: HubBenchConfig, progress: Progress = _stderr) -> HubBenchResult:
    """Run in a temporary folder; blocking (own event loop)."""
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-hub-") as tmp:
        return asyncio.run(_run(config, Path(tmp), progress))


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hub`` to the ``bench`` sub-commands."""
    parser = benches.add_parser(
        "hub",
        help="city HQ to PostgreSQL beside a raw COPY, and the catch-up after a cut",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    defaults = HubBenchConfig()
    parser.add_argument(
        "--cases", type=int, default=defaults.cases, metavar="N",
        help=f"cases (2 events each) fed with the link up (default: {defaults.cases})",
    )  # fmt: skip
    parser.add_argument(
        "--cut-cases", type=int, default=defaults.cut_cases, metavar="N",
        help=f"cases written during the cut (default: {defaults.cut_cases})",
    )  # fmt: skip
    parser.add_argument(
        "--cut-seconds", type=float, default=defaults.cut_seconds, metavar="S",
        help=f"how long the link to the hub stays cut (default: {defaults.cut_seconds:.0f})",
    )  # fmt: skip
    parser.add_argument("--stall", type=float, default=defaults.stall, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    result = run_hub_bench(
        HubBenchConfig(
            cases=args.cases,
            cut_cases=args.cut_cases,
            cut_seconds=args.cut_seconds,
            stall=args.stall,
        )
    )
    print(json.dumps(result.to_json(), indent=2) if args.json else result.format_table())
    return 0
