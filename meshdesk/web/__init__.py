"""Citizens join consultations from their own phone's browser, over the local Wi-Fi.

Staff make an invitation (:mod:`meshdesk.web.invites`); its QR code opens a page
the node serves itself on its HTTPS port (:mod:`meshdesk.web.server`, certificate
from :mod:`meshdesk.web.certs`); the citizen waits in a lobby with a 4-digit code
until staff admit them (:mod:`meshdesk.web.desk`), and then joins a call this node
hosts, whose other participants get the citizen's media through this node
(:meth:`meshdesk.calls.CallManager.guest_offer`).

:func:`start_web` is what the node calls: it always returns the desk (so the
``invite_*`` operations can say why citizens cannot join), and starts the port
when the kit has a web sub-CA and ``[web] enabled`` is true.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from meshdesk.calls import CallManager, Guest
from meshdesk.config import Config
from meshdesk.home import NodeHome
from meshdesk.identity import NodeKit
from meshdesk.web.certs import LeafKeeper, local_addresses
from meshdesk.web.desk import CitizenDesk, Publish, WebUnavailable
from meshdesk.web.invites import Invitation, InviteBook, InviteState, RateLimiter
from meshdesk.web.server import WebServer

__all__ = [
    "CitizenDesk",
    "Invitation",
    "InviteBook",
    "InviteState",
    "LeafKeeper",
    "RateLimiter",
    "WebServer",
    "WebUnavailable",
    "start_web",
]

log = logging.getLogger("meshdesk.web")

_CITIZEN = {"ja": "市民", "en": "citizen"}


async def start_web(
    stack: contextlib.AsyncExitStack,
    home: NodeHome,
    kit: NodeKit,
    config: Config,
    calls: CallManager,
    publish: Publish,
    *,
    now: Callable[[], dt.datetime],
) -> CitizenDesk:
    """The node's citizen desk, with its web port running in ``stack`` when it can."""
    settings = config.web
    word = _CITIZEN[config.node.language]

    def make_guest(invite: Invitation, remote: str) -> Guest:
        name = f"{word} {invite.code}" if invite.code else word
        return Guest(invite.guest_id, name, remote, invite.case_id, invite.call_id, invite.code)

    desk = CitizenDesk(calls, make_guest, ttl=settings.invite_ttl, publish=publish)
    calls.add_listener(desk.on_call)
    calls.guest_desk = desk
    if not settings.enabled:
        desk.unavailable = "the web port is turned off ([web] enabled = false)"
        return desk
    if kit.web is None:
        desk.unavailable = (
            "this node's kit has no web sub-CA (issued before the web port); "
            "ask HQ for a new kit (see field-kit/docs/provisioning.md)"
        )
        log.warning("web: %s; citizens cannot join from phones", desk.unavailable)
        return desk
    network = config.network
    keeper = LeafKeeper(
        home,
        kit.web,
        lambda: local_addresses(settings.listen.host, network.interfaces),
        now=now,
    )
    server = WebServer(
        desk,
        keeper,
        listen=settings.listen,
        redirect_listen=settings.redirect_listen,
        ca_pem=kit.web.root_pem(),
        address_check=settings.address_check,
    )
    try:
        await stack.enter_async_context(server)
    except OSError as exc:
        desk.unavailable = f"cannot serve on {settings.listen}: {exc.strerror or exc}"
        log.warning("web: %s; citizens cannot join from phones", desk.unavailable)
    return desk
