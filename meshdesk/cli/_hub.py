"""``meshdesk hub run``: the prefecture hub's projection into PostgreSQL.

Runs until Ctrl-C, printing a progress line every few seconds; a lost hub server
or database is retried (the position is in the database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Mapping

from meshdesk._lifecycle import cancel_and_wait
from meshdesk.errors import UsageError
from meshdesk.hub.gate import RosterGate
from meshdesk.hub.natsconf import CITY_NAME
from meshdesk.hub.projection import Projection, hub_client_tls
from meshdesk.prefecture.home import PREFECTURE_HOME_ENV, PrefectureHome

__all__ = ["add_hub_parser"]

#: Seconds between progress lines.
PROGRESS_EVERY = 5.0


def add_hub_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``hub`` with its ``run`` action; returns its actions (``join`` is added
    by :mod:`meshdesk.cli._prefecture`)."""
    hub = commands.add_parser(
        "hub", help="the prefecture hub: run its projection (prefecture), join it (city HQ)"
    )
    actions = hub.add_subparsers(dest="hub_action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="keep PostgreSQL in step with the hub stream")
    run.add_argument(
        "--nats",
        action="append",
        required=True,
        metavar="URL",
        help="a hub server's client URL, e.g. nats://127.0.0.1:4222 (repeat for each)",
    )
    run.add_argument(
        "--postgres", required=True, metavar="DSN", help="e.g. postgresql://hub@db/prefecture"
    )
    run.add_argument(
        "--city",
        action="append",
        default=[],
        metavar="NAME",
        help="a city whose stream the hub stream must source (repeat; kept once added)",
    )
    run.add_argument("--replicas", type=int, default=3, help="hub stream replicas (default 3)")
    run.add_argument(
        "--prefecture-home",
        metavar="DIR",
        help="the prefecture home whose roster.json (and ca.crt) says which cities are"
        " admitted (default: $MESHDESK_PREFECTURE_HOME); records of others are dropped;"
        " its client certificate is the projection's identity on the hub servers",
    )
    run.add_argument(
        "--client",
        default="projection",
        metavar="NAME",
        help="the hub client certificate in the prefecture home to connect with"
        " (meshdesk prefecture issue-client; default: projection)",
    )
    run.set_defaults(handler=run_hub)
    return actions


def run_hub(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    for city in args.city:
        if not CITY_NAME.fullmatch(city):
            raise UsageError(f"--city {city!r}: 1 to 32 of a-z, 0-9 and _ (not at either end)")
    if not 1 <= args.replicas <= 5:
        raise UsageError("--replicas must be 1 to 5")
    gate = None
    tls = None
    where = args.prefecture_home or env.get(PREFECTURE_HOME_ENV)
    if where:
        home = PrefectureHome.resolve(where, env)
        gate = RosterGate(home)
        files = home.client_files(args.client)
        if not files.key_path.exists():
            raise UsageError(
                f"the prefecture home {home.path} holds no hub client {args.client!r}: issue"
                f" one with 'meshdesk prefecture issue-client {args.client}', render the hub"
                " servers' authorization again and reload them"
            )
        tls = hub_client_tls(files.cert_path, files.key_path, files.ca_path)
    else:
        print(
            "hub: no prefecture home (--prefecture-home): connecting without a client"
            " certificate, and records of every city the hub servers let in are taken",
            file=sys.stderr,
        )
    projection = Projection(args.nats, args.postgres, args.city, replicas=args.replicas,
                            admitted=gate, tls=tls)  # fmt: skip
    logging.getLogger("asyncio").addFilter(_ssl_eof_noise)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(projection))
    return 0


def _ssl_eof_noise(record: logging.LogRecord) -> bool:
    """Drop asyncio's "returning true from eof_received() has no effect when using
    ssl": said when a TLS connection to a hub server closes (nats-py's streams over
    TLS), harmless, and a worry to an operator reading it. Everything else passes."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


async def _run(projection: Projection) -> None:
    task = asyncio.create_task(projection.run(), name="hub projection")
    try:
        last = -1
        while not task.done():
            await asyncio.wait([task], timeout=PROGRESS_EVERY)
            s = projection.stats
            if s.position != last:
                last = s.position
                print(
                    f"hub: position {s.position}, {s.applied} records applied,"
                    f" {s.duplicates} copies dropped, {s.refused} refused",
                    file=sys.stderr,
                    flush=True,
                )
        task.result()
    finally:
        await cancel_and_wait(task)
