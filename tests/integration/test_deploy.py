"""The deployment builder: homes provisioned as the CLI does it, configs written."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from meshdesk.config import CallSettings, Config, Timings, default_config_text, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import HomeError, UsageError
from meshdesk.identity import Role
from meshdesk.store import Store

NOW = dt.datetime.now(dt.UTC)
CALLS = Config(calls=CallSettings(auto_accept=True, media="synthetic"))


async def test_builds_every_home_with_its_identity_and_config(tmp_path: Path) -> None:
    fast = Config(timings=Timings(connect_timeout=3.0, reconnect_max=3.0))
    city = await build_deployment(
        tmp_path / "city",
        "デモ市 Demo City",
        [
            HomeSpec("本部 HQ", Role.HQ, site="市役所", departments=("welfare",), folder="hq"),
            HomeSpec("避難所", site="大町", departments=("福祉課",), config=CALLS, folder="c1"),
            HomeSpec("desk", Role.DESK, config=fast),
        ],
        now=NOW,
    )
    assert list(city.homes) == ["本部 HQ", "避難所", "desk"]
    assert [h.path.name for h in city.homes.values()] == ["hq", "c1", "desk"]
    assert city.hq == "本部 HQ"
    assert set(city.kits) == {"避難所", "desk"}
    assert city.kits["避難所"] == tmp_path / "city" / "c1.kit"

    for name, home in city.homes.items():
        kit = home.load_identity(now=NOW)
        assert kit.deployment_id == city.deployment_id
        assert kit.info == city.nodes[name]
        assert str(kit.node_id) == city.node_id(name)
        assert home.has_ca() == (name == city.hq)
        assert stat.S_IMODE(home.config_path.stat().st_mode) == 0o600
    centre = city.nodes["避難所"]
    assert (centre.role, centre.site, centre.departments) == (Role.CENTER, "大町", ("福祉課",))
    assert city.nodes["desk"].role is Role.DESK

    assert load_config(city.homes["避難所"].config_path) == CALLS
    assert load_config(city.homes["desk"].config_path) == fast
    hq_config = city.homes["本部 HQ"].config_path.read_text(encoding="utf-8")
    assert hq_config == default_config_text()  # the file `deployment create` writes
    # The HQ knows every kit it issued, as after `deployment issue` on the CLI.
    async with Store.open(city.homes["本部 HQ"].store_path) as store:
        issued = {node.name for node in await store.issued_nodes()}
    assert issued == {"本部 HQ", "避難所", "desk"}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([], "at least one node"),
        ([HomeSpec("a")], "'a' must be hq"),
        ([HomeSpec("a", Role.HQ), HomeSpec("a")], "same name: a"),
        ([HomeSpec("a", Role.HQ), HomeSpec("b", folder="a")], "same home folder: a"),
    ],
)
async def test_bad_specs_are_refused_before_anything_is_made(
    tmp_path: Path, specs: list[HomeSpec], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await build_deployment(tmp_path / "x", "X", specs, now=NOW)
    assert not (tmp_path / "x").exists()


async def test_what_the_cli_would_refuse_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        await build_deployment(tmp_path / "x", "X", [HomeSpec("", Role.HQ)], now=NOW)
    await build_deployment(tmp_path / "y", "Y", [HomeSpec("hq", Role.HQ)], now=NOW)
    with pytest.raises(HomeError, match="already holds a node"):
        await build_deployment(tmp_path / "y", "Y", [HomeSpec("hq", Role.HQ)], now=NOW)
