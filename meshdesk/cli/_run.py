"""``meshdesk run`` and the commands that talk to a running node."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import signal
import sys
from collections.abc import Mapping
from typing import Any

from meshdesk import control
from meshdesk._heap import settled_heap
from meshdesk.cli._output import print_fields
from meshdesk.clock import SKEW_WARN_MS, describe_offset
from meshdesk.config import Config, Endpoint, load_config
from meshdesk.errors import ConfigError
from meshdesk.home import NodeHome
from meshdesk.node import Node

Env = Mapping[str, str]

log = logging.getLogger("meshdesk.run")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for machines (``--log-json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, as_json: bool, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("aiosqlite", "asyncio", "zeroconf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def effective_config(home: NodeHome, args: argparse.Namespace) -> Config:
    """config.toml with the command line's --listen, --peer, --interface and --web-* on top."""
    config = load_config(home.config_path)
    peers = list(config.network.static_peers)
    for text in args.peer:
        try:
            peers.append(Endpoint.parse(text))
        except ValueError as exc:
            raise ConfigError(f"--peer {text!r}: {exc}") from exc
    return config.with_overrides(
        listen=args.listen,
        static_peers=peers,
        interfaces=args.interface or None,
        mdns=False if args.no_mdns else None,
        web_listen=getattr(args, "web_listen", None),
        web_redirect=getattr(args, "web_redirect", None),
    )


def run(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    config = effective_config(home, args)
    configure_logging(as_json=args.log_json, verbose=args.verbose)
    return asyncio.run(_serve(home, config))


async def _serve(home: NodeHome, config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Node(home, config):
            with settled_heap():
                log.info("ready; stop with Ctrl-C")
                await stop.wait()
            log.info("shutting down")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return 0


def _warnings(peer: dict[str, Any]) -> list[tuple[str, str]]:
    """What staff must act on: a clock that is off, a copy running elsewhere, offences."""
    out = []
    offset = peer.get("clock_offset_ms")
    if isinstance(offset, int) and abs(offset) > SKEW_WARN_MS:
        out.append(("clock", describe_offset(offset, "this node's")))
    if peer.get("twin"):
        out.append(("copy", f"a second node with this identity at {peer['twin']} was refused"))
    if peer.get("offences"):
        out.append(("offences", f"{peer['offences']} malformed or forged frames"))
    return out


def peers(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    result = asyncio.run(control.call(home.control_socket, "peers"))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    if not result:
        print("No peers known yet.")
        return 0
    for peer in result:
        rtt = f"{peer['rtt_ms']:.1f} ms" if peer.get("rtt_ms") is not None else "-"
        print(f"{peer['node_id']}  {peer['state']:<10}  {peer['name']} @ {peer['site']}")
        print_fields(
            [
                ("addresses", ", ".join(peer["addresses"]) or "-"),
                ("found by", ", ".join(peer["found_by"]) or "-"),
                ("rtt", rtt),
            ]
            + ([("reason", peer["reason"])] if peer.get("reason") else [])
            + _warnings(peer)
        )
    return 0
