"""Case operations by name, with JSON-shaped arguments and results.

The same table serves the control socket of a running node and the CLI when no
node runs, so ``meshdesk case …`` behaves the same either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from meshdesk.cases.args import choice_arg as _choice
from meshdesk.cases.args import need_arg as _need
from meshdesk.cases.args import text_arg as _text
from meshdesk.cases.args import texts_arg as _texts
from meshdesk.cases.book import CaseBook
from meshdesk.cases.model import Category, Personal, Status, Urgency
from meshdesk.errors import UsageError

__all__ = ["CASE_OPS", "run_case_op"]

Op = Callable[[CaseBook, Mapping[str, Any]], Awaitable[object]]


async def _new(book: CaseBook, args: Mapping[str, Any]) -> object:
    age = args.get("age")
    if age is not None and (not isinstance(age, int) or isinstance(age, bool)):
        raise UsageError("age must be a whole number")
    birth = _text(args, "birth_date", required=False)
    try:
        born = dt.date.fromisoformat(birth) if birth else None
    except ValueError:
        raise UsageError(f"birth date {birth!r} is not YYYY-MM-DD") from None
    personal = Personal(
        name=_need(args, "name"),
        furigana=_text(args, "furigana", required=False),
        age=age,
        birth_date=born,
        phone=_text(args, "phone", required=False),
        address=_text(args, "address", required=False),
        shelter=_text(args, "shelter", required=False),
        language=_text(args, "language", required=False),
        needs=_text(args, "needs", required=False),
    )
    state = await book.open_case(
        op=_need(args, "operator"),
        category=_choice(args, "category", Category),
        urgency=_choice(args, "urgency", Urgency),
        personal=personal,
        summary=_text(args, "summary", required=False),
        consent=_texts(args, "consent"),
        department=_text(args, "department", required=False),
    )
    return book.view(state)


async def _list(book: CaseBook, args: Mapping[str, Any]) -> object:
    status = _choice(args, "status", Status) if args.get("status") else None
    urgency = _choice(args, "urgency", Urgency) if args.get("urgency") else None
    views = []
    for state in await book.cases():
        if status and str(state.status) != status:
            continue
        if urgency and str(state.urgency) != urgency:
            continue
        views.append(book.view(state, detail=False))
    rank = {str(u): u.rank for u in Urgency}
    views.sort(key=lambda v: (rank.get(str(v["urgency"]), 99), str(v["created_at"])))
    return views


async def _show(book: CaseBook, args: Mapping[str, Any]) -> object:
    return book.view(await book.state(await book.resolve_id(_need(args, "id"))))


def _edit(make: Callable[[CaseBook, str, Mapping[str, Any]], Awaitable[Any]]) -> Op:
    async def run(book: CaseBook, args: Mapping[str, Any]) -> object:
        case_id = await book.resolve_id(_need(args, "id"))
        return book.view(await make(book, case_id, args))

    return run


CASE_OPS: Mapping[str, Op] = {
    "new": _new,
    "list": _list,
    "show": _show,
    "note": _edit(lambda b, c, a: b.add_note(c, op=_need(a, "operator"), text=_need(a, "text"))),
    "refer": _edit(
        lambda b, c, a: b.refer(
            c,
            op=_need(a, "operator"),
            department=_need(a, "department"),
            reason=_text(a, "reason", required=False) or "",
        )
    ),
    "status": _edit(
        lambda b, c, a: b.set_status(
            c, op=_need(a, "operator"), status=_choice(a, "status", Status)
        )
    ),
    "resolve": _edit(lambda b, c, a: b.set_status(c, op=_need(a, "operator"), status="resolved")),
    "consent": _edit(
        lambda b, c, a: b.add_consent(c, op=_need(a, "operator"), department=_need(a, "department"))
    ),
    "settle": _edit(
        lambda b, c, a: b.resolve_conflict(
            c, op=_need(a, "operator"), field=_need(a, "field"), value=_need(a, "value")
        )
    ),
    "set": _edit(
        lambda b, c, a: b.set_field(
            c, op=_need(a, "operator"), field=_need(a, "field"), value=_need(a, "value")
        )
    ),
}


async def run_case_op(book: CaseBook, name: str, args: Mapping[str, Any]) -> object:
    """Run case operation ``name``.

    Raises:
        UsageError: unknown operation, missing or bad argument, unknown case,
            invalid transition — and then nothing is written.
    """
    op = CASE_OPS.get(name)
    if op is None:
        raise UsageError(f"unknown case operation {name!r}; known: {', '.join(CASE_OPS)}")
    return await op(book, args)
