"""Case operations (``case_*``): open, list, show and edit consultation cases.

Their context is a :class:`~meshdesk.cases.book.CaseBook` only, so the CLI runs
them on the store itself when no node runs (``meshdesk case …`` behaves the same
either way); the node runs them on its own book. Every one refuses a bad argument,
an unknown case or an invalid transition before anything is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshdesk.cases.export import FORMATS as EXPORT_FORMATS
from meshdesk.cases.listing import query_from
from meshdesk.cases.model import CaseField, Category, Personal, Status, Urgency
from meshdesk.ops._registry import Topic
from meshdesk.ops._schema import Args, Param, choice, date, flag, integer, text, texts
from meshdesk.store import SORTS

if TYPE_CHECKING:
    from meshdesk.cases.book import CaseBook

__all__ = ["CASE_OPS", "DEFAULT_PAGE", "MAX_PAGE", "every_case"]

#: Cases per ``case_list`` page unless asked otherwise, and at most.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: ``case_list`` counts matching cases up to this many (and says when it stopped).
COUNT_CAP = 10_000_000

CASE_OPS: Topic[CaseBook] = Topic("case", "consultation cases")

_ID = text("id", "case id (or its first characters)", positional=True, metavar="ID")
_OPERATOR = text("operator", "who is doing this", required=True)


@CASE_OPS.op(
    "case_new",
    "record a new consultation",
    _OPERATOR,
    choice("category", Category, required=True),
    choice("urgency", Urgency, required=True),
    text("name", "the citizen's name (sealed)", required=True),
    text("furigana", "reading of the name (sealed)"),
    integer("age", low=0, high=150),
    date("birth_date", "date of birth (sealed)"),
    text("phone"),
    text("address"),
    text("shelter", "current shelter"),
    text("language"),
    text("needs", "special needs (sealed)"),
    text("summary", "what the consultation is about (sealed note)"),
    texts("consent", "department the citizen agreed to share with", metavar="DEPT"),
    text("department", "department the case is assigned to"),
)
async def _new(book: CaseBook, args: Args) -> object:
    personal = Personal(
        name=args.text("name"),
        furigana=args.maybe_text("furigana"),
        age=args.maybe("age", int),
        birth_date=args.maybe("birth_date", dt.date),
        phone=args.maybe_text("phone"),
        address=args.maybe_text("address"),
        shelter=args.maybe_text("shelter"),
        language=args.maybe_text("language"),
        needs=args.maybe_text("needs"),
    )
    state = await book.open_case(
        op=args.text("operator"),
        category=args.text("category"),
        urgency=args.text("urgency"),
        personal=personal,
        summary=args.maybe_text("summary"),
        consent=args.texts("consent"),
        department=args.maybe_text("department"),
    )
    return book.view(state)


@CASE_OPS.op(
    "case_list",
    "list cases, most urgent first, a page at a time",
    choice("status", Status),
    choice("urgency", Urgency),
    text("site", "only cases of this site"),
    choice("category", Category),
    text("department", "only cases assigned to this department"),
    flag("conflicts", "only cases with a conflict to resolve"),
    text("since", "only cases opened since (YYYY-MM-DD or an ISO time)", metavar="WHEN"),
    text("search", "words to find: name (where readable), id, site, category…"),
    choice("sort", SORTS, "order (default: urgency)"),
    flag("reverse", "reverse the order"),
    text("after", "continue after this case (the previous page's next)", metavar="ID"),
    text("before", "continue before this case (the page's prev)", metavar="ID"),
    integer("limit", "cases per page", low=1, high=MAX_PAGE, default=DEFAULT_PAGE),
    flag("count", "also count every matching case"),
    integer("count_cap", "stop counting there", low=1, high=COUNT_CAP, default=COUNT_CAP),
)
async def _list(book: CaseBook, args: Args) -> object:
    return await book.listing.page(
        query_from(args),
        search=args.maybe_text("search") or "",
        count=args.maybe("count_cap", int) if args.flag("count") else None,
    )


@CASE_OPS.op("case_counts", "how many cases have each urgency and status")
async def _counts(book: CaseBook, args: Args) -> object:
    return await book.listing.counts()


async def every_case(
    call: Callable[[str, dict[str, Any]], Awaitable[Any]], **args: Any
) -> AsyncIterator[dict[str, Any]]:
    """Every case ``case_list`` selects, page after page, through ``call(op, args)``
    (a control socket, a dispatcher): constant memory however many cases match."""
    after: str | None = None
    while True:
        page = await call("case_list", {**args, "after": after, "limit": MAX_PAGE})
        for case in page["cases"]:
            yield case
        after = page.get("next")
        if after is None:
            return


@CASE_OPS.op("case_show", "show one case in full", _ID)
async def _show(book: CaseBook, args: Args) -> object:
    state = await book.state(await book.resolve_id(args.text("id")))
    return {**book.view(state), "erasure": await book.steward.erasure_status(state)}


@CASE_OPS.op(
    "case_erase",
    "erase the citizen's data of a case on every node (HQ or the case's origin only)",
    _ID,
    _OPERATOR,
    text("reason", "why: the citizen's request, retention… (kept in the signed event)",
         required=True),
)  # fmt: skip
async def _erase(book: CaseBook, args: Args) -> object:
    case_id = await book.resolve_id(args.text("id"))
    state = await book.steward.erase(case_id, op=args.text("operator"), reason=args.text("reason"))
    return {**book.view(state), "erasure": await book.steward.erasure_status(state)}


@CASE_OPS.op(
    "case_export",
    "export cases to a file: csv (Excel), xlsx, json (lines) or hxl (partners)",
    _OPERATOR,
    choice("format", EXPORT_FORMATS, required=True),
    text("out", "the file to write (absolute path)", required=True, metavar="FILE"),
    text("since", "only cases opened since (YYYY-MM-DD or an ISO time)", metavar="WHEN"),
    text("site", "only cases of this site"),
    choice("status", Status),
    choice("category", Category),
    choice("urgency", Urgency),
    flag("personal", "include the citizens' details (HQ nodes by default; readable cases)"),
)
async def _export(book: CaseBook, args: Args) -> object:
    scope = {k: args[k] for k in ("since", "site", "status", "category", "urgency") if args[k]}
    query = query_from({**scope, "sort": "opened"})
    return await book.steward.export(
        op=args.text("operator"),
        fmt=args.text("format"),
        out=Path(args.text("out")),
        query=query,
        personal=args.flag("personal"),
        scope=scope,
    )


@CASE_OPS.op("case_history", "who did what to a case and when, from its signed events", _ID)
async def _history(book: CaseBook, args: Args) -> object:
    case_id = await book.resolve_id(args.text("id"))
    return {"id": case_id, "events": await book.steward.history(case_id)}


Edit = Callable[["CaseBook", str, Args], Awaitable[Any]]


def _edit(name: str, help: str, *params: Param) -> Callable[[Edit], Edit]:
    """Declare an edit of one case: ``id`` and ``operator`` first; returns the new view."""

    def register(make: Edit) -> Edit:
        @CASE_OPS.op(name, help, _ID, _OPERATOR, *params)
        async def run(book: CaseBook, args: Args) -> object:
            case_id = await book.resolve_id(args.text("id"))
            return book.view(await make(book, case_id, args))

        return make

    return register


@_edit("case_note", "add a note (sealed to the case's audience)", text("text", required=True))
async def _note(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.add_note(case_id, op=args.text("operator"), text=args.text("text"))


@_edit(
    "case_refer",
    "refer the case to a department",
    text("department", required=True),
    text("reason", "why, in a few words"),
)
async def _refer(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.refer(
        case_id,
        op=args.text("operator"),
        department=args.text("department"),
        reason=args.maybe_text("reason") or "",
    )


@_edit("case_status", "change the case's status", choice("status", Status, positional=True))
async def _status(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.set_status(case_id, op=args.text("operator"), status=args.text("status"))


@_edit("case_resolve", "mark the case resolved")
async def _resolve(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.set_status(case_id, op=args.text("operator"), status="resolved")


@_edit(
    "case_consent",
    "add a department the citizen consented to share with",
    text("department", required=True),
)
async def _consent(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.add_consent(
        case_id, op=args.text("operator"), department=args.text("department")
    )


@_edit(
    "case_withdraw",
    "withdraw a department from the consent: later notes are not sealed to it",
    text("department", required=True),
)
async def _withdraw(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.withdraw_consent(
        case_id, op=args.text("operator"), department=args.text("department")
    )


@_edit(
    "case_set",
    "set a field (also resolves a conflict on it)",
    choice("field", CaseField, required=True),
    text("value", required=True),
)
async def _set(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.set_field(
        case_id, op=args.text("operator"), field=args.text("field"), value=args.text("value")
    )


@_edit(
    "case_settle",
    "resolve a conflict by writing a value that has seen every candidate",
    text("field", "the conflicted field", required=True),
    text("value", required=True),
)
async def _settle(book: CaseBook, case_id: str, args: Args) -> object:
    return await book.resolve_conflict(
        case_id, op=args.text("operator"), field=args.text("field"), value=args.text("value")
    )
