"""``meshdesk case …``: through the running node if there is one, else the store.

The actions are the case operations of the registry (:data:`meshdesk.ops.CASE_OPS`):
``meshdesk case show`` runs ``case_show``, with one option (or positional) per
argument of the operation and its help text. A new case operation is a new action.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.cases.book import CaseBook
from meshdesk.cases.summary import case_store
from meshdesk.cli._output import print_fields
from meshdesk.directory import Directory
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.ops import CASE_OPS, OPS, Kind, OpSpec, Param
from meshdesk.ops.cases import MAX_PAGE

__all__ = ["add_case_parser", "add_param", "case_payload", "run_case_command"]

Env = Mapping[str, str]

OPERATOR_ENV = "MESHDESK_OPERATOR"
#: Cases ``case list`` prints as a table unless ``--limit`` says otherwise.
TEXT_PAGE = 50
#: Filled in by the CLI (``--operator``, else the environment, else the login).
_OPERATOR = "operator"


def add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    """One argument of an operation as a command-line option (or positional)."""
    hint = {
        Kind.CHOICE: param.describe(),
        Kind.INT: param.describe(),
        Kind.DATE: "YYYY-MM-DD",
        Kind.TEXTS: "repeatable",
    }.get(param.kind)
    help_text = param.help
    if hint:
        help_text = f"{help_text} ({hint})" if help_text else hint
    if param.positional:
        parser.add_argument(param.name, metavar=param.metavar, help=help_text)
        return
    flag = "--" + param.name.replace("_", "-")
    options: dict[str, Any] = {"dest": param.name, "help": help_text or None}
    if param.metavar:
        options["metavar"] = param.metavar
    match param.kind:
        case Kind.INT:
            options["type"] = int
        case Kind.BOOL:
            options.update(action="store_true", default=None)
        case Kind.TEXTS:
            options["action"] = "append"
        case _:
            pass
    parser.add_argument(flag, required=param.required, **options)


def add_case_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    case = commands.add_parser("case", help="create, list, show and edit consultation cases")
    actions = case.add_subparsers(dest="case_command", metavar="ACTION", required=True)
    for spec in CASE_OPS:
        _op_parser(actions.add_parser(spec.name.removeprefix("case_"), help=spec.help), spec)
    # ``meshdesk export`` is ``meshdesk case export`` (the spelling, and shorter).
    export = OPS.spec("case_export")
    _op_parser(commands.add_parser("export", help=export.help), export)


def _op_parser(p: argparse.ArgumentParser, spec: OpSpec[Any]) -> None:
    p.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME, ...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--operator",
        metavar="NAME",
        help=f"who is doing this (default: ${OPERATOR_ENV}, else the login name)",
    )
    for param in spec.params:
        if param.name != _OPERATOR:
            add_param(p, param)
    p.set_defaults(handler=run_case_command, case_op=spec)


def case_payload(spec: OpSpec[Any], args: argparse.Namespace, env: Env) -> dict[str, Any]:
    """The operation's arguments from the command line (unset options left out)."""
    payload = {
        p.name: getattr(args, p.name)
        for p in spec.params
        if p.name != _OPERATOR and getattr(args, p.name) is not None
    }
    if any(p.name == _OPERATOR for p in spec.params):
        payload[_OPERATOR] = args.operator or env.get(OPERATOR_ENV) or getpass.getuser()
    if isinstance(payload.get("out"), str):  # the node may run elsewhere in the tree
        payload["out"] = str(Path(payload["out"]).expanduser().resolve())
    return payload


Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


@contextlib.asynccontextmanager
async def _offline(home: NodeHome) -> AsyncIterator[Call]:
    """Run case operations on the store itself (no node runs), opened once, so that
    a listing's pages all come from one open store."""
    now = dt.datetime.now(dt.UTC)
    kit = home.load_identity(now=now)
    async with case_store(home.store_path) as store:
        directory = await Directory.open(store, kit, now=lambda: now)
        book = CaseBook(
            store, kit, directory=directory.nodes, wall_ms=lambda: int(time.time() * 1000)
        )
        dispatcher = OPS.serve(CASE_OPS.bind(book), complete=False)
        if await store.index.search_backlog():  # no node keeps the search terms: catch up
            while await book.listing.index_search():
                pass
        yield dispatcher.run


async def _run_one(home: NodeHome, name: str, payload: dict[str, Any]) -> Any:
    live = await control.try_call(home.control_socket, name, payload)
    if live is not None:
        return live
    async with _offline(home) as call:
        return await call(name, payload)


def run_case_command(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    spec: OpSpec[Any] = args.case_op
    payload = case_payload(spec, args, env)
    if spec.name == "case_list":
        return asyncio.run(_list(home, payload, as_json=args.json))
    if spec.name == "case_export":
        result = asyncio.run(_export(home, payload))
    else:
        result = asyncio.run(_run_one(home, spec.name, payload))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif spec.name == "case_export":
        personal = ", with personal fields" if result["personal"] else ""
        print(f"Exported {result['rows']} cases{personal} to {result['path']}.")
    elif spec.name == "case_history":
        for row in result["events"]:
            who = f"{row['name'] or row['node'][:7]} {row['op']}".strip()
            print(f"{row['at']}  {row['action']:<16}  {who}  {row['detail']}".rstrip())
    elif isinstance(result, dict):
        _print_case(result)
    return 0


#: Longest an export through the running node may take (a million cases: minutes).
EXPORT_WAIT = 3600.0


async def _export(home: NodeHome, payload: dict[str, Any]) -> Any:
    """``export``: through the running node (its log lines about the export shown as
    progress on stderr), else on the store itself."""
    socket = home.control_socket
    async with contextlib.AsyncExitStack() as stack:
        try:
            events = await stack.enter_async_context(control.subscribe(socket, ["log"]))
        except control.NodeNotRunning:
            async with _offline(home) as call:
                return await call("case_export", payload)

        async def show() -> None:
            async for event in events:
                message = str(event.data.get("message", ""))
                if message.startswith("export to "):
                    print(message, file=sys.stderr, flush=True)

        shower = asyncio.create_task(show())
        stack.push_async_callback(_cancelled, shower)
        return await control.call(socket, "case_export", payload, wait=EXPORT_WAIT)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, MeshdeskError):
        await task


async def _list(home: NodeHome, payload: dict[str, Any], *, as_json: bool) -> int:
    """``case list``: one page as a table (naming the next page), or with ``--json``
    every matching case (up to ``--limit``) as one JSON object per line, read page
    by page, so memory stays flat however many cases match."""
    wanted: int | None = payload.pop("limit", None)
    per_page = min(wanted or MAX_PAGE, MAX_PAGE) if as_json else (wanted or TEXT_PAGE)
    args = {**payload, "limit": per_page}
    socket = home.control_socket

    async def remote(name: str, request: dict[str, Any]) -> Any:
        return await control.call(socket, name, request)

    first = await control.try_call(socket, "case_list", args)
    if first is not None:
        await _output(remote, first, args, wanted, as_json=as_json)
        return 0
    async with _offline(home) as call:
        await _output(call, await call("case_list", args), args, wanted, as_json=as_json)
    return 0


async def _output(
    call: Call, page: dict[str, Any], args: dict[str, Any], wanted: int | None, *, as_json: bool
) -> None:
    if not as_json:
        _print_list(page["cases"], page.get("next"))
        return
    shown = 0
    while True:
        for case in page["cases"]:
            if wanted is not None and shown >= wanted:
                return
            print(json.dumps(case, ensure_ascii=False))
            shown += 1
        if page.get("next") is None:
            return
        sys.stdout.flush()
        page = await call("case_list", {**args, "after": page["next"]})


def _print_list(cases: list[dict[str, Any]], after: str | None) -> None:
    if not cases:
        print("No cases.")
    for c in cases:
        who = c.get("name") or "(sealed)"
        flag = "  CONFLICT" if c.get("conflicts") else ""
        print(
            f"{c['id'][24:]}  {c['urgency'] or '-':<9}  {c['status'] or '-':<11}  "
            f"{c['category'] or '-':<17}  {who} @ {c['site'] or '-'}{flag}"
        )
    if after is not None:
        print(f"More cases follow: add --after {after[24:]} for the next page.")


def _print_case(c: dict[str, Any]) -> None:
    personal = c.get("personal") or {}
    fields = [
        ("case", c["id"]),
        ("category", c["category"] or "-"),
        ("urgency", c["urgency"] or "-"),
        ("status", c["status"] or "-"),
        ("department", c["department"] or "-"),
        ("site", c["site"] or "-"),
        ("created", c["created_at"] or "-"),
        ("consent", ", ".join(c["consent"]) or "-"),
    ]
    if c.get("readable"):
        fields += [(k, str(v)) for k, v in personal.items() if v is not None]
    else:
        fields.append(("personal", "sealed (this node is not in the case's audience)"))
    print_fields(fields)
    if c.get("erasure"):
        print(f"  ERASED: {c['erasure']['line']}")
    for conflict in c.get("conflicts", []):
        values = " / ".join(f"{v['value']} ({v['op']} {v['at']})" for v in conflict["candidates"])
        print(f"  CONFLICT on {conflict['field']}: {values}")
    for note in c.get("notes", []):
        print(f"  note {note['at']} {note['by']}: {note['text'] or '(sealed)'}")
    for ref in c.get("referrals", []):
        print(f"  referral to {ref['department']}: {ref['state']} ({ref['by']} {ref['at']})")
