"""``meshdesk bench bundle``: a USB bundle's import beside a cold sync, in one run.

One deployment of three nodes: ``a`` holds N cases (the ``bench sync`` shape: an
opening with a sealed personal block and a sealed note, 2 events, one signed
checkpoint per ``--batch`` events). Then:

- **sync** (the baseline): ``b``, empty, syncs from ``a`` over TLS on loopback
  (``bench sync``'s cold measurement: from the first sync frame until ``b`` stored
  every event);
- **export**: ``a`` (no node running) writes everything to a bundle file;
- **import**: ``c``, empty, imports the file: read, every run verified as sync
  verifies it, stored by group commit with ``synchronous=FULL``, the case index
  kept — from the call until it returns "imported".

``import_events_per_s`` beside ``sync_events_per_s`` (target: import ≥ sync), both
stores' digests compared. Progress goes to stderr; stdout carries only the result.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshdesk.bench._fill import CaseMix, fill_cases
from meshdesk.bench._stats import Row, format_table, rate, require_at_least
from meshdesk.bench.sync import sync_pair
from meshdesk.bundles import Bundles
from meshdesk.cases.summary import case_store
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.directory import Directory
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.store import digest_of

__all__ = ["BundleBenchConfig", "BundleBenchResult", "add_parser", "handle", "run_bundle_bench"]

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BundleBenchConfig:
    """What one run does: ``cases`` (2 events each), ``batch`` events per checkpoint."""

    cases: int = 10_000
    batch: int = 100
    stall: float = 20.0

    def __post_init__(self) -> None:
        require_at_least("--cases", self.cases)
        require_at_least("--batch", self.batch)


@dataclass(frozen=True, slots=True)
class BundleBenchResult:
    config: BundleBenchConfig
    events: int
    bundle_bytes: int
    export_seconds: float
    import_seconds: float
    import_new: int
    sync_seconds: float
    sync_stored: int
    sync_converged: bool
    digests_equal: bool

    @property
    def import_events_per_s(self) -> float:
        return rate(self.import_new, self.import_seconds)

    @property
    def sync_events_per_s(self) -> float:
        return rate(self.sync_stored, self.sync_seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "cases": self.config.cases,
            "events": self.events,
            "batch": self.config.batch,
            "bundle_bytes": self.bundle_bytes,
            "bundle_bytes_per_event": round(self.bundle_bytes / max(self.events, 1), 1),
            "export_seconds": round(self.export_seconds, 3),
            "export_events_per_s": round(rate(self.events, self.export_seconds)),
            "import_seconds": round(self.import_seconds, 3),
            "import_events_per_s": round(self.import_events_per_s),
            "sync_seconds": round(self.sync_seconds, 3),
            "sync_events_per_s": round(self.sync_events_per_s),
            "sync_converged": self.sync_converged,
            "import_over_sync": round(
                self.import_events_per_s / max(self.sync_events_per_s, 1e-9), 2
            ),
            "target_met": self.import_events_per_s >= self.sync_events_per_s,
            "digests_equal": self.digests_equal,
        }

    def format_table(self) -> str:
        rows = [
            Row("events stored (events/s)", self.import_events_per_s, self.sync_events_per_s),
        ]
        notes = [
            f"{self.events:,} events ({self.config.cases:,} cases); bundle "
            f"{self.bundle_bytes / 1e6:.1f} MB written in {self.export_seconds:.2f} s;"
            f" import {self.import_seconds:.2f} s, cold sync {self.sync_seconds:.2f} s.",
            "target: import >= sync: " + ("met" if self.to_json()["target_met"] else "NOT met"),
            "digests of the imported and the synced store: "
            + ("equal" if self.digests_equal else "DIFFERENT"),
        ]
        return format_table(
            "bench bundle: USB bundle import vs cold sync",
            rows,
            headers=("import", "cold sync"),
            notes=notes,
        )


def _stderr(line: str) -> None:
    print(f"bench bundle: {line}", file=sys.stderr, flush=True)


async def _bundles(home: NodeHome, now: dt.datetime) -> Any:
    kit = home.load_identity(now=now)
    store = case_store(home.store_path)
    await store.start()
    directory = await Directory.open(store, kit, now=lambda: now)
    await directory.seed()
    return store, Bundles(store, directory, kit)


async def _digest(home: NodeHome) -> str:
    async with case_store(home.store_path) as store:
        return digest_of(await store.event_hashes())


async def _run(config: BundleBenchConfig, folder: Path, progress: Progress) -> BundleBenchResult:
    now = dt.datetime.now(dt.UTC)
    n = 2 * config.cases
    specs = [
        HomeSpec("a", Role.HQ, site="hq"),
        HomeSpec("b", Role.DESK, site="s"),
        HomeSpec("c", Role.DESK, site="t"),
    ]
    city = await build_deployment(folder, "bench", specs, now=now)
    a, b, c = (city.homes[x] for x in "abc")
    progress(f"writing {config.cases:,} cases ({n:,} events) on node a")
    await fill_cases(a, events=n, batch_events=config.batch, now=now, progress=progress,
                     mix=CaseMix(terms=True))  # fmt: skip
    progress("cold sync a -> b (the baseline)")
    synced = await sync_pair(a, b, n, 0, config.stall)
    progress(f"sync: {synced.stored:,} events in {synced.seconds:.2f} s")
    path = folder / "a.bundle"
    store, bundles = await _bundles(a, now)
    try:
        began = time.perf_counter()
        written = await bundles.export(path)
        export_s = time.perf_counter() - began
    finally:
        await store.aclose()
    progress(f"export: {written['events']:,} events, {written['bytes']:,} B in {export_s:.2f} s")
    store, bundles = await _bundles(c, now)
    try:
        began = time.perf_counter()
        got = await bundles.import_file(path)
        import_s = time.perf_counter() - began
    finally:
        await store.aclose()
    progress(f"import: {got.new_events:,} events in {import_s:.2f} s")
    return BundleBenchResult(
        config=config,
        events=n,
        bundle_bytes=int(written["bytes"]),
        export_seconds=export_s,
        import_seconds=import_s,
        import_new=got.new_events,
        sync_seconds=synced.seconds,
        sync_stored=synced.stored,
        sync_converged=synced.converged,
        digests_equal=await _digest(b) == await _digest(c),
    )


def run_bundle_bench(config: BundleBenchConfig, progress: Progress = _stderr) -> BundleBenchResult:
    """Build the deployment in a temp folder and measure; blocking (own event loop)."""
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-bundle-") as tmp:
        return asyncio.run(_run(config, Path(tmp), progress))


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bundle`` to the ``bench`` sub-commands."""
    parser = benches.add_parser(
        "bundle",
        help="USB bundle import beside a cold sync of the same cases",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    defaults = BundleBenchConfig()
    parser.add_argument(
        "--cases", type=int, default=defaults.cases, metavar="N",
        help=f"cases (2 events each) to carry (default: {defaults.cases})",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=defaults.batch, help=argparse.SUPPRESS)
    parser.add_argument("--stall", type=float, default=defaults.stall, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    result = run_bundle_bench(
        BundleBenchConfig(cases=args.cases, batch=args.batch, stall=args.stall)
    )
    print(json.dumps(result.to_json(), indent=2) if args.json else result.format_table())
    return 0
