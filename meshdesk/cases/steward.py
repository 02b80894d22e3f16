"""Citizen data stewardship on one node: erasure, retention, exports, the audit trail.

The :class:`Steward` belongs to a :class:`~meshdesk.cases.book.CaseBook` (``book.steward``)
and writes through it; see docs/ARCHITECTURE.md, "Erasure", "Consent changes reseal"
and "Retention and exports". Its task applies erasures that arrive (and those found
unapplied at start), grants keys after consent changes (the book's ``auto_grant``)
and, when ``[records] erase_after_days`` is set, erases cases past their retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from meshdesk.cases.chain import author_node
from meshdesk.cases.events import (
    PAYLOAD_TYPES,
    SEALED_KINDS,
    EventKind,
    Exported,
    decode_body,
    is_redacted,
    is_ref,
)
from meshdesk.cases.export import COLUMNS, PAGE, open_writer, rows_of
from meshdesk.cases.fold import Event, fold
from meshdesk.cases.history import history
from meshdesk.cases.hlc import make_hlc, to_datetime
from meshdesk.cases.listing import parse_since
from meshdesk.cases.model import Personal
from meshdesk.cases.state import CaseState, Erasure
from meshdesk.config import RecordSettings
from meshdesk.errors import AuthError, MeshdeskError, SyncError, UsageError
from meshdesk.identity import NodeInfo, Role
from meshdesk.store import CaseQuery, Store, StoredEvent
from meshdesk.store.records import CaseSummary

if TYPE_CHECKING:
    from meshdesk.cases.book import CaseBook

__all__ = ["AUTO_OP", "RETENTION_OP", "Steward"]

log = logging.getLogger(__name__)
_EXPORTED = int(EventKind.EXPORTED)
_CASE_ERASED = int(EventKind.CASE_ERASED)
_CONSENT_KINDS = frozenset({int(EventKind.CONSENT_ADDED), int(EventKind.CONSENT_WITHDRAWN)})

#: Operator named by what a node writes by itself (an erasure receipt, a key grant).
AUTO_OP = "meshdesk (automatic)"
#: Operator of an erasure the retention rule wrote (``[records] erase_after_days``).
RETENTION_OP = "retention ([records] erase_after_days)"


def _inline_sealed(events: Iterable[StoredEvent]) -> list[tuple[str, int]]:
    """Events whose body holds a sealed blob itself (written before references):
    an erasure must redact them. A body that does not decode is redacted too."""
    out = []
    for event in events:
        if event.kind not in SEALED_KINDS or is_redacted(event.body):
            continue
        try:
            payload = decode_body(event.kind, event.body)
        except SyncError:
            out.append((event.author, event.seq))
            continue
        names = PAYLOAD_TYPES[EventKind(event.kind)].SEALED
        if any(isinstance(getattr(payload, n), bytes) and not is_ref(getattr(payload, n))
               for n in names):  # fmt: skip
            out.append((event.author, event.seq))
    return out


def _matches(state: CaseState, scope: Mapping[str, object]) -> bool:
    """Whether an export with filters ``scope`` selected a case in ``state``."""
    if not state.opened or state.created_hlc is None:
        return False
    values = {"site": state.site, "status": state.status, "category": state.category,
              "urgency": state.urgency}  # fmt: skip
    for key, wanted in scope.items():
        if key == "since":
            try:
                if state.created_hlc < parse_since(str(wanted)):
                    return False
            except UsageError:
                return False
        elif key not in values or str(values[key]) != str(wanted):
            return False
    return True


def _iso(hlc: int) -> str:
    return to_datetime(hlc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Steward:
    """Erasure, retention and exports of one node's cases (see the module docstring)."""

    def __init__(
        self,
        book: CaseBook,
        store: Store,
        *,
        me: str,
        role: Role,
        directory: Callable[[], Awaitable[list[NodeInfo]]],
        wall_ms: Callable[[], int],
        records: RecordSettings,
    ) -> None:
        self._book = book
        self._store = store
        self._me = me
        self._role = role
        self._directory = directory
        self._wall_ms = wall_ms
        self._records = records
        #: ``(job, case_id)``: "erase" applies an erasure, "grant" re-wraps the data
        #: key after a consent change.
        self._work: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._erasing = asyncio.Lock()  # one erasure applied at a time: one receipt
        self._tasks: list[asyncio.Task[None]] = []
        #: Cases erased on this node (loaded on start, kept by :meth:`apply_erasure`).
        self._erased: set[str] = set()

    async def start(self) -> None:
        """Load what was erased, queue erasures not applied yet, start the tasks."""
        self._erased = set(await self._store.erased_cases())
        for case_id in await self._store.pending_erasures():
            self._work.put_nowait(("erase", case_id))
        self._tasks.append(asyncio.create_task(self._work_forever(), name="erasures and grants"))
        if self._records.erase_after_days > 0:
            self._tasks.append(asyncio.create_task(self._retain_forever(), name="retention"))

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def committed(self, events: Iterable[StoredEvent]) -> None:
        """Our own commit: an erasure written here is applied by the task too (after
        a crash between the two, :meth:`start` finds it)."""
        for event in events:
            if event.kind == EventKind.CASE_ERASED and event.case_id is not None:
                self._work.put_nowait(("erase", event.case_id))

    async def refuse_erased(self, case_id: str) -> None:
        if case_id in self._erased or case_id in await self._store.erased_cases():
            raise UsageError(
                f"case {case_id} was erased: it takes no personal data or notes any more"
            )

    def is_erased(self, case_id: str) -> bool:
        """Whether this node has erased the case's sealed data."""
        return case_id in self._erased

    async def may_erase(self, node_id: str, state: CaseState) -> bool:
        """Whether ``node_id`` may erase the case: an HQ node or the case's origin."""
        if node_id == state.origin:
            return True
        return any(
            str(info.node_id) == node_id and info.role is Role.HQ
            for info in await self._directory()
        )

    async def _valid_erasures(self, state: CaseState) -> list[Erasure]:
        """The case's erasures written by a node that may erase it (others are
        ignored: stored, since they are signed, but never applied or counted)."""
        return [e for e in state.erasures if await self.may_erase(e.author, state)]

    async def erase(self, case_id: str, *, op: str, reason: str) -> CaseState:
        """Erase the citizen's data of a case on every node (crypto-shredding): a
        signed CASE_ERASED, applied here at once and by every node that receives it.

        Raises:
            AuthError: this node is neither an HQ node nor the case's origin.
            UsageError: no such case, incomplete here, erased already, or no reason.
        """
        state = await self._book.state(case_id)
        if not await self.may_erase(self._me, state):
            raise AuthError(
                f"only an HQ node or the case's origin ({state.origin or 'unknown here'}) "
                f"may erase case {case_id}; ask HQ to do it"
            )
        if await self._valid_erasures(state):
            raise UsageError(f"case {case_id} is erased already (see `case history`)")
        await self._book.edit(case_id, op, lambda w, s: w.erase(s, reason, wall_ms=self._wall_ms()))
        await self.apply_erasure(case_id)
        return await self._book.state(case_id)

    def notice(self, events: Iterable[StoredEvent]) -> None:
        """Events stored from a peer: queue the erasures they carry (and cases erased
        here that received an old event holding a sealed blob inline), the consent
        changes this node may have to grant keys for, and log exports."""
        erased = self._erased
        for event in events:  # plain ints: a catch-up passes every event it stores
            case_id, kind = event.case_id, event.kind
            if kind == _EXPORTED:
                self._log_export(event)
            elif case_id is None:
                continue
            elif kind == _CASE_ERASED or (case_id in erased and kind in SEALED_KINDS):
                self._work.put_nowait(("erase", case_id))
            elif kind in _CONSENT_KINDS:
                self._work.put_nowait(("grant", case_id))

    @staticmethod
    def _log_export(event: StoredEvent) -> None:
        try:
            fact = decode_body(event.kind, event.body)
        except SyncError as exc:
            log.warning("an export record of %s does not read: %s", event.author, exc)
            return
        if isinstance(fact, Exported):
            fields = f", personal: {', '.join(fact.personal)}" if fact.personal else ""
            log.info("export at %s by %s: %d cases to %s (%s%s; filters %s)",
                     author_node(event.author), fact.op, fact.rows, fact.file, fact.format,
                     fields, fact.scope)  # fmt: skip

    async def _work_forever(self) -> None:
        while True:
            job, case_id = await self._work.get()
            try:
                if job == "erase":
                    await self.apply_erasure(case_id)
                else:
                    await self._book.auto_grant(case_id)
            except MeshdeskError as exc:
                log.error("case %s: could not %s yet: %s", case_id, job, exc)

    async def apply_erasure(self, case_id: str) -> bool:
        """Apply the case's erasure here if an authorised node asked for it: drop its
        payloads, redact old bodies, forget what was decrypted, and write this node's
        receipt (once). Returns whether the case is erased here."""
        async with self._erasing:
            return await self._apply_erasure(case_id)

    async def _apply_erasure(self, case_id: str) -> bool:
        state = await self._book.state(case_id)
        valid = await self._valid_erasures(state)
        if not valid:
            for e in state.erasures:
                log.warning(
                    "case %s: ignored an erasure by %s: only an HQ node or the origin may erase",
                    case_id,
                    e.author,
                )
            return False
        first = case_id not in self._erased and case_id not in await self._store.erased_cases()
        stored = await self._store.events_for_case(case_id)
        dropped = await self._store.erase_case(case_id, _inline_sealed(stored), self._wall_ms())
        self._erased.add(case_id)
        self._book.listing.forget(case_id)
        if first:
            log.info("case %s erased here (asked by %s, %s: %s): %d sealed items dropped",
                     case_id, valid[0].author, valid[0].op, valid[0].reason, dropped)  # fmt: skip
        if not any(r.author == self._me for r in state.receipts):
            await self._book.edit(
                case_id, AUTO_OP, lambda w, s: w.receipt(s, dropped, wall_ms=self._wall_ms())
            )
        return True

    async def _retain_forever(self) -> None:
        while True:
            try:
                await self.retention_pass()
            except MeshdeskError as exc:
                log.error("retention: %s; trying again later", exc)
            await asyncio.sleep(self._records.retention_check)

    async def retention_pass(self, limit: int = 500) -> list[str]:
        """Erase the personal data of cases resolved or closed ``[records]
        erase_after_days`` ago (by their last change), through :meth:`erase`: every
        case on an HQ node, its own cases elsewhere. Returns the cases erased."""
        days = self._records.erase_after_days
        if days <= 0:
            return []
        before = make_hlc(self._wall_ms() - days * 86_400_000)
        origin = None if self._role is Role.HQ else self._me
        erased = []
        for case_id in await self._store.index.retention_due(before, origin, limit):
            state = await self._book.state(case_id)
            if await self._valid_erasures(state) or not await self.may_erase(self._me, state):
                continue
            reason = f"retention: personal data kept {days} days after the case was {state.status}"
            log.info("retention: erasing case %s (%s)", case_id, reason)
            await self.erase(case_id, op=RETENTION_OP, reason=reason)
            erased.append(case_id)
        return erased

    async def erasure_status(self, state: CaseState) -> dict[str, object] | None:
        """Where the case's erasure stands: which nodes sent a receipt, which are
        awaited (with when each was last heard of), as HQ shows it. None: not erased."""
        if not await self._valid_erasures(state):
            return None
        done = {r.author for r in state.receipts}
        nodes = sorted(await self._directory(), key=lambda i: (i.name, str(i.node_id)))
        waiting = []
        for info in nodes:
            node_id = str(info.node_id)
            if node_id not in done:
                newest = await self._store.newest_hlc_of(node_id)
                waiting.append(
                    {
                        "node": node_id,
                        "name": info.name,
                        "last_seen": _iso(newest) if newest else None,
                    }
                )
        total = len(nodes)
        erased = total - len(waiting)
        line = f"erased on {erased} of {total} nodes"
        if waiting:
            line += "; waiting for: " + ", ".join(
                f"{w['name']} (last seen {w['last_seen'] or 'never'})" for w in waiting
            )
        return {"line": line, "erased": erased, "nodes": total, "waiting": waiting,
                "here": state.id in self._erased}  # fmt: skip

    async def export(
        self,
        *,
        op: str,
        fmt: str,
        out: Path,
        query: CaseQuery,
        personal: bool,
        scope: Mapping[str, object],
    ) -> dict[str, object]:
        """Write the cases ``query`` selects to ``out`` (:mod:`.export`) and record the
        export as a signed EXPORTED event (who, format, personal fields, scope, rows),
        which syncs to HQ. The file appears only once the event is stored.

        Raises:
            AuthError: personal fields asked on a node whose role may not export them.
            UsageError: a bad format or path.
        """
        role = str(self._role)
        if personal and role not in self._records.export_roles:
            allowed = ", ".join(self._records.export_roles) or "none"
            raise AuthError(
                f"this node is a {role} node: personal fields are exported only on "
                f"{allowed} nodes ([records] export_roles)"
            )
        if not out.is_absolute():
            raise UsageError(f"give the export file as an absolute path, not {str(out)!r}")
        columns = [c for c in COLUMNS if personal or not c.personal]
        lang = "en" if fmt == "json" else "ja"

        async def details(summary: CaseSummary) -> Personal | None:
            if summary.personal is None:
                return None
            return self._book.personal(await self._book.state(summary.case_id))

        def progress(done: int) -> None:
            if done % 10_000 < PAGE:
                log.info("export to %s: %d cases written", out.name, done)

        rows = readable = 0
        reader = details if personal else None
        with open_writer(out, fmt, columns) as writer:
            async for row, ok in rows_of(
                self._store.index.page, query, reader, columns, lang, progress
            ):
                writer.write(row)
                rows += 1
                readable += ok
            fields = tuple(c.key for c in columns if c.personal)
            scope_text = json.dumps(dict(scope), ensure_ascii=False, sort_keys=True)
            payload = Exported(op.strip(), fmt, fields, scope_text, rows, out.name)
            await self._book.record_fact(payload)
        log.info("export by %s: %d cases to %s (%s%s)", op, rows, out, fmt,
                 ", personal" if personal else "")  # fmt: skip
        return {"path": str(out), "format": fmt, "rows": rows, "personal": personal,
                "readable": readable}  # fmt: skip

    async def history(self, case_id: str) -> list[dict[str, object]]:
        """The case's audit trail from its signed events (:mod:`.history`)."""
        stored = await self._store.events_for_case(case_id)
        if not stored:
            raise UsageError(f"no case {case_id!r} on this node")
        names = {str(info.node_id): info.name for info in await self._directory()}
        return history([*stored, *await self._exports_of(stored)], names)

    async def _exports_of(self, stored: list[StoredEvent]) -> list[StoredEvent]:
        """Exports that took this case: made after it was opened, with filters the
        case matched then (its events up to the export's time folded)."""
        events = []
        for e in stored:
            if not is_redacted(e.body):
                with contextlib.suppress(SyncError):
                    events.append(Event.from_stored(e))
        out = []
        for fact in await self._store.exports():
            then = [e for e in events if e.hlc <= fact.hlc]
            try:
                payload = decode_body(fact.kind, fact.body)
                scope = json.loads(payload.scope) if isinstance(payload, Exported) else None
            except (SyncError, ValueError):
                continue
            if isinstance(scope, dict) and then and _matches(fold(then), scope):
                out.append(fact)
        return out
