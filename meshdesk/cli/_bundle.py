"""``meshdesk bundle export|import``: records carried on a USB stick.

Through the running node if there is one (it then passes what it imported on to
its links at once; progress comes from its ``bundle`` events), else on the store
itself (progress from the import itself; delivery receipts for what arrived are
written at once, so they go back on the next stick). Progress goes to stderr, one
line per tenth, and the result to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.bundles import Bundles
from meshdesk.cli._notices import notice_session
from meshdesk.home import NodeHome
from meshdesk.ops import BUNDLE_OPS, OPS
from meshdesk.store import Checkpoint, StoredEvent

__all__ = ["add_bundle_parser"]

Env = Mapping[str, str]
_WORDS = {"reading": "read", "checking": "checked", "storing": "stored", "writing": "written"}


def add_bundle_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bundle = commands.add_parser(
        "bundle", help="carry records on a USB stick: export to a file, import from one"
    )
    actions = bundle.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write what another node may lack to a file")
    export.add_argument("--out", required=True, metavar="FILE", help="bundle file to write")
    target = export.add_mutually_exclusive_group()
    target.add_argument(
        "--for", dest="for_node", metavar="NODE",
        help="only what NODE may lack (not its own, nor what its last bundle said it held)",
    )  # fmt: skip
    target.add_argument("--all", action="store_true", help="everything this node holds (default)")
    export.add_argument("--since", metavar="ISO", help="only chains with records received since")
    imp = actions.add_parser("import", help="check a bundle whole, then store it")
    imp.add_argument("file", metavar="FILE", help="bundle file")
    for p in (export, imp):
        p.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME, ...)")
        p.add_argument("--json", action="store_true", help="print JSON")
    export.set_defaults(handler=_run, bundle_op="bundle_export")
    imp.set_defaults(handler=_run, bundle_op="bundle_import")


#: Smaller bundles take a moment: no progress lines for them.
_LARGE = {"reading": 16 * 1024 * 1024}
_LARGE_EVENTS = 50_000


class _Shown:
    """Progress lines on stderr for large bundles, one per tenth of each phase."""

    def __init__(self) -> None:
        self._last: tuple[str, int] = ("", -1)

    def __call__(self, doing: str, done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if (doing, tenth) == self._last or total < _LARGE.get(doing, _LARGE_EVENTS):
            return
        self._last = (doing, tenth)
        unit = "bytes" if doing == "reading" else "events"
        print(f"  {done:,} of {total:,} {unit} {_WORDS.get(doing, doing)}", file=sys.stderr)


@contextlib.asynccontextmanager
async def _offline(home: NodeHome) -> AsyncIterator[Bundles]:
    async with notice_session(home) as s:

        async def imported(runs: list[tuple[list[StoredEvent], Checkpoint]]) -> None:
            await s.board.stored([e for events, _ in runs for e in events])

        yield Bundles(s.store, s.directory, s.kit, imported=imported, progress=_Shown())


async def _watched(home: NodeHome, name: str, payload: dict[str, Any]) -> Any:
    """The operation in the running node, its ``bundle`` events shown meanwhile."""
    shown = _Shown()

    async def follow() -> None:
        with contextlib.suppress(control.NodeNotRunning):
            async with control.subscribe(home.control_socket, ["bundle"]) as events:
                async for event in events:
                    data: Mapping[str, Any] = event.data
                    shown(str(data["doing"]), int(data["done"]), int(data["total"]))

    watcher = asyncio.create_task(follow())
    try:
        return await control.call(home.control_socket, name, payload)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _call(home: NodeHome, name: str, payload: dict[str, Any]) -> Any:
    if await control.try_call(home.control_socket, "status", {}) is not None:
        return await _watched(home, name, payload)
    async with _offline(home) as bundles:
        return await OPS.serve(BUNDLE_OPS.bind(bundles), complete=False).run(name, payload)


def _run(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    if args.bundle_op == "bundle_export":
        payload: dict[str, Any] = {"out": str(Path(args.out).expanduser().absolute())}
        if args.for_node:
            payload["for"] = args.for_node
        if args.since:
            payload["since"] = args.since
    else:
        payload = {"file": str(Path(args.file).expanduser().absolute())}
    result = asyncio.run(_call(home, args.bundle_op, payload))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif args.bundle_op == "bundle_export":
        print(
            f"Wrote {result['file']}: {result['events']:,} events of {result['authors']} chains,"
            f" {result['certificates']} certificates ({result['bytes']:,} bytes)."
        )
    else:
        print(
            f"Imported: {result['new_events']:,} new of {result['events']:,} events"
            f" from {result['creator']} (made {result['created_at']}); stored durably."
        )
    return 0
