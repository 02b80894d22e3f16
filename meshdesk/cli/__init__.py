"""The ``meshdesk`` command line.

Every expected failure is a :class:`~meshdesk.errors.MeshdeskError`; :func:`main`
prints it as one line on stderr and returns its exit code. A traceback is a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from meshdesk._version import __version__
from meshdesk.bench import add_bench_parser
from meshdesk.cli import _commands, _demo, _run
from meshdesk.cli._bundle import add_bundle_parser
from meshdesk.cli._call import add_call_parser
from meshdesk.cli._cases import add_case_parser
from meshdesk.cli._console import add_tui_parser
from meshdesk.cli._drill import add_drill_parser
from meshdesk.cli._hub import add_hub_parser
from meshdesk.cli._invite import add_invite_parser
from meshdesk.cli._notices import add_notice_parsers
from meshdesk.cli._prefecture import add_hub_join_parser, add_prefecture_parser
from meshdesk.cli._sync import add_sync_parser
from meshdesk.errors import MeshdeskError

__all__ = ["build_parser", "main"]

log = logging.getLogger("meshdesk.cli")

_ROLES = ("center", "hq", "desk")


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="node home folder (default: $MESHDESK_HOME, else the user data folder)",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_passphrase(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help=f"file whose first line is the kit passphrase ({what})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshdesk",
        description="Offline-first mesh communicator for consultation desks.",
    )
    parser.add_argument("--version", action="version", version=f"meshdesk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # deployment …
    deployment = commands.add_parser(
        "deployment", help="create a deployment, issue and revoke node kits (HQ)"
    )
    dep_cmds = deployment.add_subparsers(dest="deployment_command", metavar="ACTION", required=True)

    create = dep_cmds.add_parser(
        "create", help="create the deployment CA and make this node its first hq node"
    )
    _add_home(create)
    create.add_argument("--name", required=True, help="deployment name, e.g. the city")
    create.add_argument("--node-name", default="HQ", help="this HQ node's name (default: HQ)")
    create.add_argument("--site", default="HQ", help="this HQ node's site (default: HQ)")
    create.add_argument("--dept", action="append", default=[], metavar="DEPT")
    create.add_argument("--qr", action="store_true", help="print the node ID as a QR code")
    _add_json(create)
    create.set_defaults(handler=_commands.deployment_create)

    issue = dep_cmds.add_parser("issue", help="write a kit for a new node")
    _add_home(issue)
    issue.add_argument("--name", required=True, help="the new node's name")
    issue.add_argument("--site", required=True, help="where it stands")
    issue.add_argument("--role", required=True, choices=_ROLES)
    issue.add_argument(
        "--dept", action="append", default=[], metavar="DEPT", help="department (repeatable)"
    )
    issue.add_argument("--out", required=True, metavar="FILE", help="kit file to write")
    _add_passphrase(issue, "protects the kit")
    issue.add_argument("--qr", action="store_true", help="print the node ID as a QR code")
    _add_json(issue)
    issue.set_defaults(handler=_commands.deployment_issue)

    web_ca = dep_cmds.add_parser(
        "web-ca", help="add the web CA to an HQ created before the web port (citizens' phones)"
    )
    _add_home(web_ca)
    _add_json(web_ca)
    web_ca.set_defaults(handler=_commands.deployment_web_ca)

    revoke = dep_cmds.add_parser("revoke", help="revoke a node's certificate")
    _add_home(revoke)
    revoke.add_argument("node", metavar="NODE", help="node ID, ID prefix or name")
    revoke.add_argument("--reason", default="", help="why (kept with the revocation)")
    _add_json(revoke)
    revoke.set_defaults(handler=_commands.deployment_revoke)

    nodes = dep_cmds.add_parser("nodes", help="list the nodes this HQ has issued")
    _add_home(nodes)
    _add_json(nodes)
    nodes.set_defaults(handler=_commands.deployment_nodes)

    # init
    init = commands.add_parser("init", help="provision this node from a kit")
    _add_home(init)
    init.add_argument("--kit", required=True, metavar="FILE")
    _add_passphrase(init, "if the kit is protected")
    init.add_argument(
        "--deployment-id",
        metavar="ID",
        help="refuse a kit of any other deployment (ID as printed by HQ)",
    )
    init.add_argument("--qr", action="store_true", help="print the node ID as a QR code")
    _add_json(init)
    init.set_defaults(handler=_commands.init)

    status = commands.add_parser("status", help="show this node's identity and store")
    _add_home(status)
    status.add_argument("--qr", action="store_true", help="print the node ID as a QR code")
    _add_json(status)
    status.set_defaults(handler=_commands.status)

    run = commands.add_parser("run", help="run this node in the foreground")
    _add_home(run)
    run.add_argument(
        "--interface",
        action="append",
        default=[],
        metavar="IF",
        help="network interface for mDNS (repeatable; default: every up IPv4 interface)",
    )
    run.add_argument("--listen", metavar="HOST:PORT", help="address to accept links on")
    run.add_argument(
        "--peer", action="append", default=[], metavar="HOST:PORT", help="static peer (repeatable)"
    )
    run.add_argument("--no-mdns", action="store_true", help="neither advertise nor browse mDNS")
    run.add_argument(
        "--web-listen", metavar="HOST:PORT", help="where citizens' phones reach the HTTPS page"
    )
    run.add_argument(
        "--web-redirect", metavar="HOST:PORT", help="plain HTTP that redirects there (port 0: off)"
    )
    run.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    run.set_defaults(handler=_run.run)

    peers = commands.add_parser("peers", help="list the running node's peers and links")
    _add_home(peers)
    _add_json(peers)
    peers.set_defaults(handler=_run.peers)

    add_case_parser(commands)
    add_tui_parser(commands)
    add_call_parser(commands)
    add_invite_parser(commands)
    add_notice_parsers(commands)
    add_bundle_parser(commands)
    add_sync_parser(commands)
    add_hub_join_parser(add_hub_parser(commands))  # run (the prefecture), join (a city HQ)
    add_bench_parser(commands)
    add_drill_parser(commands)
    add_prefecture_parser(commands)

    demo = commands.add_parser(
        "demo",
        help="a throw-away deployment (HQ + two centres) running, with the console on HQ",
    )
    demo.add_argument(
        "--dir", metavar="DIR", help="keep the deployment in DIR instead of a temp folder"
    )
    demo.add_argument(
        "--loopback",
        action="store_true",
        help="run the nodes on loopback even as root (default as root: lab namespaces)",
    )
    demo.add_argument(
        "--no-console", action="store_true", help="report what happened instead of the console"
    )
    demo.add_argument(
        "--provision-only", action="store_true", help="only make the deployment; run nothing"
    )
    demo.set_defaults(handler=_demo.demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.handler(args, os.environ)
        return code
    except MeshdeskError as exc:
        log.debug("command failed", exc_info=True)
        print(f"meshdesk: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("meshdesk: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # A disk or permission problem nobody translated yet: still one clear line.
        log.debug("unexpected OS error", exc_info=True)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"meshdesk: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
