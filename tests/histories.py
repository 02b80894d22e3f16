"""Case histories the way a mesh makes them, drawn by Hypothesis (shared by tests).

Three replicas edit a case with the real :class:`CaseWriter` (so ``seen`` lists are
what nodes would write) while they exchange per-author prefixes of their chains, so
each replica sees a different subset at every step. Every choice (edits, values,
which replica syncs with which, orderings) is drawn by Hypothesis. pytest puts this
folder on ``sys.path`` (see tests/waits.py), so tests ``from histories import ...``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from meshdesk.cases.events import CaseOpened, EventRef
from meshdesk.cases.fold import CaseWriter, Draft, Event, fold
from meshdesk.cases.hlc import Clock, make_hlc
from meshdesk.cases.model import Category, Status, Urgency
from meshdesk.cases.state import CaseState
from meshdesk.errors import UsageError
from meshdesk.identity.nodeid import NodeId

__all__ = ["AUTHORS", "PROPERTY", "Scenario", "Sim", "scenarios"]

AUTHORS = [NodeId.from_public_bytes(bytes([i]) * 32).text for i in (1, 2, 3)]
OPS = ["佐藤", "田中", "Nguyen"]
DEPARTMENTS = ["福祉課", "税務課", "長寿支援課"]
NOW = 1_700_000_000_000
#: Operator actions, scalar edits weighted up so that concurrent edits collide.
ACTIONS = [
    *("field", "field", "field", "status", "status", "note", "refer"),
    *("referral_state", "consent", "call", "personal", "grant"),
]
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Sim:
    """One replica: its writer, its chain, the events it holds."""

    def __init__(self, index: int, skew_ms: int, authors: Sequence[str] = AUTHORS) -> None:
        self.author = authors[index]
        self.authors = authors
        self.writer = CaseWriter(OPS[index], Clock(), random.Random(index))
        self.skew_ms = skew_ms
        self.seq = 0
        self.events: dict[EventRef, Event] = {}

    def write(self, draft: Draft) -> None:
        self.seq += 1
        event = draft.event(self.author, self.seq)
        self.events[event.ref] = event

    def receive_prefixes(self, source: Sim, cuts: Sequence[int], wall_ms: int) -> None:
        """Take, per author, the first ``cuts[i]`` events ``source`` holds (a sync run)."""
        for author, cut in zip(self.authors, cuts, strict=True):
            chain = sorted((e for e in source.events.values() if e.author == author), key=_seq)
            for event in chain[:cut]:
                self.writer.clock.observe(event.hlc, wall_ms + self.skew_ms)
                self.events[event.ref] = event


def _seq(event: Event) -> int:
    return event.seq


def _edit(draw: Any, sim: Sim, state: CaseState, wall_ms: int) -> Draft:
    """One operator action, with arguments drawn from the current state."""
    w = sim.writer
    if state.conflicts and draw(st.booleans()):
        conflict = draw(st.sampled_from(state.conflicts))
        value = draw(st.sampled_from(conflict.candidates)).value
        return w.resolve_conflict(state, conflict.field, value, wall_ms=wall_ms)
    action = draw(st.sampled_from(ACTIONS))
    if action == "field":
        field = draw(st.sampled_from(["category", "urgency", "department"]))
        values: list[Any] = {
            "category": list(Category),
            "urgency": list(Urgency),
            "department": [*DEPARTMENTS, None],
        }[field]
        return w.set_field(state, field, draw(st.sampled_from(values)), wall_ms=wall_ms)
    if action == "status":
        return w.set_status(state, draw(st.sampled_from(list(Status))), wall_ms=wall_ms)
    if action == "refer":
        department = draw(st.sampled_from(DEPARTMENTS))
        return w.refer(state, department, "相談内容", wall_ms=wall_ms)
    if action == "referral_state" and state.referrals:
        referral = draw(st.sampled_from(state.referrals))
        new = draw(st.sampled_from(["requested", "accepted", "declined", "done"]))
        return w.set_referral_state(state, referral.referral_id, new, wall_ms=wall_ms)
    if action == "consent":
        return w.add_consent(state, draw(st.sampled_from(DEPARTMENTS)), wall_ms=wall_ms)
    if action == "call":
        participants = draw(st.lists(st.sampled_from(AUTHORS), min_size=1, unique=True))
        started = make_hlc(wall_ms - 1000)
        return w.log_call(
            state,
            participants=participants,
            started_hlc=started,
            ended_hlc=started + 5,
            duration_s=1,
            wall_ms=wall_ms,
        )
    if action == "personal":
        return w.set_personal(state, draw(st.binary(min_size=1, max_size=3)), wall_ms=wall_ms)
    if action == "grant":
        return w.grant_keys(state, b"grant", wall_ms=wall_ms)
    return w.add_note(state, draw(st.binary(min_size=1, max_size=3)), wall_ms=wall_ms)


@dataclass(frozen=True)
class Scenario:
    """Event sets (one per replica, and their union), each with a shuffled copy."""

    sets: tuple[tuple[Event, ...], ...]
    reordered: tuple[tuple[Event, ...], ...]


@st.composite
def scenarios(draw: Any, max_steps: int = 40, authors: Sequence[str] = AUTHORS) -> Scenario:
    """A case's history; ``authors`` name the three replicas' chains (``NODE-ID`` or
    ``NODE-ID/EPOCH``: several cases in one store need chains of their own)."""
    sims = [Sim(i, draw(st.integers(-5_000, 5_000)), authors) for i in range(len(authors))]
    wall = NOW
    sims[0].write(
        sims[0].writer.open_case(
            wall_ms=wall,
            site="横手南小学校",
            category=draw(st.sampled_from(list(Category))),
            urgency=draw(st.sampled_from(list(Urgency))),
        )
    )
    for sim in sims[1:]:
        if draw(st.integers(0, 3)):  # mostly, but not always, the opening spreads first
            sim.receive_prefixes(sims[0], [1, 0, 0], wall)
    for _ in range(draw(st.integers(3, max_steps))):
        wall += draw(st.integers(0, 40))
        sim = draw(st.sampled_from(sims))
        if draw(st.integers(0, 2)) == 0:
            source = draw(st.sampled_from(sims))
            cuts = [draw(st.sampled_from([0, 0, 1, 2, 3, 1000])) for _ in AUTHORS]
            sim.receive_prefixes(source, cuts, wall)
        elif sim.events:
            # A refused edit (a no-op, an invalid transition) changes nothing.
            with contextlib.suppress(UsageError):
                sim.write(_edit(draw, sim, fold(sim.events.values()), wall + sim.skew_ms))
    union: dict[EventRef, Event] = {}
    for sim in sims:
        union.update(sim.events)
    sets = [tuple(s.events.values()) for s in sims if s.events] + [tuple(union.values())]
    # The same history before its CASE_OPENED arrived: an incomplete case.
    unopened = tuple(e for e in union.values() if not isinstance(e.payload, CaseOpened))
    sets += [unopened] if unopened else []
    reordered = []
    for events in sets:
        shuffled = draw(st.permutations(events))
        duplicates = draw(st.lists(st.sampled_from(events), max_size=5))
        reordered.append((*shuffled, *duplicates))
    return Scenario(tuple(sets), tuple(reordered))
