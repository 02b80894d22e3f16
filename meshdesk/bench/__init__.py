"""``meshdesk bench …``: how fast meshdesk is, beside a baseline measured in the same run.

Every bench prints meshdesk's figure next to what the underlying library does alone
(raw SQLite for the store, later raw zeroconf and raw aiortc), so a figure can be
read without knowing the machine. Tests never assert wall-clock times; the figures
are recorded in ``docs/BENCHMARKS.md`` with the command that produced them.

Each bench is a module with an ``add_parser(benches)`` function that adds its
sub-command and sets ``handler=``; adding a bench is that function and one entry in
:data:`_BENCHES`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from meshdesk.bench import bundle, call, discovery, handover, hub, scale, store, sync, tui, web

__all__ = ["add_bench_parser"]

_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_BENCHES: tuple[Callable[[_SubParsers], None], ...] = (
    store.add_parser,
    discovery.add_parser,
    sync.add_parser,
    call.add_parser,
    handover.add_parser,
    tui.add_parser,
    web.add_parser,
    scale.add_parser,
    bundle.add_parser,
    hub.add_parser,
)


def add_bench_parser(subparsers: _SubParsers) -> argparse.ArgumentParser:
    """Add the ``bench`` command, with one sub-command per bench, to ``subparsers``.

    Each sub-command sets ``handler(args, env) -> int``, as the CLI expects.

    Returns:
        The ``bench`` parser.
    """
    bench = subparsers.add_parser(
        "bench",
        help="measure meshdesk beside a baseline (raw SQLite, ...) in the same run",
        description="Measure meshdesk beside a baseline measured in the same run.",
    )
    benches = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    for add_parser in _BENCHES:
        add_parser(benches)
    return bench
