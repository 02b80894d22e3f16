"""Announce a made-up node over mDNS and print what it sees, as JSON lines.

Run inside a lab namespace (never on a machine's real interfaces)::

    .venv/bin/python tests/lab/mdns_probe.py --iface eth0 --name 本庁 --seed h1 --duration 6

Lines on stdout, each a JSON object with ``event`` and ``t`` (seconds since the
script started, before its imports):

* ``started``: discovery is registered and browsing (``node_id``, ``instance``);
* ``found``: a sighting (``node_id``, ``name``, ``site``, ``role``, ``proto``,
  ``addresses`` as ``host:port``);
* ``lost``: ``node_id`` withdrew (goodbye) or expired;
* ``refreshed``: a ``--refresh-at`` re-query finished;
* ``closed``: goodbye sent, sockets closed. Exit status 0.

It stops after ``--duration`` seconds, or earlier on SIGTERM/SIGINT (with a goodbye).

Not part of the package: the lab tests start it with ``Lab.popen``/``Lab.run``.
"""

from __future__ import annotations

import time

T0 = time.monotonic()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from meshdesk.identity import NodeId, NodeInfo, Role  # noqa: E402
from meshdesk.net.discovery import Sighting, ZeroconfDiscovery  # noqa: E402
from meshdesk.net.interfaces import select_interfaces  # noqa: E402


def _emit(event: str, **fields: object) -> None:
    line = {"event": event, "t": round(time.monotonic() - T0, 4), **fields}
    print(json.dumps(line, ensure_ascii=False), flush=True)


def _on_found(sighting: Sighting) -> None:
    _emit(
        "found",
        node_id=str(sighting.node_id),
        name=sighting.name,
        site=sighting.site,
        role=sighting.role,
        proto=sighting.proto,
        addresses=[str(a) for a in sighting.addresses],
        sources=sorted({a.source for a in sighting.addresses}),
    )


def _on_lost(node_id: NodeId) -> None:
    _emit("lost", node_id=str(node_id))


async def _main(args: argparse.Namespace) -> int:
    node_id = NodeId.from_public_bytes(hashlib.sha256(args.seed.encode()).digest())
    info = NodeInfo(
        node_id=node_id,
        name=args.name,
        site=args.site,
        role=Role(args.role),
        departments=(),
        deployment="lab",
        serial=1,
    )
    interfaces = select_interfaces(args.iface)
    discovery = ZeroconfDiscovery(
        info,
        args.port,
        interfaces,
        on_found=_on_found,
        on_lost=_on_lost,
        resolve_timeout=args.resolve_timeout,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop early, but still say goodbye
        loop.add_signal_handler(sig, stop.set)
    _emit("starting", node_id=str(node_id), interfaces=[i.name for i in interfaces])
    async with discovery:
        _emit("started", node_id=str(node_id), instance=discovery.instance)
        if args.refresh_at is not None:
            await _until(stop, T0 + args.refresh_at)
            if not stop.is_set():
                await discovery.refresh()
                _emit("refreshed")
        await _until(stop, T0 + args.duration)
    _emit("closed")
    return 0


async def _until(stop: asyncio.Event, deadline: float) -> None:
    """Sleep until ``deadline`` (monotonic) or until ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iface", action="append", default=[], help="interface (repeatable)")
    parser.add_argument("--name", default="lab node")
    parser.add_argument("--site", default="lab")
    parser.add_argument("--role", default="desk", choices=[r.value for r in Role])
    parser.add_argument("--seed", required=True, help="makes the node id (any text)")
    parser.add_argument("--port", type=int, default=7420)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds, from start")
    parser.add_argument("--refresh-at", type=float, default=None, help="seconds, from start")
    parser.add_argument("--resolve-timeout", type=float, default=3.0)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not args.iface:
        parser.error("name at least one --iface: a probe never picks interfaces by itself")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
