"""Two city HQs in network namespaces feed the prefecture hub (issue 17, point 5).

Each city HQ is a ``meshdesk run`` process in a lab host of its own (h1, h2), its
supervised leaf node reaching the hub across the lab's bridge; the hub's three
NATS servers and ``meshdesk hub run`` run in h3, PostgreSQL (Debian's) in the
root namespace, reached through its Unix socket (a file, so from any namespace;
nothing here uses a network outside the lab). A WAN cut is city a's cable pulled
(``lab cut``): its HQ keeps recording, the hub keeps taking city b's feed, and
when the cable is back city a's backlog arrives; then a hub server is killed and
both feeds go on through the other two. Lean on purpose: the
in-process e2e test (tests/hub/test_hub.py) covers erasures, consent, a killed hub
server and revocation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import asyncpg
import pytest
from _nodes import MESHDESK, LabFactory, RunningNode, create_cases, deployment, hq_spec, start_node
from tiers import require
from waits import WaitUntil

from meshdesk.config import Config, Endpoint, HubSettings
from meshdesk.hub.feed import PREFECTURE
from meshdesk.hub.server import nats_server_binary
from meshdesk.hub.serverconf import HubServerPlan, write_hub_server_config
from meshdesk.hub.testbed import PROJECTION, Postgres, hub_problems
from meshdesk.lab import Lab, LabProcess
from meshdesk.prefecture.city import join_hub, plan_join
from meshdesk.prefecture.home import PrefectureHome

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]

CITIES = ("221007", "131016")  # municipality codes (静岡市, 千代田区)
HUB_HOST = "h3"


def _start_hub(lab: Lab, root: Path, prefecture: PrefectureHome, dsn: str) -> list[LabProcess]:
    """Three hub servers and the projection in h3, admitting the roster's cities."""
    now = dt.datetime.now(dt.UTC)
    addr = lab.addresses()[HUB_HOST]
    ports = [(4222 + i, 6222 + i, 7422 + i) for i in range(3)]
    root.mkdir(mode=0o700)
    routes = tuple(Endpoint(addr, p[1]) for p in ports)
    servers = []
    for i, (port, cluster, leaf) in enumerate(ports):
        name = f"hub-{i + 1}"
        plan = HubServerPlan(name, Endpoint(addr, port), Endpoint(addr, cluster),
                             Endpoint(addr, leaf), routes, root / name)  # fmt: skip
        conf = root / f"{name}.conf"
        write_hub_server_config(prefecture, plan, conf, now=now)
        servers.append(lab.popen(HUB_HOST, [str(nats_server_binary()), "-c", str(conf)], name=name))
    argv = [MESHDESK, "hub", "run", "--postgres", dsn, "--prefecture-home", str(prefecture.path),
            *(a for city in CITIES for a in ("--city", city)),
            *(a for p in ports for a in ("--nats", f"nats://{addr}:{p[0]}"))]  # fmt: skip
    lab.popen(HUB_HOST, argv, name="projection")
    return servers


def _start_city(
    lab: Lab, root: Path, host: str, city: str, cred: Path, wait_until: WaitUntil
) -> RunningNode:
    hub = HubSettings(enabled=True, leaf_listen=Endpoint("127.0.0.1", 4222), batch=50,
                      poll_interval=0.2, restart_delay=0.5)  # fmt: skip
    made = deployment(root / city, f"City {city}", hq_spec(config=Config(hub=hub)))
    home = made.homes["hq"]
    join_hub(home, plan_join(home, cred, now=dt.datetime.now(dt.UTC)), confirmed=True)
    return start_node(lab, host, f"hq-{city}", home, wait_until=wait_until)


def _hub_case_ids(pg: Postgres) -> dict[str, set[str]]:
    async def read() -> dict[str, set[str]]:
        db = await asyncpg.connect(host=str(pg.folder), port=pg.port, user="hub",
                                   database="postgres")  # fmt: skip
        try:
            rows = await db.fetch("SELECT city, case_id FROM hub_cases")
        except asyncpg.UndefinedTableError:
            return {}
        finally:
            await db.close()
        out: dict[str, set[str]] = {}
        for row in rows:
            out.setdefault(row["city"], set()).add(row["case_id"])
        return out

    return asyncio.run(read())


def test_city_hqs_in_namespaces_feed_the_hub_through_a_cable_cut(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    require(hub_problems(), tier="hub")
    lab = lab_factory(3)
    now = dt.datetime.now(dt.UTC)
    prefecture = PrefectureHome(tmp_path / "prefecture")
    prefecture.init("テスト県", now=now)
    addr = lab.addresses()[HUB_HOST]
    for i in range(3):
        prefecture.issue_server(f"hub-{i + 1}", [addr], now=now)
    prefecture.issue_client(PROJECTION, now=now)
    creds = {}
    for city in CITIES:
        creds[city] = tmp_path / f"{city}.cred"
        prefecture.issue_city(city, name=f"市{city}", now=now, out=creds[city],
                              urls=[f"tls://{addr}:{7422 + i}" for i in range(3)])  # fmt: skip
    pg = Postgres()
    try:
        asyncio.run(pg.start())
        dsn = f"postgresql://hub@/postgres?host={pg.folder}&port={pg.port}"
        servers = _start_hub(lab, tmp_path / "hub", prefecture, dsn)
        city_a, city_b = CITIES
        alpha = _start_city(lab, tmp_path, "h1", city_a, creds[city_a], wait_until)
        beta = _start_city(lab, tmp_path, "h2", city_b, creds[city_b], wait_until)

        def hub_holds(city: str, node: RunningNode) -> bool:
            return _hub_case_ids(pg).get(city, set()) == {c["id"] for c in node.cases()}

        create_cases(alpha, 4, consent=[PREFECTURE])
        create_cases(beta, 4)
        wait_until(lambda: hub_holds(city_a, alpha) and hub_holds(city_b, beta), timeout=90,
                   message="the first cases never reached the hub")  # fmt: skip

        # City a's cable is pulled: its HQ keeps recording; city b's feed goes on.
        lab.cut("h1")
        before = _hub_case_ids(pg)[city_a]
        more = create_cases(alpha, 12)
        create_cases(beta, 3)
        wait_until(lambda: hub_holds(city_b, beta), timeout=60,
                   message="city b's feed stopped during city a's cut")  # fmt: skip
        assert _hub_case_ids(pg)[city_a] == before
        assert alpha.proc.poll() is None

        # The cable is back: city a's backlog arrives; a hub server is killed.
        lab.restore("h1")
        wait_until(lambda: len(_hub_case_ids(pg)[city_a]) > len(before), timeout=90,
                   message="city a's backlog never started to flow")  # fmt: skip
        servers[1].kill(timeout=10)  # a hub server dies: the other two carry on
        more += create_cases(alpha, 3)
        create_cases(beta, 2)
        wait_until(lambda: hub_holds(city_a, alpha) and hub_holds(city_b, beta), timeout=90,
                   message="the feeds never caught up after the cut and the kill")  # fmt: skip
        assert set(more) <= _hub_case_ids(pg)[city_a]
    finally:
        lab.stop_processes()
        asyncio.run(pg.stop())
