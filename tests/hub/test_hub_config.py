"""``meshdesk prefecture hub-config``: a hub server runs from the file it writes,
admits the roster's cities (as leaf nodes only) and the projection, refuses a
revoked city once the file is written again and the server reloads it, and holds
the projection to its allow lists."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import ssl
import stat
import urllib.request
from pathlib import Path

import nats
import pytest
from clirun import Cli, cli_runner, ok
from waits import AsyncWaitUntil

from meshdesk._fs import write_private
from meshdesk.hub.natsconf import TlsFiles, city_subject, leaf_config
from meshdesk.hub.projection import hub_client_tls
from meshdesk.hub.server import NatsServer
from meshdesk.hub.testbed import PROJECTION, free_port
from meshdesk.identity.certs import cert_pem, private_key_pem
from meshdesk.prefecture import HubCredential, PrefectureHome

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
ADMITTED, REVOKED = "221007", "131016"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return cli_runner(capsys)


def _city_files(cred: HubCredential, folder: Path) -> TlsFiles:
    """The city's hub credential as files, as its HQ's leaf node holds them."""
    folder.mkdir(mode=0o700)
    files = TlsFiles(folder / "city.crt", folder / "city.key", folder / "ca.crt")
    write_private(files.cert, cert_pem(cred.cert))
    write_private(files.key, private_key_pem(cred.key))
    write_private(files.ca, cert_pem(cred.ca_cert))
    return files


async def _logs_in(url: str, tls: ssl.SSLContext) -> str:
    """``ok``, or the server's reason for refusing the connection."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    try:
        nc = await nats.connect(url, tls=tls, allow_reconnect=False, connect_timeout=5,
                                error_cb=on_error)  # fmt: skip
    except Exception as exc:  # nats-py raises several kinds for a refusal
        return " ".join(str(e) for e in (exc, *errors))
    await nc.close()
    return "ok"


@pytest.mark.usefixtures("hub_tools")
async def test_a_server_from_hub_config_admits_cities_and_refuses_a_revoked_one(
    tmp_path: Path, cli: Cli, async_wait_until: AsyncWaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    now = dt.datetime.now(dt.UTC)
    prefecture = PrefectureHome(tmp_path / "prefecture")
    prefecture.init("テスト県", now=now)
    prefecture.issue_server("hub1", [HOST], now=now)
    prefecture.issue_client(PROJECTION, now=now)
    creds = {
        code: prefecture.issue_city(code, name=f"市{code}", urls=[], out=tmp_path / code, now=now)
        for code in (ADMITTED, REVOKED)
    }
    port, leaf_port, http_port, folder = free_port(), free_port(), free_port(), tmp_path / "hub1"
    folder.mkdir(mode=0o700)
    conf = folder / "nats.conf"
    argv = ["prefecture", "hub-config", "hub1", "--home", str(prefecture.path),
            "--listen", f"{HOST}:{port}", "--cluster", f"{HOST}:{free_port()}",
            "--route", f"{HOST}:{free_port()},{HOST}:{free_port()}",
            "--leaf", f"{HOST}:{leaf_port}", "--http", f"{HOST}:{http_port}",
            "--store", str(folder / "jetstream"), "--out", str(conf), "--json"]  # fmt: skip
    assert sorted(ok(cli(*argv)).json()["admitted_cities"]) == sorted(creds)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "--signal reload" in conf.read_text("utf-8")

    def leaf_names() -> set[str]:
        with urllib.request.urlopen(f"http://{HOST}:{http_port}/leafz", timeout=5) as reply:
            return {leaf["name"] for leaf in json.load(reply).get("leafs") or []}

    async with contextlib.AsyncExitStack() as stack:
        hub = NatsServer("hub1", folder, conf.read_text("utf-8"), host=HOST, port=port)
        await stack.enter_async_context(hub)
        assert hub.config_path == conf  # the server runs the file the command wrote
        leaves, city_tls = {}, {}
        for code, cred in creds.items():
            city = tmp_path / f"city-{code}"
            tls = city_tls[code] = _city_files(cred, city)
            client_port = free_port()
            text = leaf_config(city=code, host=HOST, port=client_port, store_dir=city / "js",
                               hub_urls=[f"tls://{HOST}:{leaf_port}"], tls=tls)  # fmt: skip
            leaves[code] = NatsServer(f"leaf {code}", city / "leaf", text, host=HOST,
                                      port=client_port, restart_delay=0.3)  # fmt: skip
            await stack.enter_async_context(leaves[code])
        wanted = {f"city-{code}" for code in creds}
        await async_wait_until(lambda: leaf_names() == wanted, timeout=30,
                               message="the admitted cities' leaf nodes never linked")  # fmt: skip

        # A city's certificate opens leaf connections only, never a client's.
        own = city_tls[ADMITTED]
        own_client = hub_client_tls(own.cert, own.key, own.ca)
        assert "Authorization Violation" in await _logs_in(hub.url, own_client)

        # The projection's user: its JetStream API and inboxes, not a city's subject.
        files = prefecture.client_files(PROJECTION)
        refused: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            refused.append(exc)

        projection = await nats.connect(
            hub.url, tls=hub_client_tls(files.cert_path, files.key_path, files.ca_path),
            allow_reconnect=False, error_cb=on_error,
        )  # fmt: skip
        try:
            await projection.publish(city_subject(ADMITTED), b"forged")
            await projection.flush()
            await async_wait_until(lambda: refused, timeout=10,
                                   message="a city's subject let the projection in")  # fmt: skip
        finally:
            await projection.close()
        assert "permissions violation for publish" in str(refused[0]).lower()
        assert city_subject(ADMITTED) in str(refused[0])

        # Revoked: the same command writes the file again, SIGHUP reloads it; the
        # city's leaf is refused when it next connects (here: restarted).
        prefecture.revoke_city(REVOKED, reason="認証情報の紛失", now=dt.datetime.now(dt.UTC))
        assert ok(cli(*argv)).json()["admitted_cities"] == [ADMITTED]
        hub.reload(conf.read_text("utf-8"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="meshdesk.hub.nats"):
            await leaves[REVOKED].stop()
            await leaves[REVOKED].start()
            await async_wait_until(lambda: _refused(caplog, REVOKED), timeout=30,
                                   message="the revoked city's leaf was let in")  # fmt: skip
        assert leaf_names() == {f"city-{ADMITTED}"}


def _refused(caplog: pytest.LogCaptureFixture, city: str) -> bool:
    return any(
        f"leaf {city}" in r.getMessage() and "Authorization Violation" in r.getMessage()
        for r in caplog.records
    )
