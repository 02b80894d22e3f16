"""``meshdesk tui``: the operator console. The console package is imported lazily, so
the rest of the CLI (and the core) never loads Textual."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from collections.abc import Mapping

from meshdesk.cli._cases import OPERATOR_ENV
from meshdesk.config import load_config
from meshdesk.home import NodeHome

__all__ = ["add_tui_parser", "tui"]


def add_tui_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "tui", help="the operator console (attaches to the running node, or starts one)"
    )
    parser.add_argument("--home", metavar="DIR", help="node home folder")
    parser.add_argument(
        "--lang", choices=("ja", "en"), help="language (default: from the locale, else config)"
    )
    parser.add_argument(
        "--operator", help=f"who is at the desk (default: ${OPERATOR_ENV}, else the login name)"
    )
    parser.set_defaults(handler=tui)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def tui(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    config = load_config(home.config_path)

    from meshdesk.tui.i18n import choose_language
    from meshdesk.tui.run import run_console

    lang = choose_language(args.lang, env, config.node.language)
    operator = args.operator or env.get(OPERATOR_ENV) or _login()
    return asyncio.run(run_console(home, config, lang=lang, operator=operator))
