"""``meshdesk case …``: through the running node if there is one, else the store.

The actions are the case operations of the registry (:data:`meshdesk.ops.CASE_OPS`):
``meshdesk case show`` runs ``case_show``, with one option (or positional) per
argument of the operation and its help text. A new case operation is a new action.
"""

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
from meshdesk.cli._output import print_fields
from meshdesk.directory import Directory
from meshdesk.home import NodeHome
from meshdesk.ops import CASE_OPS, OPS, Kind, OpSpec, Param
from meshdesk.store import Store

__all__ = ["add_case_parser", "case_payload", "run_case_command"]

Env = Mapping[str, str]

OPERATOR_ENV = "MESHDESK_OPERATOR"
#: Filled in by the CLI (``--operator``, else the environment, else the login).
_OPERATOR = "operator"


def _add_param(parser: argparse.ArgumentParser, param: Param) -> None:
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
        p = actions.add_parser(spec.name.removeprefix("case_"), help=spec.help)
        p.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME, ...)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument(
            "--operator",
            metavar="NAME",
            help=f"who is doing this (default: ${OPERATOR_ENV}, else the login name)",
        )
        for param in spec.params:
            if param.name != _OPERATOR:
                _add_param(p, param)
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
    return payload


async def _offline(home: NodeHome, name: str, payload: Mapping[str, Any]) -> object:
    now = dt.datetime.now(dt.UTC)
    kit = home.load_identity(now=now)
    async with Store.open(home.store_path) as store:
        directory = await Directory.open(store, kit, now=lambda: now)
        book = CaseBook(
            store, kit, directory=directory.nodes, wall_ms=lambda: int(time.time() * 1000)
        )
        return await OPS.serve(CASE_OPS.bind(book), complete=False).run(name, payload)


async def _dispatch(home: NodeHome, name: str, payload: Mapping[str, Any]) -> object:
    live = await control.try_call(home.control_socket, name, payload)
    if live is not None:
        return live
    return await _offline(home, name, payload)


def run_case_command(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    spec: OpSpec[Any] = args.case_op
    result = asyncio.run(_dispatch(home, spec.name, case_payload(spec, args, env)))
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
