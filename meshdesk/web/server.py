"""The node's web port: HTTPS for citizens' phones, invitation-scoped and nothing else.

Routes (every other path is a friendly 404):

==========================  ==========================================================
``GET /``                   "scan the QR code" (no data)
``GET /ca.crt``             the deployment's web CA certificate, for city tablets
``GET /static/app.js|css``  the page's script and style (a fixed table, no file paths)
``GET /j/TOKEN``            the call page; binds the invitation to this browser
``POST /j/TOKEN/lobby``     ask to join: the 4-digit code
``GET /j/TOKEN/events``     long-poll (``?after=SEQ``): admitted, declined, ended, …
``POST /j/TOKEN/offer``     after admission: the WebRTC offer → the answer
``POST /j/TOKEN/mute``      the citizen muted or turned the camera off
``POST /j/TOKEN/leave``     the citizen hung up
==========================  ==========================================================

Every ``/j/TOKEN/…`` request after the first must carry the cookie the first one
set (the invitation is bound to that browser). Requests are bounded: bodies to
64 KiB, SDP to 32 KiB, each address to a request rate, wrong tokens to a few per
minute per address (then 429 for a while), long-polls to a few per invitation.
Plain HTTP on ``[web] redirect_listen`` only redirects to the HTTPS port. No case
data, directory or control operation is reachable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Self

from aiohttp import web

from meshdesk._lifecycle import AsyncResource
from meshdesk.calls.codecs import DEFAULT_PROFILE
from meshdesk.config import Endpoint
from meshdesk.errors import CallError, MeshdeskError, UsageError
from meshdesk.web.certs import LeafKeeper
from meshdesk.web.desk import CitizenDesk
from meshdesk.web.invites import Invitation, InviteState, RateLimiter
from meshdesk.web.pages import CSP, Lang, call_page, choose_lang, message_page

__all__ = ["BODY_MAX", "SDP_MAX", "WebServer"]

log = logging.getLogger("meshdesk.web")

BODY_MAX = 64 * 1024
SDP_MAX = 32 * 1024
#: Long-polls waiting at once, per invitation and in all.
_POLLS_PER_INVITE = 2
_POLLS_MAX = 64
_COOKIE = "meshdesk-guest"
_STATIC = {"app.js": "application/javascript", "app.css": "text/css"}
_GONE = {
    InviteState.EXPIRED: "expired",
    InviteState.DECLINED: "declined",
    InviteState.ENDED: "ended",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> bytes:
    return (resources.files("meshdesk.web") / "static" / name).read_bytes()


def _bind(endpoint: Endpoint) -> socket.socket:
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((endpoint.host, endpoint.port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Problem(Exception):
    """An answer other than success: status, the text's key, and (for the API) a line."""

    def __init__(self, status: int, key: str, detail: str | None = None) -> None:
        super().__init__(detail or key)
        self.status = status
        self.key = key
        self.detail = detail or key


class WebServer(AsyncResource):
    """The HTTPS site (and the HTTP redirect) of one node; owned by the node."""

    def __init__(
        self,
        desk: CitizenDesk,
        keeper: LeafKeeper,
        *,
        listen: Endpoint,
        redirect_listen: Endpoint,
        ca_pem: bytes,
        address_check: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._desk = desk
        self._keeper = keeper
        self._listen = listen
        self._redirect_listen = redirect_listen
        self._ca_pem = ca_pem
        self._address_check = address_check
        self._clock = clock
        self._requests = RateLimiter(rate=20.0, burst=60.0)
        self._bad_tokens = RateLimiter(rate=1 / 6, burst=10.0)
        self._polls: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._static = {name: _static(name) for name in _STATIC}
        self.port: int | None = None
        self.redirect_port: int | None = None
        self._checked = 0.0
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            self._keeper.refresh()
            app = web.Application(client_max_size=BODY_MAX, middlewares=[self._guard])
            app.router.add_get("/", self._landing)
            app.router.add_get("/ca.crt", self._ca)
            app.router.add_get("/static/{name}", self._asset)
            app.router.add_get("/j/{token}", self._page)
            app.router.add_post("/j/{token}/lobby", self._lobby)
            app.router.add_get("/j/{token}/events", self._events)
            app.router.add_post("/j/{token}/offer", self._offer)
            app.router.add_post("/j/{token}/mute", self._mute)
            app.router.add_post("/j/{token}/leave", self._leave)
            self.port = await self._serve(app, self._listen, https=True)
            if self._redirect_listen.port != 0:
                redirect = web.Application(client_max_size=1024)
                redirect.router.add_route("*", "/{tail:.*}", self._redirect)
                self.redirect_port = await self._serve(redirect, self._redirect_listen, https=False)
        except BaseException:
            await self.aclose()
            raise
        task = asyncio.create_task(self._watch(), name="web addresses")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._desk.port = self.port
        self._desk.addresses = lambda: list(self._keeper.names)
        self._desk.unavailable = None
        log.info("web: citizens' page on https://%s:%d (certificate for %s)",
                 self._listen.host, self.port, ", ".join(self._keeper.names))  # fmt: skip
        return self

    async def _serve(self, app: web.Application, endpoint: Endpoint, *, https: bool) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        sock = _bind(endpoint)
        try:
            site = web.SockSite(runner, sock, ssl_context=self._keeper.context if https else None)
            await site.start()
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._desk.unavailable = "the node is shutting down"
        self._desk.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in reversed(self._runners):
            await runner.cleanup()

    async def _watch(self) -> None:
        """Renew the certificate when the addresses change; expire invitations."""
        while True:
            await asyncio.sleep(min(self._address_check, 1.0))
            self._desk.expire()
            now = self._clock()
            if now - self._checked >= self._address_check:
                self._checked = now
                try:
                    await asyncio.to_thread(self._keeper.refresh)
                except MeshdeskError as exc:
                    log.warning("web: %s", exc)

    # -- middleware ------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        remote = request.remote or "?"
        now = self._clock()
        lang = choose_lang(request.headers.get("Accept-Language"))
        api = request.method != "GET" or request.path.endswith("/events")
        try:
            if not self._requests.allow(remote, now):
                raise _Problem(429, "slow_down")
            if request.path.startswith("/j/") and self._bad_tokens.blocked(remote, now):
                raise _Problem(429, "slow_down")
            response = await handler(request)
        except _Problem as problem:
            if problem.status == 429:
                log.warning("web: %s is over its request rate", remote)
            response = self._problem(problem, lang, api=api)
        except web.HTTPRequestEntityTooLarge:
            response = self._problem(_Problem(413, "error", "request too large"), lang, api=True)
        except web.HTTPException as exc:
            key = "bad_link" if exc.status == 404 else "error"
            response = self._problem(_Problem(exc.status, key, exc.reason), lang, api=api)
        headers = response.headers
        headers["Content-Security-Policy"] = CSP
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cache-Control"] = "no-store"
        headers["X-Frame-Options"] = "DENY"
        headers["Permissions-Policy"] = "camera=(self), microphone=(self)"
        return response

    @staticmethod
    def _problem(problem: _Problem, lang: Lang, *, api: bool) -> web.Response:
        if api:
            return web.json_response(
                {"error": problem.detail, "key": problem.key}, status=problem.status
            )
        return web.Response(
            text=message_page(lang, problem.key),
            status=problem.status,
            content_type="text/html",
            charset="utf-8",
        )

    # -- plain pages -----------------------------------------------------------------

    async def _landing(self, request: web.Request) -> web.Response:
        lang = choose_lang(request.headers.get("Accept-Language"))
        return web.Response(text=message_page(lang, "landing"), content_type="text/html")

    async def _ca(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._ca_pem,
            content_type="application/x-x509-ca-cert",
            headers={"Content-Disposition": 'attachment; filename="meshdesk-web-ca.crt"'},
        )

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise _Problem(404, "bad_link")
        return web.Response(body=self._static[name], content_type=_STATIC[name], charset="utf-8")

    async def _redirect(self, request: web.Request) -> web.Response:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        if not _plain_host(host):
            names = self._keeper.names
            host = names[0] if names else "127.0.0.1"
        path = request.raw_path if request.raw_path.startswith("/") else "/"
        location = f"https://{host}:{self.port}{path}"
        raise web.HTTPPermanentRedirect(location)

    # -- the invitation's endpoints --------------------------------------------------

    def _invitation(self, request: web.Request, *, page: bool = False) -> Invitation:
        """The invitation of the path's token, for the browser it is bound to.

        A wrong token counts against the address; it never reveals whether
        anything else exists.
        """
        token = request.match_info["token"]
        remote = request.remote or "?"
        invite = self._desk.book.by_token(token) if 16 <= len(token) <= 64 else None
        if invite is None:
            self._bad_tokens.allow(remote, self._clock())
            log.info("web: unknown invitation token from %s", remote)
            raise _Problem(404, "bad_link")
        # A finished invitation still delivers its last events (the page learns why).
        if invite.state in _GONE and not request.path.endswith("/events"):
            raise _Problem(410, _GONE[invite.state])
        if invite.state is InviteState.NEW:
            if not page:
                raise _Problem(403, "bad_link", "open the invitation's page first")
            return invite
        if not self._desk.book.owns(invite, request.cookies.get(_COOKIE)):
            self._bad_tokens.allow(remote, self._clock())
            log.warning("web: invitation %s used by a second browser at %s; refused",
                        invite.invite_id, remote)  # fmt: skip
            raise _Problem(409, "used")
        return invite

    async def _page(self, request: web.Request) -> web.Response:
        invite = self._invitation(request, page=True)
        lang = choose_lang(request.headers.get("Accept-Language"))
        response = web.Response(text=call_page(lang), content_type="text/html", charset="utf-8")
        if invite.state is InviteState.NEW:
            secret = self._desk.book.open(invite, self._clock())
            invite.remote = request.remote
            invite.lang = lang
            response.set_cookie(
                _COOKIE,
                secret,
                path=f"/j/{invite.token}",
                secure=True,
                httponly=True,
                samesite="Strict",
            )
            log.info("invitation %s opened by %s", invite.invite_id, request.remote)
        return response

    async def _json(self, request: web.Request) -> dict[str, object]:
        if request.content_type != "application/json":
            raise _Problem(415, "error", "send application/json")
        raw = await request.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _Problem(400, "error", "not JSON") from exc
        if not isinstance(data, dict):
            raise _Problem(400, "error", "expected a JSON object")
        return data

    async def _lobby(self, request: web.Request) -> web.Response:
        invite = self._invitation(request)
        try:
            code = self._desk.lobby(invite)
        except UsageError as exc:
            raise _Problem(409, "error", str(exc)) from exc
        return web.json_response({"code": code, "seq": invite.seq})

    async def _events(self, request: web.Request) -> web.Response:
        invite = self._invitation(request)
        try:
            after = int(request.query.get("after", "0"))
        except ValueError as exc:
            raise _Problem(400, "error", "after: not a number") from exc
        if not invite.alive and not invite.events_after(after):
            raise _Problem(410, _GONE.get(invite.state, "ended"))
        busy = self._polls.get(invite.invite_id, 0)
        if busy >= _POLLS_PER_INVITE or sum(self._polls.values()) >= _POLLS_MAX:
            raise _Problem(429, "slow_down", "too many waiting requests")
        self._polls[invite.invite_id] = busy + 1
        try:
            events = await self._desk.events(invite, after)
        finally:
            left = self._polls.get(invite.invite_id, 1) - 1
            if left:
                self._polls[invite.invite_id] = left
            else:
                self._polls.pop(invite.invite_id, None)
        return web.json_response({"events": events})

    async def _offer(self, request: web.Request) -> web.Response:
        invite = self._invitation(request)
        data = await self._json(request)
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > SDP_MAX:
            raise _Problem(400, "error", f"sdp: expected an SDP offer of at most {SDP_MAX} bytes")
        if invite.state is not InviteState.ADMITTED:
            raise _Problem(409, "waiting", "not admitted yet")
        try:
            answer = await self._desk.offer(invite, sdp, request.remote or "")
        except CallError as exc:
            log.warning("web: invitation %s: %s", invite.invite_id, exc)
            raise _Problem(400, "error", str(exc)[:200]) from exc
        except UsageError as exc:
            raise _Problem(409, "error", str(exc)[:200]) from exc
        caps = {"audio": DEFAULT_PROFILE.opus_bps, "video": DEFAULT_PROFILE.video_max_bps}
        return web.json_response({"sdp": answer, "caps": caps})

    async def _mute(self, request: web.Request) -> web.Response:
        invite = self._invitation(request)
        data = await self._json(request)
        audio, video = data.get("audio"), data.get("video")
        if not isinstance(audio, bool) or not isinstance(video, bool):
            raise _Problem(400, "error", "audio and video: expected true or false")
        self._desk.mute(invite, audio, video)
        return web.json_response({"ok": True})

    async def _leave(self, request: web.Request) -> web.Response:
        invite = self._invitation(request)
        self._desk.leave(invite)
        return web.json_response({"ok": True})


def _plain_host(host: str) -> bool:
    """An IP literal or a simple host name (what a redirect may point at)."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host.strip("[]"))
        return True
    return 0 < len(host) <= 253 and all(c.isalnum() or c in "-." for c in host)
