"""``meshdesk case …``: through the running node if there is one, else the store."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import time
from collections.abc import Mapping
from typing import Any

from meshdesk import control
from meshdesk.cases.book import CaseBook
from meshdesk.cases.model import Category, Status, Urgency
from meshdesk.cases.ops import run_case_op
from meshdesk.cli._output import print_fields
from meshdesk.errors import AuthError
from meshdesk.home import NodeHome
from meshdesk.identity import NodeInfo, RevocationList
from meshdesk.net.trust import TrustPolicy
from meshdesk.store import Store

Env = Mapping[str, str]

OPERATOR_ENV = "MESHDESK_OPERATOR"


def _one_of(vocabulary: type[Category | Urgency | Status]) -> str:
    return "one of: " + ", ".join(str(m) for m in vocabulary)


def add_case_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    case = commands.add_parser("case", help="create, list, show and edit consultation cases")
    actions = case.add_subparsers(dest="case_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, *, with_id: bool = True) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text)
        p.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME, ...)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument(
            "--operator",
            metavar="NAME",
            help=f"who is doing this (default: ${OPERATOR_ENV}, else the login name)",
        )
        if with_id:
            p.add_argument("id", metavar="ID", help="case id (or its first characters)")
        p.set_defaults(handler=run_case_command)
        return p

    new = action("new", "record a new consultation", with_id=False)
    new.add_argument("--category", required=True, help=_one_of(Category))
    new.add_argument("--urgency", required=True, help=_one_of(Urgency))
    new.add_argument("--name", required=True, help="the citizen's name (sealed)")
    new.add_argument("--furigana", help="reading of the name (sealed)")
    new.add_argument("--age", type=int)
    new.add_argument("--phone")
    new.add_argument("--address")
    new.add_argument("--shelter", help="current shelter")
    new.add_argument("--language")
    new.add_argument("--summary", help="what the consultation is about (sealed note)")
    new.add_argument("--consent", action="append", default=[], metavar="DEPT",
                     help="department the citizen agreed to share with (repeatable)")  # fmt: skip
    new.add_argument("--department", help="department the case is assigned to")

    lister = action("list", "list cases, most urgent first", with_id=False)
    lister.add_argument("--status", help=_one_of(Status))
    lister.add_argument("--urgency", help=_one_of(Urgency))

    action("show", "show one case in full")
    note = action("note", "add a note (sealed to the case's audience)")
    note.add_argument("--text", required=True)
    refer = action("refer", "refer the case to a department")
    refer.add_argument("--department", required=True)
    refer.add_argument("--reason", required=True, help="why, in a few words")
    status = action("status", "change the case's status")
    status.add_argument("status", help=_one_of(Status))
    action("resolve", "mark the case resolved")
    consent = action("consent", "add a department the citizen consented to share with")
    consent.add_argument("--department", required=True)
    setter = action("set", "set a field (also resolves a conflict on it)")
    setter.add_argument("--field", required=True, choices=["category", "urgency", "department"])
    setter.add_argument("--value", required=True)


def _payload(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    skip = {"home", "json", "handler", "command", "case_command", "verbose"}
    payload = {k: v for k, v in vars(args).items() if k not in skip}
    payload["operator"] = args.operator or env.get(OPERATOR_ENV) or getpass.getuser()
    return payload


async def _offline(home: NodeHome, name: str, payload: Mapping[str, Any]) -> object:
    now = dt.datetime.now(dt.UTC)
    kit = home.load_identity(now=now)
    async with Store.open(home.store_path) as store:
        crl = None
        stored = await store.revocation_list()
        if stored is not None:
            try:
                crl = RevocationList.load(stored[1], kit.ca_cert)
            except AuthError:
                crl = None
        trust = TrustPolicy(kit.ca_cert, crl)

        async def directory() -> list[NodeInfo]:
            infos = []
            for der in (await store.certificates()).values():
                try:
                    infos.append(trust.verify_peer(der, now=now))
                except AuthError:
                    continue
            return infos

        book = CaseBook(store, kit, directory=directory, wall_ms=lambda: int(time.time() * 1000))
        return await run_case_op(book, name, payload)


async def _dispatch(home: NodeHome, name: str, payload: Mapping[str, Any]) -> object:
    live = await control.try_call(home.control_socket, "case", {"op": name, "args": payload})
    if live is not None:
        return live
    return await _offline(home, name, payload)


def run_case_command(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    result = asyncio.run(_dispatch(home, args.case_command, _payload(args, env)))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif isinstance(result, list):
        _print_list(result)
    elif isinstance(result, dict):
        _print_case(result)
    return 0


def _print_list(cases: list[dict[str, Any]]) -> None:
    if not cases:
        print("No cases.")
    for c in cases:
        who = c.get("name") or "(sealed)"
        flag = "  CONFLICT" if c.get("conflicts") else ""
        print(
            f"{c['id'][:8]}  {c['urgency'] or '-':<9}  {c['status'] or '-':<11}  "
            f"{c['category'] or '-':<17}  {who} @ {c['site'] or '-'}{flag}"
        )


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
    for conflict in c.get("conflicts", []):
        values = " / ".join(f"{v['value']} ({v['op']} {v['at']})" for v in conflict["candidates"])
        print(f"  CONFLICT on {conflict['field']}: {values}")
    for note in c.get("notes", []):
        print(f"  note {note['at']} {note['by']}: {note['text'] or '(sealed)'}")
    for ref in c.get("referrals", []):
        print(f"  referral to {ref['department']}: {ref['state']} ({ref['by']} {ref['at']})")
