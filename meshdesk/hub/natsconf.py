"""Configuration files of the ``nats-server`` processes: a city's leaf node and a
prefecture hub server. Pure text from plain values; the supervisor
(:mod:`meshdesk.hub.server`) writes them into the process's folder at each start.

Topology (docs/ARCHITECTURE.md, "Prefecture hub"): each city HQ runs one leaf node
with JetStream in a domain of its own (the city's name) and the city's feed stream
on it, so publishing never waits for the wide-area network; its leaf connection
goes out over TLS to the hub servers. The hub is a JetStream cluster (domain
``hub``) whose stream sources every city's stream through ``$JS.<city>.API``: after
a cut the source resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meshdesk.config import Endpoint
from meshdesk.prefecture.nats import render_authorization, render_tls
from meshdesk.prefecture.roster import Roster

__all__ = [
    "CITY_NAME",
    "HUB_DOMAIN",
    "HUB_STREAM",
    "TlsFiles",
    "city_stream",
    "city_subject",
    "hub_authorization",
    "hub_city_permissions",
    "hub_client_permissions",
    "hub_server_config",
    "leaf_config",
]

#: A city's feed name: also its JetStream domain, stream and subject token.
CITY_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_]{0,30}[a-z0-9])?")
HUB_DOMAIN = "hub"
#: The hub's stream: every city's records, sourced from the cities' streams.
HUB_STREAM = "MESHDESK_HUB"


def city_stream(city: str) -> str:
    """The name of a city's feed stream (on its leaf node)."""
    return f"MESHDESK_CITY_{city}"


def city_subject(city: str) -> str:
    """The subject a city publishes its records on."""
    return f"meshdesk.feed.{city}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of one side of the leaf connection: its certificate and key, and
    the prefecture CA that the other side's certificate must chain to."""

    cert: Path
    key: Path
    ca: Path


def _s(value: object) -> str:
    """A quoted NATS string. nats-server reads UTF-8 but no ``\\uXXXX`` escape: a
    home folder named 本部 must stay as it is."""
    text = str(value)
    if not text.isprintable():
        raise ValueError(f"cannot put {text!r} into a NATS configuration")
    return json.dumps(text, ensure_ascii=False)


def _tls(files: TlsFiles) -> list[str]:
    return [
        "  tls {",
        f"    cert_file: {_s(files.cert)}",
        f"    key_file: {_s(files.key)}",
        f"    ca_file: {_s(files.ca)}",
        "  }",
    ]


_HEADER = "# Written by meshdesk (meshdesk.hub.natsconf) at every start: edits are lost.\n"


def leaf_config(
    *,
    city: str,
    host: str,
    port: int,
    store_dir: Path,
    hub_urls: Sequence[str],
    tls: TlsFiles,
    reconnect_s: float = 1.0,
) -> str:
    """A city HQ's leaf node: clients on ``host:port`` (the HQ itself), JetStream in
    the city's domain with every write synced to disk before it is acknowledged,
    and a leaf connection over TLS to any of ``hub_urls``."""
    urls = ", ".join(_s(u) for u in hub_urls)
    lines = [
        _HEADER,
        f"server_name: {_s('city-' + city)}",
        f"host: {_s(host)}",
        f"port: {port}",
        "jetstream {",
        f"  store_dir: {_s(store_dir)}",
        f"  domain: {_s(city)}",
        '  sync_interval: "always"  # durable before acknowledged',
        "}",
        "leafnodes {",
        f'  reconnect: "{max(1, round(reconnect_s))}s"',
        "  remotes: [",
        "    {",
        f"      urls: [{urls}]",
        *("    " + line for line in _tls(tls)),
        "    }",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


def hub_client_permissions() -> dict[str, list[str]]:
    """What a prefecture hub client (the projection, ``meshdesk hub run``) may do on
    the hub servers: the JetStream API of the hub stream and of its consumers
    (stream info, create and update; consumer create, info and delete), answers to
    the stream's flow control, and its own inboxes (API replies and the ordered
    consumer's deliveries). Nothing else: not a city's feed subject, not another
    stream."""
    api = f"$JS.API.{{}}.{HUB_STREAM}"
    return {
        "publish": [
            "$JS.API.INFO",
            *(api.format(op) for op in ("STREAM.INFO", "STREAM.CREATE", "STREAM.UPDATE")),
            api.format("CONSUMER.CREATE"),
            *(api.format(op) + ".>" for op in ("CONSUMER.CREATE", "CONSUMER.INFO")),
            api.format("CONSUMER.DELETE") + ".>",
            f"$JS.FC.{HUB_STREAM}.>",
        ],
        "subscribe": ["_INBOX.>"],
    }


def hub_city_permissions(city: str) -> dict[str, list[str]]:
    """What a city's leaf connection carries (for a leaf node, ``publish`` is what
    it may send into the hub, ``subscribe`` what the hub may send to it): only the
    hub stream's sourcing of the city's stream. The hub asks the city's JetStream
    (``$JS.<city>.API``) for a source consumer and answers its flow control; the
    city sends back the consumer-create reply (``$JSC.R.*``) and the deliveries and
    heartbeats (``$JS.S.*``). Nothing else: not the hub's JetStream API (a city
    could read every city's feed or delete the hub's stream), not the projection's
    inboxes, not another city's subjects."""
    return {
        "publish": ["$JS.S.>", "$JSC.R.>"],
        "subscribe": [f"$JS.{city}.API.>", f"$JS.FC.{city}.>", f"$JS.FC.{city_stream(city)}.>"],
    }


def hub_authorization(
    roster: Roster, clients: Sequence[str], *, now: dt.datetime, account: str | None = None
) -> str:
    """The hub servers' ``authorization`` block: the cities ``roster`` admits at
    ``now``, as leaf nodes only (a city's certificate opens no client connection:
    it could read every city's feed and change the hub's streams), each held to
    :func:`hub_city_permissions`, and the prefecture's hub ``clients`` (certificate
    subjects), as clients only, each held to :func:`hub_client_permissions`."""
    return render_authorization(roster, now=now, account=account, clients=clients,
                                client_permissions=hub_client_permissions(),
                                city_connections=["LEAFNODE"],
                                permissions=hub_city_permissions,
                                client_connections=["STANDARD"])  # fmt: skip


def hub_server_config(
    *,
    name: str,
    listen: Endpoint,
    cluster: Endpoint,
    leaf: Endpoint,
    routes: Sequence[Endpoint],
    store_dir: Path,
    tls: TlsFiles,
    authorization: str,
    http: Endpoint | None = None,
    header: str | None = None,
) -> str:
    """One server of the prefecture's JetStream cluster (domain ``hub``).

    Every connection is TLS with a certificate of the prefecture CA: clients on
    ``listen`` and city leaf nodes on ``leaf`` with ``verify_and_map`` (their
    certificate's subject must be one of ``authorization``'s users: the block
    :func:`hub_authorization` renders from the roster, at the top level), routes
    between the servers on ``cluster``, to each of ``routes`` (the servers'
    cluster addresses), with ``verify`` (the hub servers' own certificates). A
    revoked city is absent from the users: after a reload
    (:meth:`meshdesk.hub.server.NatsServer.reload`, or SIGHUP) its leaf node is
    refused when it next connects. ``http``: the monitoring endpoint (``/leafz``).
    ``header``: the comment on top (None: "written at every start").
    """
    route_urls = ", ".join(_s(f"nats-route://{r}") for r in routes)

    def tls_block(verify_and_map: bool = True, indent: int = 0) -> str:
        return render_tls(cert_file=tls.cert, key_file=tls.key, ca_file=tls.ca,
                          verify_and_map=verify_and_map, indent=indent).rstrip("\n")  # fmt: skip

    lines = [
        _HEADER if header is None else header,
        f"server_name: {_s(name)}",
        f"host: {_s(listen.host)}",
        f"port: {listen.port}",
        *([f"http: {_s(str(http))}"] if http is not None else []),
        tls_block(),
        authorization.rstrip("\n"),
        "jetstream {",
        f"  store_dir: {_s(store_dir)}",
        f"  domain: {_s(HUB_DOMAIN)}",
        "}",
        "cluster {",
        f"  name: {_s(HUB_DOMAIN)}",
        f"  host: {_s(cluster.host)}",
        f"  port: {cluster.port}",
        f"  routes: [{route_urls}]",
        tls_block(verify_and_map=False, indent=2),
        "}",
        "leafnodes {",
        f"  host: {_s(leaf.host)}",
        f"  port: {leaf.port}",
        tls_block(indent=2),
        "}",
    ]
    return "\n".join(lines) + "\n"
