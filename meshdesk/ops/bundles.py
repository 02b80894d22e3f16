"""Bundle operations (``bundle_*``): records carried on a USB stick
(:mod:`meshdesk.bundles`).

Their context is a :class:`~meshdesk.bundles.Bundles`, so the CLI runs them on the
store itself when no node runs; with a node running they run in the node, which
then passes what was imported on to its links at once.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from meshdesk.errors import UsageError
from meshdesk.ops._registry import Topic
from meshdesk.ops._schema import Args, text

if TYPE_CHECKING:
    from meshdesk.bundles import Bundles

__all__ = ["BUNDLE_OPS"]

BUNDLE_OPS: Topic[Bundles] = Topic("bundle", "USB bundles")


def _path(args: Args, key: str) -> Path:
    path = Path(args.text(key))
    if not path.is_absolute():
        raise UsageError(f"{key} must be an absolute path (the node may run elsewhere)")
    return path


def _since(text_: str | None) -> int | None:
    if text_ is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text_.strip())
    except ValueError:
        raise UsageError(f"since: {text_!r} is not an ISO date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@BUNDLE_OPS.op(
    "bundle_export",
    "write what another node may lack (cases, announcements, messages, receipts) to a file",
    text("out", "the bundle file to write (absolute path)", required=True),
    text("for", "the node it is for (id, its start, or name): only what it may lack"),
    text("since", "only chains with records received since (ISO date or time, UTC)"),
)
async def _export(bundles: Bundles, args: Args) -> object:
    return await bundles.export(
        _path(args, "out"),
        for_node=await bundles.node_id(args.maybe_text("for")),
        since_ms=_since(args.maybe_text("since")),
    )


@BUNDLE_OPS.op(
    "bundle_import",
    "check a bundle file whole, then store it (importing twice changes nothing)",
    text("file", "the bundle file (absolute path)", positional=True, metavar="FILE"),
)
async def _import(bundles: Bundles, args: Args) -> object:
    return (await bundles.import_file(_path(args, "file"))).to_json()
