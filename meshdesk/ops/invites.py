"""Invitation operations: bring a citizen's phone into a consultation.

Their context is the node's :class:`~meshdesk.web.CitizenDesk`. An invitation's
object holds its ``invite_id``, ``state`` (new, opened, waiting, admitted,
declined, expired, ended), the 4-digit ``code`` once the citizen waits, ``case_id``,
``call_id``, ``expires_in_s`` and, while it is alive, its ``url`` (what the QR code
holds) and ``urls`` (one per address of this node).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshdesk.ops._registry import Topic
from meshdesk.ops._schema import Args, text

if TYPE_CHECKING:
    from meshdesk.web import CitizenDesk

__all__ = ["INVITE_OPS"]

INVITE_OPS: Topic[CitizenDesk] = Topic("invite", "citizens joining from their phones")

_KEY = text("code", "the 4-digit code the phone shows (or the invitation id)", required=True)


@INVITE_OPS.op(
    "invite_new",
    "a single-use invitation for a citizen's phone: its URL (show it as a QR code)",
    text("case", "the case the consultation is about (its call is logged on it)"),
    text("call_id", "bring the citizen into this running call (this node must host it)"),
)
async def _new(desk: CitizenDesk, args: Args) -> object:
    return desk.new(case_id=args.maybe_text("case"), call_id=args.maybe_text("call_id"))


@INVITE_OPS.op("invite_list", "every invitation: who waits (with its code), who is in a call")
async def _list(desk: CitizenDesk, args: Args) -> object:
    return desk.invitations()


@INVITE_OPS.op("invite_admit", "let a waiting citizen in (the call starts on their phone)", _KEY)
async def _admit(desk: CitizenDesk, args: Args) -> object:
    return desk.admit(args.text("code"))


@INVITE_OPS.op("invite_decline", "send a waiting citizen away, or take one out of the call", _KEY)
async def _decline(desk: CitizenDesk, args: Args) -> object:
    return desk.decline(args.text("code"))
