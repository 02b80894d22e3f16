"""``meshdesk invite new|list|admit|decline``: citizens' phones, through the running node.

The actions are the invitation operations of the registry
(:data:`meshdesk.ops.INVITE_OPS`): ``invite new`` runs ``invite_new`` and prints the
URL (and, with ``--qr``, the QR code a phone scans; ``--out FILE.png|.svg`` writes
a printable one), ``invite list`` shows who waits with which code, ``invite admit
CODE`` and ``invite decline CODE`` answer them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import segno

from meshdesk import control
from meshdesk.cli._output import print_fields, print_qr
from meshdesk.errors import UsageError
from meshdesk.home import NodeHome

__all__ = ["add_invite_parser", "write_qr"]

Env = Mapping[str, str]


def add_invite_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    invite = commands.add_parser(
        "invite", help="invite a citizen's phone into a consultation (through the running node)"
    )
    actions = invite.add_subparsers(dest="invite_action", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="a single-use invitation: its URL and QR code")
    new.add_argument("--case", metavar="ID", help="the case the consultation is about")
    new.add_argument("--call", metavar="CALL_ID", help="bring the citizen into this running call")
    new.add_argument("--qr", action="store_true", help="print the QR code for the phone")
    new.add_argument("--out", metavar="FILE", help="write a printable QR code (.png or .svg)")
    listing = actions.add_parser("list", help="every invitation: who waits, with which code")
    admit = actions.add_parser("admit", help="let the citizen showing CODE in")
    decline = actions.add_parser("decline", help="send the citizen showing CODE away")
    for action in (admit, decline):
        action.add_argument("code", metavar="CODE", help="the 4-digit code on the phone")
    for action in (new, listing, admit, decline):
        action.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME)")
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(handler=run_invite)


def write_qr(url: str, out: Path) -> None:
    """A printable QR code of ``url`` (PNG or SVG by the file's suffix)."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise UsageError(f"--out {out}: write a .png or .svg file")
    if out.exists():
        raise UsageError(f"{out} exists; not overwriting it")
    try:
        segno.make(url, error="m").save(str(out), scale=8, border=4)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc


def _show(invite: Mapping[str, Any]) -> None:
    fields = [
        ("invitation", str(invite["invite_id"])),
        ("state", str(invite["state"])),
        ("code", str(invite.get("code") or "-")),
        ("case", str(invite.get("case_id") or "-")),
    ]
    if invite.get("expires_in_s") is not None:
        fields.append(("expires in", f"{invite['expires_in_s']:.0f} s"))
    if invite.get("url"):
        fields.append(("url", str(invite["url"])))
    print_fields(fields)


def run_invite(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    action = args.invite_action
    if action == "new":
        request = {"case": args.case, "call_id": args.call}
        result: Any = asyncio.run(control.call(home.control_socket, "invite_new", request))
    elif action == "list":
        result = asyncio.run(control.call(home.control_socket, "invite_list"))
    else:
        op = f"invite_{action}"
        result = asyncio.run(control.call(home.control_socket, op, {"code": args.code}))
    if action == "new" and args.out:
        write_qr(str(result["url"]), Path(args.out))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif action == "list":
        if not result:
            print("no invitations")
        for invite in result:
            _show(invite)
            print()
    else:
        _show(result)
    if action == "new" and args.qr:
        print_qr(str(result["url"]))
    return 0
