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
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgpack

from meshdesk._lifecycle import AsyncResource
from meshdesk.cases.chain import ChainWriter, new_chain_author
from meshdesk.cases.events import (
    CaseOpened,
    Exported,
    is_redacted,
    is_ref,
)
from meshdesk.cases.fold import CaseWriter, Draft, Event, fold
from meshdesk.cases.hlc import Clock, make_hlc, to_datetime
from meshdesk.cases.listing import CaseLister, conflict_views
from meshdesk.cases.model import Category, Personal, Status, Urgency
from meshdesk.cases.sealing import audience, grant, open_sealed, recipients_of, seal
from meshdesk.cases.search import SearchKey
from meshdesk.cases.state import CaseState
from meshdesk.cases.steward import AUTO_OP, Steward
from meshdesk.config import RecordSettings
from meshdesk.errors import AuthError, MeshdeskError, StoreError, SyncError, UsageError
from meshdesk.identity import NodeInfo, NodeKit
from meshdesk.store import Store, StoredEvent

__all__ = ["CaseBook", "case_aad"]

Directory = Callable[[], Awaitable[list[NodeInfo]]]

log = logging.getLogger(__name__)


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
        #: Erasure, retention, exports, the audit trail (:mod:`.steward`).
        self.steward = Steward(
            self,
            store,
            me=self._me,
            role=kit.info.role,
            directory=directory,
            wall_ms=wall_ms,
            records=records or RecordSettings(),
        )

    async def __aenter__(self) -> CaseBook:
        await self.steward.start()
        self._search = asyncio.create_task(self.listing.run(), name="search terms")
        return self

    async def aclose(self) -> None:
        await self.steward.aclose()
        task, self._search = self._search, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
        await self._sign_and_store([(d.hlc, d.case_id, d.kind, d.body, d.payloads) for d in drafts])

    async def record(self, entries: Sequence[tuple[int, bytes]]) -> list[StoredEvent]:
        """Append events that belong to no case (``(kind, body)``: announcements,
        messages, receipts — :mod:`meshdesk.notices`) to this node's chain: stamped,
        signed and durably stored like a case edit, then handed to sync."""
        await self._writer()
        wall = self._wall_ms()
        return await self._sign_and_store(
            [(self._clock.now(wall), None, kind, body, ()) for kind, body in entries]
        )

    async def _sign_and_store(
        self, items: list[tuple[int, str | None, int, bytes, tuple[bytes, ...]]]
    ) -> list[StoredEvent]:
        chain = await self._writer()
        before = chain.head
        for hlc, case_id, kind, body, payloads in items:
            chain.append(hlc=hlc, case_id=case_id, kind=kind, body=body, payloads=payloads)
        events, checkpoint = chain.commit()
        try:
            await self._store.append_run(events, checkpoint, received_at=self._wall_ms())
        except MeshdeskError:
            chain.rollback(before)
            raise
        if self.on_commit is not None:
            await self.on_commit(events)
        self.steward.committed(events)
        return events

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

    async def edit(
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
        await self.steward.refuse_erased(case_id)
        sealed = await self._seal(
            case_id, "note", text.encode(), state.consent, origin=state.origin
        )
        return await self.edit(
            case_id, op, lambda w, s: w.add_note(s, sealed, wall_ms=self._wall_ms())
        )

    async def refer(self, case_id: str, *, op: str, department: str, reason: str = "") -> CaseState:
        return await self.edit(
            case_id, op, lambda w, s: w.refer(s, department, reason, wall_ms=self._wall_ms())
        )

    async def set_status(self, case_id: str, *, op: str, status: str) -> CaseState:
        return await self.edit(
            case_id, op, lambda w, s: w.set_status(s, status, wall_ms=self._wall_ms())
        )

    async def set_field(self, case_id: str, *, op: str, field: str, value: str) -> CaseState:
        return await self.edit(
            case_id, op, lambda w, s: w.set_field(s, field, value, wall_ms=self._wall_ms())
        )

    async def resolve_conflict(self, case_id: str, *, op: str, field: str, value: str) -> CaseState:
        return await self.edit(
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
        return await self.edit(
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
        state = await self.edit(
            case_id, op, lambda w, s: w.add_consent(s, department, wall_ms=self._wall_ms())
        )
        grants = await self._grants_for(state)
        if grants is not None:
            state = await self.edit(
                case_id, op, lambda w, s: w.grant_keys(s, grants, wall_ms=self._wall_ms())
            )
        return state

    async def withdraw_consent(self, case_id: str, *, op: str, department: str) -> CaseState:
        """Take a department out of the consent: notes and personal blocks written
        from now on are sealed without it (what it read before stays read)."""
        return await self.edit(
            case_id, op, lambda w, s: w.withdraw_consent(s, department, wall_ms=self._wall_ms())
        )

    async def auto_grant(self, case_id: str) -> bool:
        """A consent change arrived: if this node is in the audience and a member
        lacks the key, grant it now (KEY_GRANT), so the new department can read the
        case without anyone acting. Returns whether a grant was written."""
        if self.steward.is_erased(case_id):
            return False
        state = await self.state(case_id)
        grants = await self._grants_for(state)
        if grants is None:
            return False
        log.info("case %s: granted the data key to its new audience", case_id)
        await self.edit(
            case_id, AUTO_OP, lambda w, s: w.grant_keys(s, grants, wall_ms=self._wall_ms())
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

    # -- node facts ----------------------------------------------------------------

    async def record_fact(self, payload: Exported) -> None:
        """A node fact (no case: an export): one signed event on this node's chain."""
        await self.record([(payload.KIND, payload.encode())])

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
