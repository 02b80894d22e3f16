"""The case book: what an operator does to cases, on one node.

It ties the pure parts together: the writer builds the next event from the
folded state, personal data is sealed to the case's audience before anything is
written, the node's chain appends and signs, and the store keeps events and
checkpoint in one transaction. The CLI uses it directly when no node runs, and
the running node uses it behind the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgpack

from meshdesk._lifecycle import AsyncResource
from meshdesk.cases.chain import ChainWriter, author_node, new_chain_author
from meshdesk.cases.events import (
    PAYLOAD_TYPES,
    SEALED_KINDS,
    CaseOpened,
    EventKind,
    Exported,
    decode_body,
    is_redacted,
    is_ref,
)
from meshdesk.cases.export import COLUMNS, PAGE, open_writer, rows_of
from meshdesk.cases.fold import CaseWriter, Draft, Event, fold
from meshdesk.cases.history import history
from meshdesk.cases.hlc import Clock, make_hlc, to_datetime
from meshdesk.cases.listing import CaseLister, conflict_views
from meshdesk.cases.model import Category, Personal, Status, Urgency
from meshdesk.cases.sealing import audience, grant, open_sealed, recipients_of, seal
from meshdesk.cases.search import SearchKey
from meshdesk.cases.state import CaseState
from meshdesk.config import RecordSettings
from meshdesk.errors import AuthError, MeshdeskError, StoreError, SyncError, UsageError
from meshdesk.identity import NodeInfo, NodeKit, Role
from meshdesk.store import CaseQuery, Store, StoredEvent
from meshdesk.store.records import CaseSummary

__all__ = ["CaseBook", "case_aad"]

Directory = Callable[[], Awaitable[list[NodeInfo]]]

log = logging.getLogger(__name__)

#: Operator named by what a node writes by itself (an erasure receipt).
_AUTO_OP = "meshdesk (automatic)"
#: Operator of an erasure the retention rule wrote (``[records] erase_after_days``).
_RETENTION_OP = "retention ([records] erase_after_days)"


def case_aad(case_id: str, part: str) -> bytes:
    """Binds a sealed block to its case and purpose (``personal`` or ``note``)."""
    return f"meshdesk:case:{case_id}:{part}".encode()


def _personal_json(personal: Personal) -> dict[str, object]:
    data: dict[str, object] = dataclasses.asdict(personal)
    if personal.birth_date is not None:
        data["birth_date"] = personal.birth_date.isoformat()
    return data


def _members(blob: bytes) -> set[str]:
    """Recipients of a block from a peer; a malformed block has none (it opens for no one)."""
    try:
        return recipients_of(blob)
    except SyncError:
        return set()


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
        if any(
            isinstance(v, bytes) and not is_ref(v) for v in map(payload.__getattribute__, names)
        ):
            out.append((event.author, event.seq))
    return out


def _iso(hlc: int) -> str:
    return to_datetime(hlc).isoformat(timespec="seconds").replace("+00:00", "Z")


class CaseBook(AsyncResource):
    """Cases of one node: create, edit, read; sealing what is personal.

    Lists come from the store's case index through :attr:`listing`. Used as an async
    context manager (the running node), it also keeps the search terms of cases this
    node can read up to date in the background; without one (the CLI on a store),
    :meth:`CaseLister.index_search` does that on demand.
    """

    def __init__(
        self,
        store: Store,
        kit: NodeKit,
        *,
        directory: Directory,
        wall_ms: Callable[[], int],
        rng: random.Random | None = None,
        records: RecordSettings | None = None,
    ) -> None:
        if not store.keeps_case_index:
            raise ValueError("a case book needs a store that keeps the case index (case_store)")
        self._store = store
        self._kit = kit
        self._me = str(kit.node_id)
        self._directory = directory
        self._wall_ms = wall_ms
        self._rng = rng
        self._chain: ChainWriter | None = None
        self._clock = Clock()
        #: Awaited after every commit (the sync driver announces new events).
        self.on_commit: Callable[[list[StoredEvent]], Awaitable[None]] | None = None
        key = kit.sealing_key
        #: Pages of the case index (``case_list``), and the search terms.
        self.listing = CaseLister(store, self, None if key is None else SearchKey.of(key))
        self._search: asyncio.Task[None] | None = None
        self._eraser: asyncio.Task[None] | None = None
        #: ``(job, case_id)`` for the book's task: "erase" applies an erasure, "grant"
        #: re-wraps the data key after a consent change, "export" logs a peer's export.
        self._work: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._erasing = asyncio.Lock()  # one erasure applied at a time: one receipt
        self._records = records or RecordSettings()
        self._retention: asyncio.Task[None] | None = None
        #: Cases erased on this node (loaded on entry, kept by :meth:`apply_erasure`).
        self._erased: set[str] = set()

    async def __aenter__(self) -> CaseBook:
        self._erased = set(await self._store.erased_cases())
        for case_id in await self._store.pending_erasures():
            self._work.put_nowait(("erase", case_id))
        self._search = asyncio.create_task(self.listing.run(), name="search terms")
        self._eraser = asyncio.create_task(self._work_forever(), name="erasures and grants")
        if self._records.erase_after_days > 0:
            self._retention = asyncio.create_task(self._retain_forever(), name="retention")
        return self

    async def aclose(self) -> None:
        for task in (self._search, self._eraser, self._retention):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._search = self._eraser = self._retention = None

    async def _writer(self) -> ChainWriter:
        """This book's chain: a new one, never a continuation (see cases/chain.py).

        The clock starts after the newest event any chain of this node wrote, so
        a restart with a clock that went backwards still stamps edits in order.
        """
        if self._chain is None:
            self._clock = Clock(await self._store.newest_hlc_of(self._me))
            self._chain = ChainWriter(new_chain_author(self._me), self._kit.key, None)
        return self._chain

    # -- reading -------------------------------------------------------------------

    async def resolve_id(self, text: str) -> str:
        """A full case id, or a unique start of one or of its last group (as staff
        read it off a screen)."""
        wanted = text.strip().lower()
        if len(wanted) < 4:
            raise UsageError(f"case id {text!r} is too short; give at least 4 characters")
        matches = await self._store.index.find_ids(wanted)
        if not matches:
            raise UsageError(f"no case {text!r} on this node")
        if len(matches) > 1:
            raise UsageError(f"{text!r} matches {len(matches)} cases; give more of the id")
        return matches[0]

    async def state(self, case_id: str) -> CaseState:
        stored = await self._store.index.case_events(case_id)
        if not stored:
            raise UsageError(f"no case {case_id!r} on this node")
        try:
            return fold(Event.from_stored(e) for e in stored if not is_redacted(e.body))
        except ValueError:  # every event redacted: nothing left to fold (cannot happen
            raise StoreError(f"case {case_id} holds nothing readable") from None  # today)
        except SyncError as exc:
            raise StoreError(f"case {case_id} holds an event this node cannot read: {exc}") from exc

    # -- writing -------------------------------------------------------------------

    async def _commit(self, drafts: list[Draft]) -> None:
        chain = await self._writer()
        before = chain.head
        for draft in drafts:
            chain.append(
                hlc=draft.hlc,
                case_id=draft.case_id,
                kind=draft.kind,
                body=draft.body,
                payloads=draft.payloads,
            )
        events, checkpoint = chain.commit()
        try:
            await self._store.append_run(events, checkpoint, received_at=self._wall_ms())
        except MeshdeskError:
            chain.rollback(before)
            raise
        if self.on_commit is not None:
            await self.on_commit(events)
        for event in events:
            if event.kind == EventKind.CASE_ERASED and event.case_id is not None:
                self._work.put_nowait(("erase", event.case_id))

    def _case_writer(self, op: str) -> CaseWriter:
        if not op.strip():
            raise UsageError("say who you are: the operator name must not be empty")
        return CaseWriter(op, self._clock, self._rng)

    async def _seal(
        self, case_id: str, part: str, plaintext: bytes, consent: Iterable[str], *, origin: str
    ) -> bytes:
        # The case's audience, whoever writes: its origin (not the writing node),
        # every HQ, the consented departments.
        people = audience(origin=origin, consent=consent, directory=await self._directory())
        if not people:
            raise AuthError("no node can be given this personal data (no sealing keys known)")
        return seal(plaintext, people, aad=case_aad(case_id, part))

    async def open_case(
        self,
        *,
        op: str,
        category: str,
        urgency: str,
        personal: Personal,
        summary: str | None = None,
        consent: Iterable[str] = (),
        department: str | None = None,
    ) -> CaseState:
        """Record a new case; the personal block is sealed before it is written."""
        writer = self._case_writer(op)
        await self._writer()
        consent = tuple(consent)
        draft = writer.open_case(
            wall_ms=self._wall_ms(),
            site=self._kit.info.site,
            category=category,
            urgency=urgency,
            consent=consent,
            department=department,
        )
        sealed = await self._seal(
            draft.case_id, "personal", personal.to_msgpack(), consent, origin=self._me
        )
        opening = draft.payload
        assert isinstance(opening, CaseOpened)
        draft = dataclasses.replace(draft, payload=dataclasses.replace(opening, sealed=sealed))
        drafts = [draft]
        if summary:
            opened = fold([draft.event(self._me, 0)])
            note = await self._seal(
                draft.case_id, "note", summary.encode(), consent, origin=self._me
            )
            drafts.append(writer.add_note(opened, note, wall_ms=self._wall_ms()))
        await self._commit(drafts)
        return await self.state(draft.case_id)

    async def _edit(
        self, case_id: str, op: str, make: Callable[[CaseWriter, CaseState], Draft]
    ) -> CaseState:
        writer = self._case_writer(op)
        await self._writer()
        state = await self.state(case_id)
        # The writer stamps the edit after the case's newest event (Clock.now).
        await self._commit([make(writer, state)])
        return await self.state(case_id)

    async def add_note(self, case_id: str, *, op: str, text: str) -> CaseState:
        if not text.strip():
            raise UsageError("a note must not be empty")
        state = await self.state(case_id)
        if state.origin is None:
            raise UsageError(f"case {case_id} is incomplete here; its opening has not arrived")
        await self._refuse_erased(case_id)
        sealed = await self._seal(
            case_id, "note", text.encode(), state.consent, origin=state.origin
        )
        return await self._edit(
            case_id, op, lambda w, s: w.add_note(s, sealed, wall_ms=self._wall_ms())
        )

    async def refer(self, case_id: str, *, op: str, department: str, reason: str = "") -> CaseState:
        return await self._edit(
            case_id, op, lambda w, s: w.refer(s, department, reason, wall_ms=self._wall_ms())
        )

    async def set_status(self, case_id: str, *, op: str, status: str) -> CaseState:
        return await self._edit(
            case_id, op, lambda w, s: w.set_status(s, status, wall_ms=self._wall_ms())
        )

    async def set_field(self, case_id: str, *, op: str, field: str, value: str) -> CaseState:
        return await self._edit(
            case_id, op, lambda w, s: w.set_field(s, field, value, wall_ms=self._wall_ms())
        )

    async def resolve_conflict(self, case_id: str, *, op: str, field: str, value: str) -> CaseState:
        return await self._edit(
            case_id, op, lambda w, s: w.resolve_conflict(s, field, value, wall_ms=self._wall_ms())
        )

    async def log_call(
        self,
        case_id: str,
        *,
        op: str,
        call_id: str,
        participants: list[str],
        started_ms: int,
        ended_ms: int,
    ) -> CaseState:
        """Record a call about the case: who took part, when, for how long (never media)."""
        started, ended = make_hlc(started_ms), make_hlc(max(ended_ms, started_ms))
        duration_s = max(0, round((ended_ms - started_ms) / 1000))
        return await self._edit(
            case_id,
            op,
            lambda w, s: w.log_call(
                s,
                participants=participants,
                started_hlc=started,
                ended_hlc=ended,
                duration_s=duration_s,
                wall_ms=self._wall_ms(),
                call_id=call_id,
            ),
        )

    async def add_consent(self, case_id: str, *, op: str, department: str) -> CaseState:
        """Add a department to the consent and, if this node can, re-seal for it."""
        state = await self._edit(
            case_id, op, lambda w, s: w.add_consent(s, department, wall_ms=self._wall_ms())
        )
        grants = await self._grants_for(state)
        if grants is not None:
            state = await self._edit(
                case_id, op, lambda w, s: w.grant_keys(s, grants, wall_ms=self._wall_ms())
            )
        return state

    async def withdraw_consent(self, case_id: str, *, op: str, department: str) -> CaseState:
        """Take a department out of the consent: notes and personal blocks written
        from now on are sealed without it (what it read before stays read)."""
        return await self._edit(
            case_id, op, lambda w, s: w.withdraw_consent(s, department, wall_ms=self._wall_ms())
        )

    async def auto_grant(self, case_id: str) -> bool:
        """A consent change arrived: if this node is in the audience and a member
        lacks the key, grant it now (KEY_GRANT), so the new department can read the
        case without anyone acting. Returns whether a grant was written."""
        if case_id in self._erased:
            return False
        state = await self.state(case_id)
        grants = await self._grants_for(state)
        if grants is None:
            return False
        log.info("case %s: granted the data key to its new audience", case_id)
        await self._edit(
            case_id, _AUTO_OP, lambda w, s: w.grant_keys(s, grants, wall_ms=self._wall_ms())
        )
        return True

    async def _grants_for(self, state: CaseState) -> bytes | None:
        """Sealed blocks re-wrapped for audience members that lack a key; None if we can't."""
        key = self._kit.sealing_key
        if key is None or state.origin is None:
            return None
        wanted = audience(
            origin=state.origin, consent=state.consent, directory=await self._directory()
        )
        out: dict[str, Any] = {"notes": {}}
        try:
            blob = self._current_personal(state)
            if blob is not None and not is_ref(blob):
                missing = [r for r in wanted if r.node_id not in _members(blob)]
                if missing:
                    out["personal"] = grant(
                        blob, self._me, key, missing, aad=case_aad(state.id, "personal")
                    )
            for note in state.notes:
                note_blob = self._note_blob(state, note.note_id, note.sealed)
                if is_ref(note_blob):
                    continue  # its blob is not here (erased): nothing to grant
                missing = [r for r in wanted if r.node_id not in _members(note_blob)]
                if missing:
                    out["notes"][note.note_id] = grant(
                        note_blob, self._me, key, missing, aad=case_aad(state.id, "note")
                    )
        except AuthError:
            return None  # we are not in the audience ourselves: another member will grant
        if "personal" not in out and not out["notes"]:
            return None
        return bytes(msgpack.packb(out, use_bin_type=True))

    # -- erasure -------------------------------------------------------------------

    async def _refuse_erased(self, case_id: str) -> None:
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

    async def erase(self, case_id: str, *, op: str, reason: str) -> CaseState:
        """Erase the citizen's data of a case on every node (crypto-shredding): a
        signed CASE_ERASED, applied here at once and by every node that receives it.

        Raises:
            AuthError: this node is neither an HQ node nor the case's origin.
            UsageError: no such case, incomplete here, erased already, or no reason.
        """
        state = await self.state(case_id)
        if not await self.may_erase(self._me, state):
            raise AuthError(
                f"only an HQ node or the case's origin ({state.origin or 'unknown here'}) "
                f"may erase case {case_id}; ask HQ to do it"
            )
        if state.erasures:
            raise UsageError(f"case {case_id} is erased already (see `case history`)")
        await self._edit(case_id, op, lambda w, s: w.erase(s, reason, wall_ms=self._wall_ms()))
        await self.apply_erasure(case_id)
        return await self.state(case_id)

    def notice(self, events: Iterable[StoredEvent]) -> None:
        """Events stored from a peer: queue the erasures they carry (and cases erased
        here that received an old event holding a sealed blob inline), the consent
        changes this node may have to grant keys for, and log exports."""
        for event in events:
            case_id = event.case_id
            if event.kind == EventKind.EXPORTED:
                self._log_export(event)
            elif case_id is None:
                continue
            elif event.kind == EventKind.CASE_ERASED or (
                case_id in self._erased and event.kind in SEALED_KINDS
            ):
                self._work.put_nowait(("erase", case_id))
            elif event.kind in (EventKind.CONSENT_ADDED, EventKind.CONSENT_WITHDRAWN):
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
                    await self.auto_grant(case_id)
            except MeshdeskError as exc:
                log.error("case %s: could not %s yet: %s", case_id, job, exc)

    async def apply_erasure(self, case_id: str) -> bool:
        """Apply the case's erasure here if an authorised node asked for it: drop its
        payloads, redact old bodies, forget what was decrypted, and write this node's
        receipt (once). Returns whether the case is erased here."""
        async with self._erasing:
            return await self._apply_erasure(case_id)

    async def _apply_erasure(self, case_id: str) -> bool:
        state = await self.state(case_id)
        valid = [e for e in state.erasures if await self.may_erase(e.author, state)]
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
        self.listing.forget(case_id)
        if first:
            log.info("case %s erased here (asked by %s, %s: %s): %d sealed items dropped",
                     case_id, valid[0].author, valid[0].op, valid[0].reason, dropped)  # fmt: skip
        if not any(r.author == self._me for r in state.receipts):
            await self._writer()
            writer = CaseWriter(_AUTO_OP, self._clock, self._rng)
            now = await self.state(case_id)
            await self._commit([writer.receipt(now, dropped, wall_ms=self._wall_ms())])
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
        origin = None if self._kit.info.role is Role.HQ else self._me
        erased = []
        for case_id in await self._store.index.retention_due(before, origin, limit):
            state = await self.state(case_id)
            if state.erasures or not await self.may_erase(self._me, state):
                continue
            reason = f"retention: personal data kept {days} days after the case was {state.status}"
            log.info("retention: erasing case %s (%s)", case_id, reason)
            await self.erase(case_id, op=_RETENTION_OP, reason=reason)
            erased.append(case_id)
        return erased

    async def erasure_status(self, state: CaseState) -> dict[str, object] | None:
        """Where the case's erasure stands: which nodes sent a receipt, which are
        awaited (with when each was last heard of), as HQ shows it. None: not erased."""
        if not state.erasures:
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
        role = str(self._kit.info.role)
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
            return self.personal(await self.state(summary.case_id))

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
            await self._commit_fact(payload)
        log.info("export by %s: %d cases to %s (%s%s)", op, rows, out, fmt,
                 ", personal" if personal else "")  # fmt: skip
        return {"path": str(out), "format": fmt, "rows": rows, "personal": personal,
                "readable": readable}  # fmt: skip

    async def _commit_fact(self, payload: Exported) -> None:
        """A node fact (no case): one signed event on this node's chain."""
        chain = await self._writer()
        before = chain.head
        hlc = self._clock.now(self._wall_ms())
        chain.append(hlc=hlc, case_id=None, kind=payload.KIND, body=payload.encode())
        events, checkpoint = chain.commit()
        try:
            await self._store.append_run(events, checkpoint, received_at=self._wall_ms())
        except MeshdeskError:
            chain.rollback(before)
            raise
        if self.on_commit is not None:
            await self.on_commit(events)

    async def history(self, case_id: str) -> list[dict[str, object]]:
        """The case's audit trail from its signed events (:mod:`.history`)."""
        stored = await self._store.events_for_case(case_id)
        if not stored:
            raise UsageError(f"no case {case_id!r} on this node")
        names = {str(info.node_id): info.name for info in await self._directory()}
        return history(stored, names)

    # -- views ---------------------------------------------------------------------

    def _grants(self, state: CaseState) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        for g in state.grants:
            try:
                obj = msgpack.unpackb(g.grants, raw=False, max_bin_len=1 << 20)
            except (ValueError, msgpack.UnpackException):
                obj = None
            if isinstance(obj, dict):
                found.append(obj)
            else:  # a signed event, so its author wrote it: say so, use the others
                log.warning("case %s: ignored a malformed key grant", state.id)
        return found

    @staticmethod
    def _same_data(a: bytes, b: bytes) -> bool:
        try:
            return bool(msgpack.unpackb(a)["c"] == msgpack.unpackb(b)["c"])
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            return False

    def _current_personal(self, state: CaseState) -> bytes | None:
        base = state.personal_sealed
        if base is None:
            return None
        for g in reversed(self._grants(state)):
            blob = g.get("personal")
            if isinstance(blob, bytes) and self._same_data(blob, base):
                return blob if self._me in _members(blob) else base
        return base

    def _note_blob(self, state: CaseState, note_id: str, base: bytes) -> bytes:
        for g in reversed(self._grants(state)):
            blob = g.get("notes", {}).get(note_id)
            if (
                isinstance(blob, bytes)
                and self._same_data(blob, base)
                and self._me in _members(blob)
            ):
                return blob
        return base

    def _open(self, blob: bytes | None, case_id: str, part: str) -> bytes | None:
        key = self._kit.sealing_key
        if blob is None or key is None:
            return None
        try:
            return open_sealed(blob, self._me, key, aad=case_aad(case_id, part))
        except (AuthError, SyncError):
            return None

    def personal(self, state: CaseState) -> Personal | None:
        """The citizen's details, where this node is in the case's audience."""
        raw = self._open(self._current_personal(state), state.id, "personal")
        if raw is None:
            return None
        try:
            return Personal.from_msgpack(raw)
        except SyncError:
            return None

    def view(self, state: CaseState, *, detail: bool = True) -> dict[str, object]:
        """JSON-ready view; personal fields only where this node is in the audience."""
        opened = self.personal(state)
        personal = None if opened is None else _personal_json(opened)
        out: dict[str, object] = {
            "id": state.id,
            "category": None if state.category is None else str(state.category),
            "urgency": None if state.urgency is None else str(state.urgency),
            "status": None if state.status is None else str(state.status),
            "department": state.department,
            "site": state.site,
            "origin": state.origin,
            "created_at": None if state.created_hlc is None else _iso(state.created_hlc),
            "consent": list(state.consent),
            "readable": personal is not None,
            "personal": personal,
            "conflicts": conflict_views(state),
        }
        if personal is not None:
            out.update({k: personal.get(k) for k in ("name", "phone", "shelter")})
        if detail:
            notes = []
            for note in state.notes:
                text = self._open(
                    self._note_blob(state, note.note_id, note.sealed), state.id, "note"
                )
                notes.append(
                    {
                        "id": note.note_id,
                        "text": None if text is None else text.decode("utf-8", "replace"),
                        "sealed": text is None,
                        "by": note.op,
                        "node": note.author,
                        "at": _iso(note.hlc),
                    }
                )
            out["notes"] = notes
            out["referrals"] = [
                {
                    "id": r.referral_id,
                    "department": r.department,
                    "reason": r.reason,
                    "state": str(r.state),
                    "by": r.op,
                    "at": _iso(r.hlc),
                }
                for r in state.referrals
            ]
            out["calls"] = [
                {"id": c.call_id, "participants": list(c.participants), "duration_s": c.duration_s}
                for c in state.calls
            ]
            out["history"] = [
                {"at": _iso(h.hlc), "node": h.author, "op": h.op, "kind": int(h.kind)}
                for h in state.history
            ]
        return out


#: Vocabulary the CLI offers (kept here so the CLI and the console agree).
CATEGORIES = [str(c) for c in Category]
URGENCIES = [str(u) for u in Urgency]
STATUSES = [str(s) for s in Status]
