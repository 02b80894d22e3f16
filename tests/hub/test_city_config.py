"""The city side's ``[hub]`` settings and how a node takes them."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from loopback import loopback_config

from meshdesk.config import Endpoint, HubSettings, config_text, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import ConfigError
from meshdesk.hub.natsconf import TlsFiles, hub_server_config, leaf_config
from meshdesk.hub.server import nats_log_level, nats_server_binary
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.prefecture.home import PrefectureHome


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[hub]\ncity = "Sendai City"\n', "hub.city"),
        ('[hub]\nhub_urls = ["nats://hub:7422"]\n', "tls://HOST:PORT"),
        ("[hub]\nbatch = 0\n", "batch"),
        ("[hub]\npoll_interval = 0.0\n", "poll_interval"),
    ],
)
def test_bad_hub_settings_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_hub_is_off_by_default_and_round_trips(tmp_path: Path) -> None:
    assert load_config(tmp_path / "missing.toml").hub == HubSettings()
    assert not HubSettings().enabled
    path = tmp_path / "config.toml"
    hub = HubSettings(enabled=True, city="natori", hub_urls=("tls://127.0.0.1:7422",))
    path.write_text(config_text(replace(load_config(path), hub=hub)), encoding="utf-8")
    assert load_config(path).hub == hub


def test_generated_nats_configs_name_their_parts(tmp_path: Path) -> None:
    tls = TlsFiles(tmp_path / "a.crt", tmp_path / "a.key", tmp_path / "ca.crt")
    leaf = leaf_config(city="natori", host="127.0.0.1", port=7422, store_dir=tmp_path / "js",
                       hub_urls=["tls://127.0.0.1:1", "tls://127.0.0.1:2"], tls=tls)  # fmt: skip
    assert 'domain: "natori"' in leaf
    assert 'sync_interval: "always"' in leaf
    assert 'urls: ["tls://127.0.0.1:1", "tls://127.0.0.1:2"]' in leaf
    users = 'authorization {\n  users = [{user: "CN=x"}]\n}\n'
    at = functools.partial(Endpoint, "127.0.0.1")
    hub = hub_server_config(name="hub-1", listen=at(1), cluster=Endpoint("0.0.0.0", 2),
                            leaf=at(3), routes=[at(2), Endpoint("hub2.pref.example", 5)],
                            store_dir=tmp_path / "js", tls=tls, authorization=users,
                            http=at(4))  # fmt: skip
    assert 'domain: "hub"' in hub
    assert 'http: "127.0.0.1:4"' in hub
    assert 'routes: ["nats-route://127.0.0.1:2", "nats-route://hub2.pref.example:5"]' in hub
    # Clients and leaf nodes are mapped to the authorization's users; routes are
    # checked against the CA; the users sit at the top level.
    top, cluster = hub.split("cluster {")
    cluster, leafnodes = cluster.split("leafnodes {")
    assert "verify_and_map: true" in top
    assert users.strip() in top
    assert "verify: true" in cluster
    assert "verify_and_map" not in cluster
    assert "verify_and_map: true" in leafnodes
    assert "authorization" not in leafnodes


async def test_an_hq_without_its_hub_credential_runs_without_the_feed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    city = await build_deployment(tmp_path, "City", [HomeSpec("hq", Role.HQ)],
                                  now=dt.datetime.now(dt.UTC))  # fmt: skip
    home = city.homes["hq"]
    config = replace(loopback_config(home, []), hub=HubSettings(enabled=True))
    with caplog.at_level(logging.ERROR, logger="meshdesk.hub"):
        async with Node(home, config) as node:
            assert node.hub is None
    assert "has not joined a prefecture hub" in caplog.text
    assert "meshdesk hub join FILE" in caplog.text


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("[1] 2026/12/06 [ERR] Error trying to connect as leafnode: connection refused", 20),
        ("[1] 2026/12/06 [ERR] TLS leafnode handshake error: x509: certificate signed by", 30),
        ("[1] 2026/12/06 [ERR] 127.0.0.1:1 - cid:5 - TLS handshake error: EOF", 20),
        (
            "[1] 2026/12/06 [ERR] 127.0.0.1:1 - cid:5 - TLS handshake error: read tcp"
            " 127.0.0.1:2->127.0.0.1:1: read: connection reset by peer",
            20,
        ),
        (
            "[1] 2026/12/06 [ERR] 127.0.0.1:1 - cid:5 - TLS handshake error: remote error:"
            " tls: bad certificate",
            30,
        ),
        ("[1] 2026/12/06 [FTL] Error listening on port", 40),
        ("[1] 2026/12/06 [INF] Server is ready", 10),
    ],
)
def test_a_cut_is_not_a_warning_but_a_refused_certificate_is(line: str, level: int) -> None:
    assert nats_log_level(line) == level


@pytest.mark.usefixtures("hub_tools")
def test_nats_server_reads_the_generated_configs_without_a_warning(tmp_path: Path) -> None:
    """``nats-server -t`` on each generated file: valid, and nothing it would only
    tolerate (an integer where it wants a duration was one)."""
    binary = nats_server_binary()
    assert binary is not None
    prefecture = PrefectureHome(tmp_path / "prefecture")
    now = dt.datetime.now(dt.UTC)
    prefecture.init("テスト県", now=now)
    files = prefecture.issue_server("hub-1", ["127.0.0.1"], now=now)  # real TLS files
    tls = TlsFiles(files.cert_path, files.key_path, files.ca_path)
    at = functools.partial(Endpoint, "127.0.0.1")
    users = 'authorization {\n  users = [{user: "CN=x"}]\n}\n'
    texts = {
        "leaf.conf": leaf_config(city="natori", host="127.0.0.1", port=7422,
                                 store_dir=tmp_path / "leaf", hub_urls=["tls://127.0.0.1:1"],
                                 tls=tls),
        "hub.conf": hub_server_config(name="hub-1", listen=at(1), cluster=at(2), leaf=at(3),
                                      routes=[at(2)], store_dir=tmp_path / "hub", tls=tls,
                                      authorization=users),
    }  # fmt: skip
    for name, text in texts.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        out = subprocess.run([str(binary), "-t", "-c", str(path)], capture_output=True,
                             text=True, timeout=30, check=False)  # fmt: skip
        said = out.stdout + out.stderr
        assert out.returncode == 0, said
        assert "is valid" in said, said
        assert "invalid use" not in said, said
