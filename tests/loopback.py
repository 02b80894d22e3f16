"""Whole nodes on the loopback for in-process tests: fast timings, no mDNS.

Importable from every test module (``pythonpath = ["tests"]``)::

    from loopback import FAST, hq_and_centre, loopback_config
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from meshdesk.config import Config, Timings, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.home import NodeHome
from meshdesk.identity import Role

__all__ = ["FAST", "hq_and_centre", "loopback_config"]

#: Link timings shrunk for tests: a dead link is noticed within about a second.
FAST = Timings(heartbeat_interval=0.2, dead_after=1.0, connect_timeout=2.0, reconnect_min=0.1)


def loopback_config(home: NodeHome, peers: list[str], timings: Timings = FAST) -> Config:
    """The home's config with ``timings``, listening on 127.0.0.1 (any port), mDNS
    off (no multicast on the machine's interfaces), and ``peers`` as static peers."""
    base = replace(load_config(home.config_path), timings=timings)
    return base.with_overrides(
        listen="127.0.0.1:0",
        static_peers=peers,
        mdns=False,
        web_listen="127.0.0.1:0",
        web_redirect="127.0.0.1:0",
    )


async def hq_and_centre(
    root: Path,
    *,
    deployment: str,
    hq: str = "本部",
    centre: str = "避難所",
    site: str = "第一小学校",
) -> tuple[NodeHome, NodeHome]:
    """A deployment of an HQ node and one evacuation centre, provisioned under ``root``."""
    city = await build_deployment(
        root,
        deployment,
        [HomeSpec(hq, Role.HQ, site="市役所"), HomeSpec(centre, Role.CENTER, site=site)],
        now=dt.datetime.now(dt.UTC),
    )
    return city.homes[hq], city.homes[centre]
