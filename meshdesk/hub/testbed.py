"""A prefecture hub on one machine, for tests and ``meshdesk bench hub``: a
prefecture home (its CA, server certificates, the cities' hub credentials, the
projection's client certificate: :mod:`meshdesk.prefecture`), a 3-server
JetStream cluster whose servers admit the roster's cities (and the projection)
and nobody else, and a throw-away PostgreSQL, all on 127.0.0.1.
:meth:`HubBed.join` runs a city HQ's side of the join ceremony (``meshdesk hub
join``) with the credential issued for it.

PostgreSQL is Debian's (``postgresql``): ``initdb`` and ``pg_ctl`` run into a
temporary folder of their own, as the ``postgres`` user when we are root (the
server refuses to run as root), on a free port, with trust authentication on the
loopback only. Everything stops, and the folders go, when the exit stack unwinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import pwd
import random
import shutil
import socket
import ssl
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshdesk.config import Endpoint
from meshdesk.errors import ConfigError
from meshdesk.home import NodeHome
from meshdesk.hub.projection import hub_client_tls
from meshdesk.hub.server import NatsServer, nats_server_binary
from meshdesk.hub.serverconf import HubServerPlan, hub_server_text
from meshdesk.prefecture.city import join_hub, plan_join
from meshdesk.prefecture.home import PrefectureHome

#: The projection's client name in the prefecture home (``issue-client``).
PROJECTION = "projection"

__all__ = ["HubBed", "Postgres", "free_port", "hub_problems", "postgres_bin", "start_hub_bed"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing uses now on the loopback, below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) can be handed out again, as the local
    end of some outgoing connection, before the server we picked it for binds it:
    nats-server then fails with "address already in use" for as long as that
    connection lives. Ports below the ephemeral range are never handed out that way.
    Nor is a port this process was given before: a bed picks all of its servers'
    ports before any of them binds, and two random picks may otherwise be equal.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if port not in _GIVEN and _bindable(port):
            _GIVEN.add(port)
            return port
    while True:  # the range below is crowded: let the kernel choose
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


#: Ports :func:`free_port` handed out in this process.
_GIVEN: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        low = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
    return low if low > 2048 else 32768


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL programs (newest version), or None."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return None if found is None else Path(found).resolve().parent


class Postgres:
    """A throw-away PostgreSQL server on the loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="meshdesk-pg-"))
        self._bin = postgres_bin()
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")

    @property
    def dsn(self) -> str:
        return f"postgresql://hub@{HOST}:{self.port}/postgres"

    async def _run(self, *argv: str) -> None:
        assert self._bin is not None
        process = await asyncio.create_subprocess_exec(
            str(self._bin / argv[0]),
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            user=None if self._user is None else self._user.pw_uid,
            group=None if self._user is None else self._user.pw_gid,
            cwd=self.folder,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            text = out.decode(errors="replace").strip().splitlines()[-3:]
            raise ConfigError(f"PostgreSQL {argv[0]} failed: {' / '.join(text)}")

    async def start(self) -> None:
        if self._bin is None:
            raise ConfigError("PostgreSQL is not installed (Debian package postgresql)")
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        data = self.folder / "data"
        await self._run("initdb", "-D", str(data), "-U", "hub", "--auth=trust", "-E", "UTF8",
                        "--no-sync", "--locale=C")  # fmt: skip
        options = f"-h {HOST} -p {self.port} -k {self.folder} -c fsync=on"
        await self._run("pg_ctl", "-D", str(data), "-o", options, "-l",
                        str(self.folder / "log"), "-w", "-t", "60", "start")  # fmt: skip

    async def stop(self) -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            with contextlib.suppress(ConfigError):
                await self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w",
                                "stop")  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


def hub_problems() -> list[str]:
    """What this machine lacks to run a hub (nats-server, PostgreSQL), in words."""
    problems = []
    try:
        nats_server_binary()
    except ConfigError as exc:
        problems.append(str(exc))
    if postgres_bin() is None:
        problems.append("PostgreSQL's initdb/pg_ctl are missing (Debian package postgresql)")
    return problems


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class HubBed:
    """The running hub: its prefecture home, servers and their URLs, each city's
    credential file, the database."""

    prefecture: PrefectureHome
    credentials: dict[str, Path]
    servers: list[NatsServer]
    leaf_ports: list[int]
    http_ports: list[int]
    postgres: Postgres
    #: Each server's configuration from the prefecture home as it is now.
    configs: list[Callable[[], str]]

    @property
    def client_urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def leaf_urls(self) -> list[str]:
        return [f"tls://{HOST}:{port}" for port in self.leaf_ports]

    def projection_tls(self) -> ssl.SSLContext:
        """The projection's TLS identity (its prefecture client certificate)."""
        files = self.prefecture.client_files(PROJECTION)
        return hub_client_tls(files.cert_path, files.key_path, files.ca_path)

    def reload_trust(self) -> None:
        """Render every server's configuration from the roster as it is now (a
        revoked city gone from the users) and have each server reload it."""
        for server, config in zip(self.servers, self.configs, strict=True):
            server.reload(config())

    def leaf_names(self) -> set[str]:
        """Server names of the leaf nodes connected to any running hub server
        (each server's monitoring ``/leafz``)."""
        names: set[str] = set()
        for server, port in zip(self.servers, self.http_ports, strict=True):
            if server.pid is None:
                continue
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/leafz", timeout=5) as reply:
                    names.update(leaf["name"] for leaf in json.load(reply).get("leafs") or [])
            except OSError:
                continue  # starting or stopping: it holds no leaf now
        return names

    def join(self, home: NodeHome, city: str) -> None:
        """The city HQ ``home`` joins the hub with the credential issued for ``city``
        (the fingerprint confirmed, as its operator would)."""
        now = dt.datetime.now(dt.UTC)
        join_hub(home, plan_join(home, self.credentials[city], now=now), confirmed=True)


async def start_hub_bed(
    stack: contextlib.AsyncExitStack, root: Path, cities: Sequence[str], *, size: int = 3
) -> HubBed:
    """Start PostgreSQL and a ``size``-server hub cluster under ``root`` (stopped by
    ``stack``), with a prefecture CA that issued each hub server's certificate and a
    hub credential for each of ``cities`` (municipality codes)."""
    now = dt.datetime.now(dt.UTC)
    prefecture = PrefectureHome(root / "prefecture")
    prefecture.init("テスト県", now=now)
    postgres = Postgres()
    stack.push_async_callback(postgres.stop)
    prefecture.issue_client(PROJECTION, now=now)
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(size)]
    servers = []
    configs: list[Callable[[], str]] = []
    routes = tuple(Endpoint(HOST, p[1]) for p in ports)
    for i, (port, cluster, leaf, http) in enumerate(ports):
        name = f"hub-{i + 1}"
        prefecture.issue_server(name, [HOST], now=now)
        plan = HubServerPlan(name, Endpoint(HOST, port), Endpoint(HOST, cluster),
                             Endpoint(HOST, leaf), routes, root / name / "jetstream",
                             http=Endpoint(HOST, http))  # fmt: skip

        def config(plan: HubServerPlan = plan) -> str:
            return hub_server_text(prefecture, plan, now=dt.datetime.now(dt.UTC))

        configs.append(config)
    leaf_urls = [f"tls://{HOST}:{p[2]}" for p in ports]
    credentials = {}
    for city in cities:
        out = root / f"{city}.cred"
        prefecture.issue_city(city, name=f"市{city}", urls=leaf_urls, out=out, now=now)
        credentials[city] = out
    for i, (port, *_) in enumerate(ports):
        name = f"hub-{i + 1}"
        server = NatsServer(name, root / name, configs[i](), host=HOST, port=port,
                            restart_delay=0.5)  # fmt: skip
        stack.push_async_callback(server.aclose)
        servers.append(server)
    await asyncio.gather(postgres.start(), *(s.start() for s in servers))
    return HubBed(prefecture, credentials, servers, [p[2] for p in ports],
                  [p[3] for p in ports], postgres, configs)  # fmt: skip
