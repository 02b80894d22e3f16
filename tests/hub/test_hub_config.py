"""``meshdesk prefecture hub-config``: a hub server runs from the file it writes,
admits the roster's cities and the projection, refuses a revoked city once the
file is written again and the server reloads it, and holds the projection to its
allow lists."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import nats
import pytest
from clirun import Cli, cli_runner, ok
from waits import AsyncWaitUntil

from meshdesk._fs import write_private
from meshdesk.hub.natsconf import city_subject
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


def _city_tls(cred: HubCredential, folder: Path) -> ssl.SSLContext:
    """A client context with the city's hub credential (as its leaf node holds it)."""
    folder.mkdir(mode=0o700)
    write_private(folder / "city.crt", cert_pem(cred.cert))
    write_private(folder / "city.key", private_key_pem(cred.key))
    ca = cert_pem(cred.ca_cert).decode()
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca)
    ctx.load_cert_chain(folder / "city.crt", folder / "city.key")
    return ctx


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
    tmp_path: Path, cli: Cli, async_wait_until: AsyncWaitUntil
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
    port, folder = free_port(), tmp_path / "hub1"
    folder.mkdir(mode=0o700)
    conf = folder / "nats.conf"
    argv = ["prefecture", "hub-config", "hub1", "--home", str(prefecture.path),
            "--listen", f"{HOST}:{port}", "--cluster", f"{HOST}:{free_port()}",
            "--route", f"{HOST}:{free_port()},{HOST}:{free_port()}",
            "--leaf", f"{HOST}:{free_port()}", "--store", str(folder / "jetstream"),
            "--out", str(conf), "--json"]  # fmt: skip
    assert sorted(ok(cli(*argv)).json()["admitted_cities"]) == sorted(creds)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "--signal reload" in conf.read_text("utf-8")

    async with NatsServer("hub1", folder, conf.read_text("utf-8"), host=HOST, port=port) as hub:
        assert hub.config_path == conf
        tls = {code: _city_tls(cred, tmp_path / f"tls-{code}") for code, cred in creds.items()}
        assert await _logs_in(hub.url, tls[ADMITTED]) == "ok"
        assert await _logs_in(hub.url, tls[REVOKED]) == "ok"

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

        # Revoked: the same command writes the file again, SIGHUP reloads it.
        prefecture.revoke_city(REVOKED, reason="認証情報の紛失", now=dt.datetime.now(dt.UTC))
        assert ok(cli(*argv)).json()["admitted_cities"] == [ADMITTED]
        hub.reload(conf.read_text("utf-8"))

        async def revoked_refused() -> bool:
            return "Authorization Violation" in await _logs_in(hub.url, tls[REVOKED])

        await async_wait_until(revoked_refused, timeout=20,
                               message="the revoked city was still let in")  # fmt: skip
        assert await _logs_in(hub.url, tls[ADMITTED]) == "ok"
