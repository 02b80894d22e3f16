"""Realistic, valid case events for benchmarks: msgpack bodies, per-author hash chains."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack

from meshdesk.identity import NodeId
from meshdesk.store import ZERO_HASH, StoredEvent

__all__ = ["event_hash", "generate_events"]

#: 2026-11-22 08:30 JST, when the generated desks open.
_START_MS = 1_795_303_800_000
_BODY_BYTES = 360

_DEPARTMENTS = ("welfare", "housing", "health", "childcare", "tax", "relief")
_STAFF = ("Sato", "Suzuki", "Takahashi", "Tanaka", "Ito", "Watanabe", "Yamamoto", "Nakamura")
_TAGS = ("urgent", "elderly", "disability", "follow-up", "interpreter", "documents", "shelter")
_STATUSES = ("waiting", "in-progress", "referred", "on-hold", "resolved")
_PHRASES = (
    "避難所での生活について相談。",
    "住宅の損壊状況を確認した。",
    "罹災証明書の申請方法を説明。",
    "持病の薬が不足している。",
    "子どもの預け先を探している。",
    "Visitor asks about temporary housing and the application deadline.",
    "Needs an interpreter for the next appointment.",
    "Documents copied; originals returned to the resident.",
    "Referred to the health desk for a medication check.",
    "Call back after the site inspection on Tuesday.",
)

# Event kinds as the case log would number them; 0 is a node fact (no case).
_NODE_FACT, _OPENED, _NOTE, _STATUS, _ASSIGNED, _CLOSED = 0, 1, 2, 3, 4, 5


def event_hash(
    author: str, seq: int, hlc: int, case_id: str | None, kind: int, body: bytes, prev: bytes
) -> bytes:
    """sha256 over an event's fields (msgpack-encoded in a fixed order)."""
    fields = msgpack.packb([author, seq, hlc, case_id, kind, body, prev], use_bin_type=True)
    return hashlib.sha256(fields).digest()


def _text(rng: random.Random, size: int) -> str:
    """About ``size`` bytes of UTF-8 case notes, Japanese and English mixed."""
    parts: list[str] = []
    length = 0
    while length < size:
        phrase = rng.choice(_PHRASES)
        parts.append(phrase)
        length += len(phrase.encode()) + 1
    return " ".join(parts).encode()[: max(size, 0)].decode("utf-8", "ignore")


def _body(rng: random.Random, kind: int, case_id: str | None, ms: int, dept: str) -> bytes:
    fields: dict[str, Any] = {
        "v": 1,
        "case": case_id,
        "dept": dept,
        "by": rng.choice(_STAFF),
        "at": ms,
    }
    if kind == _STATUS:
        fields["status"] = rng.choice(_STATUSES)
    elif kind == _ASSIGNED:
        fields["to"] = rng.choice(_STAFF)
    if kind in (_OPENED, _NOTE):
        fields["tags"] = rng.sample(_TAGS, rng.randint(0, 3))
    fields["text"] = ""
    target = min(max(int(rng.gauss(_BODY_BYTES, 60)), 160), 900)
    room = target - len(msgpack.packb(fields, use_bin_type=True)) - 2
    fields["text"] = _text(rng, room)
    return msgpack.packb(fields, use_bin_type=True)


def generate_events(count: int, authors: int, *, seed: int = 2026) -> list[StoredEvent]:
    """``count`` events of ``authors`` nodes, in the order their clocks made them.

    Deterministic for a given seed. Each author's events form a valid chain (seqs
    1, 2, 3, ... and ``prev_hash`` = the previous event's :func:`event_hash`); cases
    are opened, annotated, reassigned and closed across authors, and a few events are
    node facts without a case.
    """
    rng = random.Random(seed)
    ids = [NodeId.from_public_bytes(rng.randbytes(32)).text for _ in range(authors)]
    heads = {author: (0, ZERO_HASH) for author in ids}
    open_cases: list[tuple[str, str]] = []
    opened = 0
    ms, counter = _START_MS, 0
    events: list[StoredEvent] = []
    for index in range(count):
        author = ids[index] if index < authors else rng.choice(ids)
        step = rng.randint(0, 3000)
        ms, counter = ms + step, (counter + 1 if step == 0 else 0)
        hlc = (ms << 16) | counter
        case_id: str | None
        if rng.random() < 0.03:
            kind, case_id, dept = _NODE_FACT, None, "-"
        elif not open_cases or rng.random() < 0.08:
            opened += 1
            dept = rng.choice(_DEPARTMENTS)
            kind, case_id = _OPENED, f"2026-{dept[:3].upper()}-{opened:06d}"
            open_cases.append((case_id, dept))
        else:
            case_id, dept = rng.choice(open_cases[-50:])
            kind = rng.choices((_NOTE, _STATUS, _ASSIGNED, _CLOSED), (70, 15, 10, 5))[0]
            if kind == _CLOSED:
                open_cases.remove((case_id, dept))
        body = _body(rng, kind, case_id, ms, dept)
        seq, prev = heads[author]
        seq += 1
        digest = event_hash(author, seq, hlc, case_id, kind, body, prev)
        events.append(StoredEvent(author, seq, hlc, case_id, kind, body, prev, digest))
        heads[author] = (seq, digest)
    return events


# -- configuration and result ----------------------------------------------------------
