"""Notice operations (``announce_*``, ``message_*``): HQ announcements with read
receipts and operator messages (:mod:`meshdesk.notices`).

Their context is a :class:`~meshdesk.notices.board.NoticeBoard` only, so the CLI
runs them on the store itself when no node runs, like the case operations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshdesk.notices.events import Severity
from meshdesk.ops._registry import Topic
from meshdesk.ops._schema import Args, choice, flag, text, texts

if TYPE_CHECKING:
    from meshdesk.notices.board import NoticeBoard

__all__ = ["NOTICE_OPS"]

NOTICE_OPS: Topic[NoticeBoard] = Topic("notice", "announcements and messages")

_OPERATOR = text("operator", "who is doing this", required=True)
_ID = text("id", "announcement id (or its first characters)", positional=True, metavar="ID")
_MSG = text("id", "message id (or its first characters)", positional=True, metavar="ID")


@NOTICE_OPS.op(
    "announce_new",
    "post an announcement to every site or some (HQ, and roles allowed by config)",
    _OPERATOR,
    text("title", "title, in --lang", required=True, max_len=120),
    text("body", "text, in --lang", max_len=4000),
    choice("lang", ("ja", "en"), "language of --title and --body (default: ja)"),
    text("title_en", "English title beside a Japanese one", max_len=120),
    text("body_en", "English text beside a Japanese one", max_len=4000),
    choice("severity", Severity, "info, warning or severe (severe: a banner until read)"),
    texts("to", "all, site:NAME, role:ROLE or dept:NAME (default: all)", metavar="TARGET"),
    text("expires", "when it stops showing: 6h, 30m, 2d or an ISO time"),
    flag("exercise", "a drill announcement (CAP status Exercise)", default=None),
)
async def _announce_new(board: NoticeBoard, args: Args) -> object:
    return await board.announce(
        op=args.text("operator"),
        title=args.text("title"),
        body=args.maybe_text("body"),
        lang=args.maybe_text("lang") or "ja",
        title_en=args.maybe_text("title_en"),
        body_en=args.maybe_text("body_en"),
        severity=args.maybe_text("severity") or "info",
        targets=args.texts("to"),
        expires=args.maybe_text("expires"),
        exercise=args.maybe("exercise", bool),
    )


@NOTICE_OPS.op(
    "announce_list",
    "announcements this node shows, newest first",
    flag("all", "include expired ones"),
)
async def _announce_list(board: NoticeBoard, args: Args) -> object:
    return {"announcements": await board.announcements(include_expired=args.flag("all"))}


@NOTICE_OPS.op("announce_show", "one announcement with its delivery and reading per site", _ID)
async def _announce_show(board: NoticeBoard, args: Args) -> object:
    return await board.announcement_view(args.text("id"), detail=True)


@NOTICE_OPS.op(
    "announce_ack", "acknowledge an announcement (a signed read receipt)", _ID, _OPERATOR
)
async def _announce_ack(board: NoticeBoard, args: Args) -> object:
    return await board.acknowledge(args.text("id"), op=args.text("operator"))


@NOTICE_OPS.op("announce_banner", "severe announcements nobody here acknowledged yet")
async def _announce_banner(board: NoticeBoard, args: Args) -> object:
    return {"announcements": await board.banner()}


@NOTICE_OPS.op(
    "message_send",
    "send a sealed line to one node or to every node serving a department",
    _OPERATOR,
    text("text", "what to say", positional=True, metavar="TEXT", max_len=4000),
    text("to", "node id, its start, or its name"),
    text("dept", "department: every node serving it"),
    text("case", "case id the message is about"),
)
async def _message_send(board: NoticeBoard, args: Args) -> object:
    return await board.send(
        op=args.text("operator"),
        text=args.text("text"),
        to_node=args.maybe_text("to"),
        to_dept=args.maybe_text("dept"),
        case_id=args.maybe_text("case"),
    )


@NOTICE_OPS.op("message_list", "messages to and from this node, newest first")
async def _message_list(board: NoticeBoard, args: Args) -> object:
    return {"messages": await board.messages()}


@NOTICE_OPS.op("message_read", "mark a received message read (a signed receipt)", _MSG, _OPERATOR)
async def _message_read(board: NoticeBoard, args: Args) -> object:
    return await board.mark_read(args.text("id"), op=args.text("operator"))
