"""``meshdesk announce …`` and ``meshdesk message …``: through the running node if
there is one, else on the store itself (like ``meshdesk case``).

The actions are the notice operations of the registry
(:data:`meshdesk.ops.NOTICE_OPS`): ``announce ack`` runs ``announce_ack``. Two more
actions are files, not operations: ``announce export ID --format cap --out FILE``
and ``announce import FILE.xml`` (OASIS CAP 1.2, :mod:`meshdesk.notices.cap`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.cases.book import CaseBook
from meshdesk.cases.summary import case_store
from meshdesk.cli._cases import add_param, case_payload
from meshdesk.cli._output import print_fields
from meshdesk.config import load_config
from meshdesk.directory import Directory
from meshdesk.home import NodeHome
from meshdesk.identity import NodeKit
from meshdesk.notices import NoticeBoard
from meshdesk.ops import NOTICE_OPS, OPS, OpSpec
from meshdesk.store import Store

__all__ = ["Session", "add_notice_parsers", "notice_session"]

Env = Mapping[str, str]
Call = Callable[[str, dict[str, Any]], Awaitable[Any]]
_OPERATOR = "operator"


def add_notice_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    groups = {
        "announce": commands.add_parser(
            "announce", help="post, list and acknowledge announcements; CAP 1.2 files"
        ),
        "message": commands.add_parser(
            "message", help="send and read operator messages (sealed to their recipients)"
        ),
    }
    actions = {
        name: p.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
        for name, p in groups.items()
    }
    for spec in NOTICE_OPS:
        group, _, action = spec.name.partition("_")
        p = actions[group].add_parser(action, help=spec.help)
        _common(p)
        for param in spec.params:
            if param.name != _OPERATOR:
                add_param(p, param)
        p.set_defaults(handler=_run, notice_op=spec)
    export = actions["announce"].add_parser("export", help="write an announcement as a file")
    _common(export)
    export.add_argument("id", metavar="ID", help="announcement id (or its first characters)")
    export.add_argument("--format", choices=("cap",), default="cap", help="CAP 1.2 XML")
    export.add_argument("--out", required=True, metavar="FILE", help="file to write")
    export.set_defaults(handler=_export)
    imp = actions["announce"].add_parser("import", help="post an announcement from a CAP file")
    _common(imp)
    imp.add_argument("file", metavar="FILE.xml", help="an OASIS CAP 1.2 alert")
    imp.set_defaults(handler=_import)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME, ...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--operator",
        metavar="NAME",
        help="who is doing this (default: $MESHDESK_OPERATOR, else the login name)",
    )


@dataclass(frozen=True, slots=True)
class Session:
    """A node's parts opened on its store (no node runs)."""

    board: NoticeBoard
    book: CaseBook
    store: Store
    kit: NodeKit
    directory: Directory


@contextlib.asynccontextmanager
async def notice_session(home: NodeHome) -> AsyncIterator[Session]:
    """A notice board on the store itself (no node runs), loaded."""
    now = dt.datetime.now(dt.UTC)
    kit = home.load_identity(now=now)
    config = load_config(home.config_path) if home.config_path.exists() else None
    async with case_store(home.store_path) as store:
        directory = await Directory.open(store, kit, now=lambda: now)
        wall = lambda: int(time.time() * 1000)  # noqa: E731
        book = CaseBook(store, kit, directory=directory.nodes, wall_ms=wall)
        board = NoticeBoard(
            store,
            book,
            kit,
            directory=directory.nodes,
            wall_ms=wall,
            config=None if config is None else config.node,
        )
        await board.load()
        yield Session(board, book, store, kit, directory)


async def _call(home: NodeHome, name: str, payload: dict[str, Any]) -> Any:
    live = await control.try_call(home.control_socket, name, payload)
    if live is not None:
        return live
    async with notice_session(home) as session:
        return await OPS.serve(NOTICE_OPS.bind(session.board), complete=False).run(name, payload)


def _run(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    spec: OpSpec[Any] = args.notice_op
    result = asyncio.run(_call(home, spec.name, case_payload(spec, args, env)))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    if "announcements" in result:
        _print_announcements(result["announcements"])
    elif "messages" in result:
        _print_messages(result["messages"])
    elif "severity" in result:
        _print_announcement(result)
    else:
        _print_message(result)
    return 0


def _title(a: dict[str, Any]) -> str:
    return str(a.get("title_ja") or a.get("title_en") or "")


def _print_announcements(items: list[dict[str, Any]]) -> None:
    if not items:
        print("No announcements.")
    for a in items:
        read = "read" if a["acknowledged"] else "NEW "
        print(
            f"{a['id'][24:]}  {a['severity']:<7}  {read}  {a['posted_at']}  {a['from']}: "
            f"{_title(a)}  ({a['delivered_count']} delivered, {a['read_count']} read)"
        )


def _print_announcement(a: dict[str, Any]) -> None:
    to = a["to"]
    audience = [f"site:{s}" for s in to["sites"]] + [f"role:{r}" for r in to["roles"]]
    audience += [f"dept:{d}" for d in to["departments"]]
    fields = [
        ("announcement", a["id"]),
        ("from", f"{a['from']} ({a['op']})"),
        ("severity", a["severity"] + (" (exercise)" if a["exercise"] else "")),
        ("posted", a["posted_at"]),
        ("expires", a["expires_at"] or "-"),
        ("to", ", ".join(audience) or "all"),
        ("title", _title(a)),
    ]
    if a.get("title_ja") and a.get("title_en"):
        fields.append(("title (en)", a["title_en"]))
    print_fields(fields)
    for key in ("body_ja", "body_en"):
        if a.get(key):
            print(f"\n{a[key]}")
    for site, rows in sorted(a.get("sites", {}).items()):
        print(f"\n  {site}:")
        for row in rows:
            got = row["delivered_at"] or "not yet delivered"
            read = f", read {row['read_at']} by {row['read_by']}" if row["read_at"] else ""
            print(f"    {row['name']}: delivered {got}{read}")
    waiting = a.get("not_delivered", [])
    if waiting:
        names = ", ".join(f"{w['name']} (last seen {w['last_seen'] or 'never'})" for w in waiting)
        print(f"\n  not yet delivered: {names}")


def _print_messages(items: list[dict[str, Any]]) -> None:
    if not items:
        print("No messages.")
    for m in items:
        if m["outgoing"]:
            got = sum(1 for r in m["recipients"] if r["delivered_at"])
            read = sum(1 for r in m["recipients"] if r["read_at"])
            state = f"-> {m['to']}  ({got} delivered, {read} read)"
        else:
            state = f"<- {m['from']}  ({'read' if m['read_here'] else 'NEW'})"
        print(f"{m['id'][24:]}  {m['sent_at']}  {state}: {m['text'] or '(sealed)'}")


def _print_message(m: dict[str, Any]) -> None:
    print_fields(
        [
            ("message", m["id"]),
            ("from", f"{m['from']} ({m['op']})"),
            ("to", m["to"]),
            ("sent", m["sent_at"]),
            ("case", m["case"] or "-"),
            ("text", m["text"] or "(sealed)"),
        ]
    )
    for r in m["recipients"]:
        read = f", read {r['read_at']} by {r['read_by']}" if r["read_at"] else ""
        print(f"    {r['name']}: delivered {r['delivered_at'] or 'not yet'}{read}")


def _export(args: argparse.Namespace, env: Env) -> int:
    from meshdesk.notices.cap import write_cap

    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    # The running node's view when there is one: a second writer beside it (this
    # process acknowledging deliveries) would be out of step with its store.
    view = asyncio.run(_call(home, "announce_show", {"id": args.id}))
    out = write_cap(view, Path(args.out))
    print(json.dumps({"written": str(out)}) if args.json else f"Wrote {out} (CAP 1.2).")
    return 0


def _import(args: argparse.Namespace, env: Env) -> int:
    from meshdesk.notices.cap import read_cap

    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    spec = next(s for s in NOTICE_OPS if s.name == "announce_new")
    payload = {**read_cap(Path(args.file)), **case_payload(spec, _no_options(spec, args), env)}
    result = asyncio.run(_call(home, "announce_new", payload))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _print_announcement(result)
    return 0


def _no_options(spec: OpSpec[Any], args: argparse.Namespace) -> argparse.Namespace:
    """Only ``--operator`` of the command line (the rest comes from the file)."""
    blank: dict[str, object] = {p.name: None for p in spec.params}
    blank["operator"] = args.operator
    return argparse.Namespace(**blank)
