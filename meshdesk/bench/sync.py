"""``meshdesk bench sync``: replication between two real nodes over TLS on loopback.

Two :class:`~meshdesk.node.Node` s run in this process (mDNS off, ``127.0.0.1``,
``b`` has ``a`` as its static peer). One run measures:

- **cold**: ``a`` holds N cases (an opening with a sealed personal block and a
  sealed summary note: 2 events, ≈ 1 KB of bodies per case), written as a busy node
  commits (one signed checkpoint per ``--batch`` events); ``b`` is empty. From the
  first sync frame on the link until ``b`` has stored all of ``a``'s events:
  events/s, and sync bytes on the wire per event beside the mean stored event size.
- **cold, apart**: the same, but ``a`` runs as ``meshdesk run`` in a process of its
  own, as another laptop would, and an empty desk ``c`` in this process syncs from
  it. In the first measurement both nodes share one interpreter (one core for the
  sender's reads and encoding and the receiver's checks and commits); this one is
  what a joining node sees, and the one the target applies to.
- **delta**: ``b``'s store is a copy of ``a``'s (``--delta-events`` events), then
  ``a`` writes one more event. Both start; from link-up until ``b`` stores it and
  the link is quiet: the round trips needed and the sync bytes both ways.
- **floors**, on the cold events: raw ``sqlite3`` ``executemany`` of the same rows,
  one transaction per 1,000, and one Ed25519 verification per event (what signing
  every event would cost a receiver; meshdesk verifies one signature per batch).

Wire bytes are what ``TlsChannel.send`` writes (``pack_frame``: 4-byte length prefix
+ msgpack envelope), i.e. the TLS plaintext; TLS adds ≈ 22 B per record of up to
16 KiB on top. Progress goes to stderr; stdout carries only the result.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk._heap import settled_heap
from meshdesk.bench._fill import CaseMix
from meshdesk.bench._process import node_process, wait_ready
from meshdesk.bench._stats import Row, format_table, rate, require_at_least
from meshdesk.bench._sync_setup import (
    MeteredNode,
    SyncRecord,
    WireMeter,
    copy_store,
    event_bytes,
    fill_cases,
    make_pair,
    node_config,
    read_events,
)
from meshdesk.bench.store import append_raw
from meshdesk.cases.chain import checkpoint_message
from meshdesk.home import NodeHome
from meshdesk.store import StoredEvent

__all__ = [
    "SyncBenchConfig",
    "SyncBenchResult",
    "SyncRun",
    "add_parser",
    "handle",
    "run_sync_bench",
    "sync_pair",
]

Progress = Callable[[str], None]

#: Product targets the table and the JSON compare against.
TARGET_COLD_EVENTS_PER_S = 10_000
#: The disaster-scale target, for the receiver when the sender is another process.
TARGET_COLD_APART_EVENTS_PER_S = 30_000
TARGET_WIRE_RATIO = 1.2
TARGET_DELTA_ROUND_TRIPS = 2
TARGET_DELTA_BYTES = 2048

#: Events per raw transaction in the SQLite floor; signatures timed in the verify floor.
_FLOOR_BATCH = 1_000
_FLOOR_VERIFY_MAX = 5_000
#: How long a link must carry no sync frame after convergence to count as quiet.
_QUIET_S = 1.0
#: How long node ``a``'s own process may take to answer its control socket.
_READY_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class SyncBenchConfig:
    """What one ``bench sync`` run does.

    Attributes:
        cases: Cases (2 events each) node ``a`` holds for the cold sync.
        batch: Events per signed checkpoint when writing them.
        delta_events: Events both stores hold before the one-event delta.
        stall: Seconds without a newly stored event after which a sync is given
            up (and reported as not converged).

    Raises:
        UsageError: a count below 1.
    """

    cases: int = 10_000
    batch: int = 100
    delta_events: int = 100_000
    stall: float = 20.0

    def __post_init__(self) -> None:
        require_at_least("--cases", self.cases)
        require_at_least("--batch", self.batch)
        require_at_least("--delta-events", self.delta_events)


@dataclass(frozen=True, slots=True)
class SyncBenchResult:
    """Figures of one run (see the module docstring for what each measures)."""

    config: SyncBenchConfig
    events: int
    checkpoints: int
    body_bytes: float
    event_bytes: float
    cold_converged: bool
    cold_stored: int
    cold_resyncs: int
    cold_seconds: float
    cold_link_seconds: float
    cold_wire_bytes: int
    cold_wire_bytes_total: int
    cold_links: int
    cold_frames: int
    cold_other_bytes: int
    apart_converged: bool
    apart_stored: int
    apart_seconds: float
    delta_store_events: int
    delta_converged: bool
    delta_depth: int
    delta_frames: int
    delta_frames_to_converge: int
    delta_bytes: int
    delta_seconds: float
    delta_links: int
    floor_sqlite_seconds: float
    floor_verify_events: int
    floor_verify_seconds: float

    @property
    def cold_events_per_s(self) -> float:
        """Events stored per second (all of them only if ``cold_converged``)."""
        return rate(self.cold_stored, self.cold_seconds)

    @property
    def cold_apart_events_per_s(self) -> float:
        """Events stored per second with the sender in its own process."""
        return rate(self.apart_stored, self.apart_seconds)

    @property
    def wire_per_event(self) -> float:
        """Sync bytes both ways per event stored."""
        return self.cold_wire_bytes / max(self.cold_stored, 1)

    @property
    def delta_round_trips(self) -> int:
        return math.ceil(self.delta_depth / 2)

    def targets(self) -> dict[str, bool]:
        return {
            "cold_events_per_s": self.cold_converged
            and self.cold_events_per_s >= TARGET_COLD_EVENTS_PER_S,
            "cold_apart_events_per_s": self.apart_converged
            and self.cold_apart_events_per_s >= TARGET_COLD_APART_EVENTS_PER_S,
            "cold_wire_bytes_per_event": self.wire_per_event
            <= TARGET_WIRE_RATIO * self.event_bytes,
            "delta_round_trips": self.delta_converged
            and self.delta_round_trips <= TARGET_DELTA_ROUND_TRIPS,
            "delta_bytes": self.delta_bytes <= TARGET_DELTA_BYTES,
        }

    def to_json(self) -> dict[str, Any]:
        """The result as one JSON object."""
        return {
            "bench": "sync",
            "cases": self.config.cases,
            "events": self.events,
            "events_per_checkpoint": round(self.events / self.checkpoints, 1),
            "body_bytes": round(self.body_bytes, 1),
            "event_bytes": round(self.event_bytes, 1),
            "cold_converged": self.cold_converged,
            "cold_events_stored": self.cold_stored,
            "cold_resyncs": self.cold_resyncs,
            "cold_seconds": round(self.cold_seconds, 4),
            "cold_events_per_s": round(self.cold_events_per_s, 1),
            "cold_link_seconds": round(self.cold_link_seconds, 4),
            "cold_wire_bytes": self.cold_wire_bytes,
            "cold_wire_bytes_total": self.cold_wire_bytes_total,
            "cold_links": self.cold_links,
            "cold_wire_bytes_per_event": round(self.wire_per_event, 1),
            "cold_wire_ratio": round(self.wire_per_event / self.event_bytes, 3),
            "cold_sync_frames": self.cold_frames,
            "cold_other_bytes": self.cold_other_bytes,
            "cold_apart_converged": self.apart_converged,
            "cold_apart_events_stored": self.apart_stored,
            "cold_apart_seconds": round(self.apart_seconds, 4),
            "cold_apart_events_per_s": round(self.cold_apart_events_per_s, 1),
            "delta_store_events": self.delta_store_events,
            "delta_converged": self.delta_converged,
            "delta_round_trips": self.delta_round_trips,
            "delta_one_way_trips": self.delta_depth,
            "delta_frames": self.delta_frames,
            "delta_frames_to_converge": self.delta_frames_to_converge,
            "delta_bytes": self.delta_bytes,
            "delta_seconds": round(self.delta_seconds, 4),
            "delta_links": self.delta_links,
            "floor_sqlite_events_per_s": round(rate(self.events, self.floor_sqlite_seconds), 1),
            "floor_verify_events_per_s": round(
                rate(self.floor_verify_events, self.floor_verify_seconds), 1
            ),
            "targets_met": self.targets(),
            "sqlite_version": sqlite3.sqlite_version,
            "python": platform.python_version(),
        }

    def format_table(self) -> str:
        """The result as a table: meshdesk | floor or target | ratio."""
        c = self.config
        title = (
            f"meshdesk bench sync: {c.cases:,} cases = {self.events:,} events"
            f" (~{self.event_bytes:.0f} B each), {self.events / self.checkpoints:.0f} events"
            f" per checkpoint; delta of 1 event on {self.delta_store_events:,}"
        )
        verify = rate(self.floor_verify_events, self.floor_verify_seconds)
        rows = [
            Row("cold sync vs raw SQLite (events/s)", self.cold_events_per_s,
                rate(self.events, self.floor_sqlite_seconds)),
            Row("cold sync vs 1 verify/event (events/s)", self.cold_events_per_s, verify),
            Row("cold sync vs target (events/s)", self.cold_events_per_s,
                TARGET_COLD_EVENTS_PER_S),
            Row("cold sync, sender apart, vs raw SQLite", self.cold_apart_events_per_s,
                rate(self.events, self.floor_sqlite_seconds)),
            Row("cold sync, sender apart, vs target", self.cold_apart_events_per_s,
                TARGET_COLD_APART_EVENTS_PER_S),
            Row("cold wire vs stored (B/event)", self.wire_per_event, self.event_bytes, 1),
            Row("delta round trips vs target", self.delta_round_trips, TARGET_DELTA_ROUND_TRIPS),
            Row("delta wire bytes vs target", self.delta_bytes, TARGET_DELTA_BYTES),
        ]  # fmt: skip
        missed = [name for name, ok in self.targets().items() if not ok]
        stuck = (
            ""
            if self.cold_converged
            else f" NOT CONVERGED: b stored {self.cold_stored:,} of {self.events:,} events,"
            " then no progress; figures are for what was stored."
        )
        notes = [
            f"cold: {self.cold_seconds:.2f} s from the first sync frame to the last event"
            f" stored ({self.cold_link_seconds:.2f} s to link up before),"
            f" {self.cold_wire_bytes:,} B until then, {self.cold_frames:,} sync frames and"
            f" {self.cold_wire_bytes_total:,} B in all, {self.cold_resyncs} resyncs,"
            f" {self.cold_links} TCP link(s).{stuck}",
            f"delta: {self.delta_depth} one-way trips (causal depth of the frame that"
            f" completed it), {self.delta_frames} sync frames, {self.delta_seconds:.2f} s,"
            f" {self.delta_links} TCP link(s).",
            "wire bytes: length prefix + msgpack envelope (TLS plaintext), sync frames both"
            " ways; cold: until the last event stored.",
            f"cold, apart: a as its own `meshdesk run` process, an empty desk here:"
            f" {self.apart_stored:,} events in {self.apart_seconds:.2f} s.",
            "targets: cold >= 10,000 events/s (>= 30,000 apart), wire <= 1.2x stored,"
            " delta <= 2 round trips and <= 2 KB; "
            + ("all met." if not missed else "missed: " + ", ".join(missed)),
        ]
        return format_table(title, rows, headers=("meshdesk", "floor/target"), notes=notes)


# -- measurements ------------------------------------------------------------------------


def _stderr(line: str) -> None:
    print(f"bench sync: {line}", file=sys.stderr, flush=True)


async def _progress(count: Callable[[], int], target: int, stall: float) -> tuple[int, float]:
    """Wait until ``count()`` reaches ``target`` or stops growing for ``stall`` seconds.

    Returns the last count and when it last grew (``perf_counter``).
    """
    last, moved = count(), time.perf_counter()
    while last < target and time.perf_counter() - moved < stall:
        await asyncio.sleep(0.002)
        now = count()
        if now != last:
            last, moved = now, time.perf_counter()
    return last, moved


async def _quiet(meter: WireMeter, seconds: float, limit: float) -> None:
    """Wait until no sync frame was written for ``seconds`` (at most ``limit`` s)."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        last = meter.records[-1].at if meter.records else 0.0
        idle = time.perf_counter() - last
        if idle >= seconds:
            return
        await asyncio.sleep(seconds - idle + 0.01)


@dataclass(frozen=True, slots=True)
class SyncRun:
    converged: bool
    stored: int
    seconds: float
    link_seconds: float
    depth: int
    records: Sequence[SyncRecord]
    converged_frames: int
    converged_bytes: int
    other_bytes: int
    connections: int


async def sync_pair(a: NodeHome, b: NodeHome, expect: int, held: int, stall: float) -> SyncRun:
    """Start ``a``, then ``b`` dialling it; wait until ``b`` (holding ``held`` events)
    stored all ``expect`` or made no progress for ``stall`` s, then until the link is
    quiet. ``seconds`` runs from the first sync frame to the last event stored."""
    meter = WireMeter()
    with meter.installed():
        async with MeteredNode(a, node_config(a, []), meter) as node_a:
            peer = f"127.0.0.1:{node_a.listener.port}"
            started = time.perf_counter()
            async with MeteredNode(b, node_config(b, [peer]), meter) as node_b:

                def stored() -> int:
                    return node_b.sync.stored_events

                count, done = await _progress(stored, expect - held, stall)
                depth = meter.received_depth("b")
                converged = len(meter.records)
                converged_bytes = sum(r.size for r in meter.records if r.at <= done)
                await _quiet(meter, _QUIET_S, stall)
                total = (await node_b.store.counts()).events
    if not meter.records:
        raise RuntimeError("the nodes exchanged no sync frame (did they link?)")
    if total != held + count:  # a bug in the bench or in sync, not a user error
        raise RuntimeError(f"b holds {total} events, expected {held + count}")
    first = meter.records[0].at
    return SyncRun(
        converged=count >= expect - held,
        stored=count,
        seconds=done - first,
        link_seconds=first - started,
        depth=depth,
        records=list(meter.records),
        converged_frames=converged,
        converged_bytes=converged_bytes,
        other_bytes=meter.other_bytes,
        connections=meter.connections,
    )


@dataclass(frozen=True, slots=True)
class _Apart:
    converged: bool
    stored: int
    seconds: float


async def _sync_apart(a: NodeHome, b: NodeHome, expect: int, stall: float, log: Path
                      ) -> _Apart:  # fmt: skip
    """``a`` as ``meshdesk run`` in its own process; the empty ``b`` here dials it.
    Seconds run from ``b``'s first sync frame to the last event stored."""
    start = time.perf_counter()
    with node_process(a, log) as proc:
        await wait_ready(a, proc, start, _READY_TIMEOUT)
        status = await control.call(a.control_socket, "status", wait=_READY_TIMEOUT)
        peer = f"127.0.0.1:{status['listen_port']}"
        meter = WireMeter()
        # The desk runs as ``meshdesk run`` runs it: its collector settled (_heap).
        with meter.installed(), settled_heap():
            async with MeteredNode(b, node_config(b, [peer]), meter) as node_b:

                def stored() -> int:
                    return node_b.sync.stored_events

                count, done = await _progress(stored, expect, stall)
    if not meter.records:
        raise RuntimeError("the desk sent no sync frame (did it link to node a?)")
    return _Apart(converged=count >= expect, stored=count, seconds=done - meter.records[0].at)


def _floor_verify(events: Sequence[StoredEvent], home: NodeHome, now: dt.datetime) -> float:
    """Seconds to verify one Ed25519 signature per event (signed beforehand)."""
    key = home.load_identity(now=now).key
    public = key.public_key()
    messages = [checkpoint_message(e.author, e.seq, e.hash) for e in events]
    signed = [(message, key.sign(message)) for message in messages]
    start = time.perf_counter()
    for message, sig in signed:
        public.verify(sig, message)
    return time.perf_counter() - start


async def _run(config: SyncBenchConfig, folder: Path, progress: Progress) -> SyncBenchResult:
    now = dt.datetime.now(dt.UTC)
    n = 2 * config.cases
    cold = await make_pair(folder / "cold", now, spares=1)
    progress(f"cold: writing {config.cases:,} cases ({n:,} events) on node a")
    # Terms written with the cases: node a has no search backlog to work off meanwhile.
    fill = await fill_cases(cold.a, events=n, batch_events=config.batch, now=now,
                            progress=progress, mix=CaseMix(terms=True))  # fmt: skip
    progress(f"cold: written in {fill.seconds:.1f} s; syncing to the empty node b")
    c = await sync_pair(cold.a, cold.b, n, 0, config.stall)
    progress(
        f"cold: {c.stored:,} of {n:,} events in {c.seconds:.2f} s"
        f" ({rate(c.stored, c.seconds):,.0f} events/s)"
        + ("" if c.converged else f"; no progress for {config.stall:g} s, given up")
    )

    progress("cold, apart: node a as its own process, an empty desk syncing from it")
    apart = await _sync_apart(cold.a, cold.spares[0], n, config.stall, folder / "a.log")
    progress(
        f"cold, apart: {apart.stored:,} of {n:,} events in {apart.seconds:.2f} s"
        f" ({rate(apart.stored, apart.seconds):,.0f} events/s)"
    )

    events = read_events(cold.a)
    progress("floors: raw sqlite3 executemany and one Ed25519 verify per event")
    batches = [events[i : i + _FLOOR_BATCH] for i in range(0, len(events), _FLOOR_BATCH)]
    sqlite_s = append_raw(folder / "floor.db", batches, int(now.timestamp() * 1000),
                           guarded=False)  # fmt: skip
    sample = events[:_FLOOR_VERIFY_MAX]
    verify_s = _floor_verify(sample, cold.a, now)

    d_events = config.delta_events
    delta = await make_pair(folder / "delta", now)
    progress(f"delta: writing {d_events:,} events on node a, copying them to node b")
    await fill_cases(delta.a, events=d_events, batch_events=config.batch, now=now,
                     progress=progress)  # fmt: skip
    copy_store(delta.a, delta.b)
    await fill_cases(delta.a, events=1, batch_events=1, now=now, seed=7)
    progress("delta: syncing one new event")
    d = await sync_pair(delta.a, delta.b, d_events + 1, d_events, config.stall)
    progress(f"delta: {d.depth} one-way trips, {sum(r.size for r in d.records)} B")
    return SyncBenchResult(
        config=config,
        events=n,
        checkpoints=fill.checkpoints,
        body_bytes=fill.body_bytes / n,
        event_bytes=sum(event_bytes(e) for e in events) / len(events),
        cold_converged=c.converged,
        cold_stored=c.stored,
        cold_resyncs=sum(1 for r in c.records if r.kind == "SyncResync"),
        cold_seconds=c.seconds,
        cold_link_seconds=c.link_seconds,
        cold_wire_bytes=c.converged_bytes,
        cold_wire_bytes_total=sum(r.size for r in c.records),
        cold_links=c.connections,
        cold_frames=len(c.records),
        cold_other_bytes=c.other_bytes,
        apart_converged=apart.converged,
        apart_stored=apart.stored,
        apart_seconds=apart.seconds,
        delta_store_events=d_events,
        delta_converged=d.converged,
        delta_depth=d.depth,
        delta_frames=len(d.records),
        delta_frames_to_converge=d.converged_frames,
        delta_bytes=sum(r.size for r in d.records),
        delta_seconds=d.seconds,
        delta_links=d.connections,
        floor_sqlite_seconds=sqlite_s,
        floor_verify_events=len(sample),
        floor_verify_seconds=verify_s,
    )


def run_sync_bench(config: SyncBenchConfig, progress: Progress = _stderr) -> SyncBenchResult:
    """Build both deployments in a temp folder and measure; blocking (own event loop)."""
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-sync-") as tmp:
        return asyncio.run(_run(config, Path(tmp), progress))


# -- command line ------------------------------------------------------------------------


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sync`` to the ``bench`` sub-commands."""
    parser = benches.add_parser(
        "sync",
        help="replication between two nodes over TLS: cold sync, one-event delta",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    defaults = SyncBenchConfig()
    parser.add_argument(
        "--cases",
        type=int,
        default=defaults.cases,
        metavar="N",
        help=f"cases (2 events each) to sync cold (default: {defaults.cases})",
    )
    parser.add_argument("--batch", type=int, default=defaults.batch, help=argparse.SUPPRESS)
    parser.add_argument(
        "--delta-events", type=int, default=defaults.delta_events, help=argparse.SUPPRESS
    )
    parser.add_argument("--stall", type=float, default=defaults.stall, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run ``bench sync`` from parsed arguments; print the table or the JSON."""
    config = SyncBenchConfig(
        cases=args.cases, batch=args.batch, delta_events=args.delta_events, stall=args.stall
    )
    result = run_sync_bench(config)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.format_table())
    return 0
