"""The web port of a running node, over HTTPS on the loopback (issue 13).

A real node (:class:`meshdesk.node.Node`) serves the citizens' page on 127.0.0.1;
an aiohttp client plays the phone, trusting only the deployment's web CA (so the
chain, the name constraints and the SANs are checked as a tablet would). ICE cannot
connect on the loopback (aioice drops 127.0.0.1), so media is the lab tier's
(tests/lab/test_web_lab.py, a real browser); here everything up to the SDP answer,
and every hostile request: each gets an error and changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import socket
import ssl
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from loopback import loopback_config
from waits import AsyncWaitUntil

from meshdesk import control
from meshdesk.calls.media import TestPatternTrack, ToneTrack
from meshdesk.calls.peer import ice_configuration
from meshdesk.config import CallSettings, Endpoint, WebSettings
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.web.pages import CSP

COOKIE = "meshdesk-guest"


@dataclass
class Desk:
    node: Node
    home: NodeHome
    base: str
    redirect: int | None

    async def op(self, op_name: str, /, **args: Any) -> Any:
        return await control.call(self.home.control_socket, op_name, args)


async def _desk(tmp_path: Path, *, ttl: float = 600.0, redirect: bool = False) -> Desk:
    city = await build_deployment(
        tmp_path / "city", "Web City", [HomeSpec("本部", Role.HQ, site="市役所")],
        now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    home = city.homes["本部"]
    config = loopback_config(home, [])
    config = replace(
        config,
        calls=CallSettings(media="synthetic", playback="off"),
        web=replace(config.web, invite_ttl=ttl),
    )
    if redirect:
        config = replace(config, web=replace(config.web, redirect_listen=_free_endpoint()))
    node = Node(home, config)
    await node.__aenter__()
    server_port = node.citizens.port
    assert server_port is not None, node.citizens.unavailable
    return Desk(node, home, f"https://127.0.0.1:{server_port}", None)


def _free_endpoint() -> Endpoint:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return Endpoint("127.0.0.1", probe.getsockname()[1])


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    made = await _desk(tmp_path)
    try:
        yield made
    finally:
        await made.node.aclose()


def _tablet_tls(home: NodeHome) -> ssl.SSLContext:
    """What a city tablet that installed /ca.crt trusts: the web CA, nothing else."""
    context = ssl.create_default_context(cafile=str(home.web_ca_cert_path))
    return context


def _phone(home: NodeHome) -> aiohttp.ClientSession:
    """A browser: its own cookie jar (cookies of an IP host kept), the web CA trusted."""
    jar = aiohttp.CookieJar(unsafe=True)
    return aiohttp.ClientSession(
        cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=_tablet_tls(home))
    )


async def _offer_sdp() -> tuple[RTCPeerConnection, str]:
    """An offer shaped like the phone page's: audio+video, spare receive-only sections."""
    pc = RTCPeerConnection(ice_configuration())
    pc.addTrack(ToneTrack())
    pc.addTrack(TestPatternTrack("phone"))
    for _ in range(6):
        pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _join(phone: aiohttp.ClientSession, url: str) -> str:
    """Open the invitation's page and ask to join: the code."""
    async with phone.get(url) as page:
        assert page.status == 200, await page.text()
    async with phone.post(url + "/lobby", json={}) as lobby:
        assert lobby.status == 200
        code: str = (await lobby.json())["code"]
    return code


# -- the port and its certificate --------------------------------------------------------


async def test_tablet_trusting_the_web_ca_sees_a_valid_ecdsa_chain(desk: Desk) -> None:
    async with _phone(desk.home) as tablet:
        async with tablet.get(desk.base + "/ca.crt") as response:
            assert response.status == 200
            served = await response.read()
        async with tablet.get(desk.base + "/") as landing:
            assert landing.status == 200
            assert landing.headers["Content-Security-Policy"] == CSP
            assert "QR" in await landing.text()
    assert served == desk.home.web_ca_cert_path.read_bytes()
    leaf = x509.load_pem_x509_certificate((desk.home.web_dir / "leaf.pem").read_bytes())
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    for secret in (desk.home.web_dir / "leaf.key", desk.home.web_subca_key_path):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


async def test_an_untrusted_client_sees_a_certificate_error(desk: Desk) -> None:
    """A citizen's own phone does not know the web CA: the one warning the guide shows."""
    async with aiohttp.ClientSession() as phone:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await phone.get(desk.base + "/")


async def test_the_page_is_japanese_by_default_english_on_request(desk: Desk) -> None:
    invite = await desk.op("invite_new")
    async with _phone(desk.home) as phone, phone.get(invite["url"]) as page:
        text = await page.text()
        assert page.headers["Content-Security-Policy"] == CSP
        assert page.headers["Referrer-Policy"] == "no-referrer"
    assert '<html lang="ja">' in text
    assert "相談をはじめる" in text
    assert "playsinline" in text
    # Nothing from elsewhere: every script and style is the node's own.
    assert re.findall(r'(?:src|href)="([^"]*)"', text) == ["/static/app.css", "/static/app.js"]
    assert "<script>" not in text
    assert "style=" not in text
    other = await desk.op("invite_new")
    async with _phone(desk.home) as phone:
        headers = {"Accept-Language": "en-US,en;q=0.9,ja;q=0.5"}
        async with phone.get(other["url"], headers=headers) as page:
            assert '<html lang="en">' in await page.text()
        async with phone.get(desk.base + "/static/app.js") as script:
            assert script.status == 200
            assert script.content_type == "application/javascript"
            assert "fetch(" in await script.text()


# -- an invitation's life ----------------------------------------------------------------


async def test_invitation_lobby_admission_offer_and_hang_up(
    desk: Desk, async_wait_until: AsyncWaitUntil
) -> None:
    case = await desk.op(
        "case_new", operator="鈴木", category="welfare_eldercare", urgency="high", name="山田 花子"
    )
    invite = await desk.op("invite_new", case=case["id"])
    url: str = invite["url"]
    token = url.rsplit("/", 1)[1]
    assert url.startswith(desk.base + "/j/")
    assert len(token) >= 22  # ≥ 128 bits in URL-safe base64
    assert invite["state"] == "new"
    async with (
        control.subscribe(desk.home.control_socket, ["citizen"]) as events,
        _phone(desk.home) as phone,
    ):
        code = await _join(phone, url)
        assert len(code) == 4
        assert code.isdigit()
        ring = await anext(events)
        while ring.data["change"] != "waiting":
            ring = await anext(events)
        assert ring.data["invite"]["code"] == code
        listed = await desk.op("invite_list")
        assert [(i["state"], i["code"]) for i in listed] == [("waiting", code)]
        # No media before admission: the offer is refused and nothing starts.
        pc, sdp = await _offer_sdp()
        async with phone.post(url + "/offer", json={"sdp": sdp}) as early:
            assert early.status == 409
        assert await desk.op("calls") == []
        await desk.op("invite_admit", code=code)
        async with phone.get(url + "/events", params={"after": "0"}) as polled:
            kinds = [e["kind"] for e in (await polled.json())["events"]]
        assert kinds == ["waiting", "admitted"]
        async with phone.post(url + "/offer", json={"sdp": sdp}) as answered:
            assert answered.status == 200, await answered.text()
            answer = (await answered.json())["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        # The desk answered with its own tracks and the forwarding slots.
        assert answer.count("m=audio") == 7
        assert answer.count("m=video") == 2
        (call,) = await desk.op("calls")
        assert call["case_id"] == case["id"]
        assert call["relayed"] is True
        guest = [p for p in call["participants"] if p["node_id"].startswith("citizen:")]
        assert [p["name"] for p in guest] == [f"市民 {code}"]
        async with phone.post(url + "/leave", json={}) as left:
            assert left.status == 200
        await pc.close()

        async def ended() -> bool:
            calls = await desk.op("calls")
            return bool(calls) and calls[0]["state"] == "ended"

        await async_wait_until(ended, timeout=5.0, message="the call ended at hang-up")
        (finished,) = await desk.op("invite_list")
        assert finished["state"] == "ended"
        # It dies at hang-up: the link is worthless now, for anyone.
        async with phone.get(url) as again:
            assert again.status == 410
            assert "終わりました" in await again.text()


async def test_declined_citizen_gets_a_clear_page_and_never_a_call(desk: Desk) -> None:
    invite = await desk.op("invite_new")
    async with _phone(desk.home) as phone:
        code = await _join(phone, invite["url"])
        declined = await desk.op("invite_decline", code=code)
        assert declined["state"] == "declined"
        async with phone.get(invite["url"] + "/events", params={"after": "1"}) as polled:
            assert [e["kind"] for e in (await polled.json())["events"]] == ["declined"]
        pc, sdp = await _offer_sdp()
        async with phone.post(invite["url"] + "/offer", json={"sdp": sdp}) as refused:
            assert refused.status == 410
        await pc.close()
    assert await desk.op("calls") == []
    with pytest.raises(MeshdeskError, match="no open invitation"):
        await desk.op("invite_admit", code=code)


async def test_an_unopened_invitation_expires(
    tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    made = await _desk(tmp_path, ttl=0.3)
    try:
        invite = await made.op("invite_new")

        async def expired() -> bool:
            return bool((await made.op("invite_list"))[0]["state"] == "expired")

        await async_wait_until(expired, timeout=5.0, message="the invitation expired")
        async with _phone(made.home) as phone, phone.get(invite["url"]) as page:
            assert page.status == 410
            assert "有効期限" in await page.text()
        assert await made.op("calls") == []
    finally:
        await made.node.aclose()


# -- nothing else is exposed; hostile clients change nothing ------------------------------


async def test_a_second_browser_cannot_use_an_opened_invitation(desk: Desk) -> None:
    invite = await desk.op("invite_new")
    async with _phone(desk.home) as phone:
        await _join(phone, invite["url"])
    async with _phone(desk.home) as thief:
        async with thief.get(invite["url"]) as page:
            assert page.status == 409
            assert "別の端末" in await page.text()
        async with thief.post(invite["url"] + "/lobby", json={}) as lobby:
            assert lobby.status == 409
        async with thief.get(invite["url"] + "/events") as events:
            assert events.status == 409
    (still,) = await desk.op("invite_list")
    assert still["state"] == "waiting"


async def test_guessed_tokens_are_refused_then_the_address_is_slowed(desk: Desk) -> None:
    invite = await desk.op("invite_new")
    async with _phone(desk.home) as phone:
        for i in range(10):
            async with phone.get(f"{desk.base}/j/{'A' * 31}{i}") as guess:
                assert guess.status == 404
                assert "このリンクは使えません" in await guess.text()
        # Now even the right token waits: guessing is too slow to be worth it.
        async with phone.get(invite["url"]) as page:
            assert page.status == 429
    (untouched,) = await desk.op("invite_list")
    assert untouched["state"] == "new"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../config.toml",
        "/static/%2e%2e/%2e%2e/config.toml",
        "/static/..%2fidentity%2fweb-ca.key",
        "/j/../../control.sock",
        "/identity/web-subca.key",
        "/status",
        "/case_list",
        "/directory",
        "/ops",
        "/web/leaf.key",
    ],
)
async def test_nothing_but_the_invitation_endpoints_is_served(desk: Desk, path: str) -> None:
    async with _phone(desk.home) as phone, phone.get(desk.base + path) as response:
        assert response.status == 404
        body = await response.read()
    assert b"PRIVATE KEY" not in body
    assert b"[network]" not in body


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"sdp": 3}', "application/json", 400),
        (b'{"sdp": "v=0\\r\\nthis is not an offer"}', "application/json", 400),
        (b'{"sdp": "garbage"}', "application/json", 400),
        (b'{"sdp": "v=0' + b"x" * 40_000 + b'"}', "application/json", 400),
        (b"{" * 100_000, "application/json", 413),
        (b"sdp=v%3D0", "application/x-www-form-urlencoded", 415),
    ],
)
async def test_malformed_offers_get_an_error_and_change_nothing(
    desk: Desk, body: bytes, content_type: str, status: int
) -> None:
    invite = await desk.op("invite_new")
    async with _phone(desk.home) as phone:
        code = await _join(phone, invite["url"])
        await desk.op("invite_admit", code=code)
        headers = {"Content-Type": content_type}
        async with phone.post(invite["url"] + "/offer", data=body, headers=headers) as response:
            assert response.status == status
            assert "error" in await response.json()
        (still,) = await desk.op("invite_list")
        assert still["state"] == "admitted"
        calls = await desk.op("calls")
        assert all(c["state"] == "ended" for c in calls)
        # The phone can still join with a good offer afterwards.
        pc, sdp = await _offer_sdp()
        async with phone.post(invite["url"] + "/offer", json={"sdp": sdp}) as good:
            assert good.status == 200
        await pc.close()


async def test_a_flood_is_cut_off_and_the_port_keeps_serving(desk: Desk) -> None:
    async with _phone(desk.home) as phone:

        async def hit() -> int:
            async with phone.get(desk.base + "/") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(hit() for _ in range(150)))
    assert statuses.count(429) > 0
    assert statuses.count(200) >= 60  # the burst is served
    invite = await desk.op("invite_new")  # the desk itself is unaffected
    assert invite["state"] == "new"


async def test_plain_http_is_redirected_to_https(tmp_path: Path) -> None:
    made = await _desk(tmp_path, redirect=True)
    try:
        web = made.node.config.web
        assert isinstance(web, WebSettings)
        port = web.redirect_listen.port
        async with aiohttp.ClientSession() as browser:
            url = f"http://127.0.0.1:{port}/j/sometoken?x=1"
            async with browser.get(url, allow_redirects=False) as response:
                assert response.status == 308
                assert response.headers["Location"] == (
                    f"https://127.0.0.1:{made.node.citizens.port}/j/sometoken?x=1"
                )
    finally:
        await made.node.aclose()


async def test_without_a_web_sub_ca_the_node_runs_and_says_why(desk: Desk, tmp_path: Path) -> None:
    """A home provisioned before the web port: no port, a clear line, the rest runs."""
    await desk.node.aclose()
    for path in (desk.home.web_subca_key_path, desk.home.web_subca_cert_path):
        path.unlink()
    node = Node(desk.home, desk.node.config)
    async with node:
        assert node.citizens.port is None
        with pytest.raises(MeshdeskError, match="no web sub-CA"):
            await control.call(desk.home.control_socket, "invite_new", {})
        assert await control.call(desk.home.control_socket, "calls") == []


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshdesk", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_invites_lists_admits_and_writes_a_printable_qr_code(
    desk: Desk, tmp_path: Path
) -> None:
    home = str(desk.home.path)
    png = tmp_path / "invite.png"
    code, out, err = await _cli("invite", "new", "--home", home, "--json", "--out", str(png))
    assert code == 0, err
    invite = json.loads(out)
    assert invite["url"].startswith(desk.base + "/j/")
    assert png.read_bytes().startswith(b"\x89PNG")
    code, out, _ = await _cli("invite", "new", "--home", home, "--qr")
    assert code == 0
    assert "█" in out or "▀" in out
    async with _phone(desk.home) as phone:
        number = await _join(phone, invite["url"])
    code, out, _ = await _cli("invite", "list", "--home", home, "--json")
    assert [i["code"] for i in json.loads(out) if i["state"] == "waiting"] == [number]
    code, out, err = await _cli("invite", "admit", "0000" if number != "0000" else "0001",
                                "--home", home)  # fmt: skip
    assert code == 1  # the node's answer: one line, as for every operation
    assert err.startswith("meshdesk: error: no open invitation")
    assert len(err.strip().splitlines()) == 1
    code, out, err = await _cli("invite", "admit", number, "--home", home, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "admitted"
    code, _, err = await _cli("invite", "new", "--home", home, "--out", str(png))
    assert code == 2
    assert "exists" in err
