"""What leaves a city for the prefecture hub: feed records, and their codec.

A city HQ turns each stored event into at most one :class:`FeedRecord`, which carries
the event's hash. Records travel in feed messages of up to a thousand records
(:func:`messages_of`; one JetStream write, one disk sync, per message) whose
``Nats-Msg-Id`` is the hash (hex) of the newest event in it: published again after
a cut or a restart, the same stretch is the same message and JetStream drops it; a
stretch cut differently overlaps, and the hub's projection, keyed on each record's
event hash, drops the records it already holds.

What a record holds (issue 17, point 2):

- ``CASE``: every event of a case carries the case's open metadata as the HQ's case
  index holds it after the event was stored: the export field mapping
  (:func:`meshdesk.cases.export.row_of` over the open :data:`~meshdesk.cases.export.COLUMNS`:
  id, times, site, category, urgency, status, department, consent, referrals) and
  counts (events, referrals). Never a personal field in plaintext.
- The case's sealed personal block, *still sealed*, only when the citizen's consent
  lists the prefecture: the consent label :data:`PREFECTURE`, a "department" the
  citizen agrees to share with like any other (``meshdesk case consent ID
  --department prefecture``). Checked here again, whatever the caller passed.
- ``ERASURE``: an erasure event (kind 30) always follows; the hub drops the case's
  sealed block and never takes one for it again. The open metadata stays, as on the
  city's nodes.
- ``ANNOUNCEMENT``: HQ announcements (plain text for everyone addressed).

Other events (operator messages, receipts, node facts) stay in the city.

This module is pure: :func:`records_of` gets the events with their positions and what
the case index says of their cases; :mod:`meshdesk.hub.publisher` reads the store.

The wire (:func:`encode_message`, version 2) is msgpack arrays, positional: a message
is ``[2, city, cases, records]``. ``cases`` holds each case of the message once —
``[case id, open fields in OPEN_COLUMNS order, [events, referrals]]`` — because every
record of a case in one batch carries the same metadata (the index's, as published);
a record is ``[kind, position, hash, author, seq, hlc, case id, sealed block,
announcement]``, its case's fields found in ``cases``. The hub decodes a whole
message with one C call and checks each value's type and range in one pass
(:func:`decode_message`): the projection is bound by that check, so it is kept flat.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgpack

from meshdesk.cases.events import SEALED_MAX, EventKind
from meshdesk.cases.export import COLUMNS, row_of
from meshdesk.cases.ids import is_valid_id
from meshdesk.errors import SyncError, WireError
from meshdesk.notices.events import Announcement, NoticeKind, decode_notice
from meshdesk.store.records import CaseSummary, StoredEvent

__all__ = [
    "FEED_VERSION",
    "MESSAGE_MAX",
    "MESSAGE_RECORDS",
    "OPEN_COLUMNS",
    "PREFECTURE",
    "RECORD_MAX",
    "FeedRecord",
    "RecordKind",
    "decode_message",
    "encode_message",
    "messages_of",
    "records_of",
    "shares_with_prefecture",
]

#: The consent label that lets a case's sealed personal block leave the city.
PREFECTURE = "prefecture"
FEED_VERSION = 2
#: The export's open columns: what the hub may see of a case.
OPEN_COLUMNS = tuple(c for c in COLUMNS if not c.personal)
_OPEN_KEYS = tuple(c.key for c in OPEN_COLUMNS)
_ANNOUNCEMENT_KEYS = (
    "notice_id", "severity", "title_ja", "title_en", "body_ja", "body_en", "sites", "exercise"
)  # fmt: skip
#: Bytes of one record at most: a sealed block plus metadata, or an announcement.
RECORD_MAX = SEALED_MAX + 64 * 1024
#: Bytes and records of one feed message (NATS refuses payloads over 1 MiB).
MESSAGE_MAX = 960 * 1024
MESSAGE_RECORDS = 2000
_TEXT_MAX = 16 * 1024
_SITES_MAX = 64
_UNPACK_LIMITS: dict[str, Any] = {
    "max_str_len": _TEXT_MAX,
    "max_bin_len": SEALED_MAX,
    "max_array_len": MESSAGE_RECORDS,
    "max_map_len": 0,  # the wire has no maps
    "max_ext_len": 0,
}
_INT64 = (1 << 63) - 1
#: Bytes a record's fixed parts take on the wire at most (kinds, integers, hash,
#: array headers), and each text or byte string's header; for cutting messages.
_RECORD_FIXED = 96
_ITEM = 5


class RecordKind(enum.IntEnum):
    """What a feed record says. Values are on the wire: never reuse one."""

    CASE = 1
    ERASURE = 2
    ANNOUNCEMENT = 3


_KINDS = {int(k): k for k in RecordKind}
_NO_FIELDS: Mapping[str, str | None] = {}
_NO_COUNTS: Mapping[str, int] = {}


class FeedRecord(NamedTuple):
    """One event of a city as the prefecture may see it.

    Attributes:
        kind: What it says.
        city: The city (its feed's name).
        pos: The event's position in the city HQ's store (publishing order); of two
            records of a case, the higher position carries the newer metadata.
        event_hash: The event's 32-byte hash; its hex is the message id.
        author, seq, hlc: The event's chain, position in it and time stamp.
        case_id: The case (None for an announcement).
        fields: Open metadata, keyed as the export's JSON (``CASE``, ``ERASURE``);
            records of one case in one message share one mapping: read only.
        counts: ``events`` and ``referrals`` of the case.
        personal: The sealed personal block (consent to :data:`PREFECTURE` only).
        announcement: The announcement's open fields (``ANNOUNCEMENT``).
    """

    kind: RecordKind
    city: str
    pos: int
    event_hash: bytes
    author: str
    seq: int
    hlc: int
    case_id: str | None = None
    fields: Mapping[str, str | None] = _NO_FIELDS
    counts: Mapping[str, int] = _NO_COUNTS
    personal: bytes | None = None
    announcement: Mapping[str, Any] | None = None

    @property
    def msg_id(self) -> str:
        """The JetStream message id (``Nats-Msg-Id``): the event hash in hex."""
        return self.event_hash.hex()


def shares_with_prefecture(summary: CaseSummary) -> bool:
    """Whether the citizen consented to share the case with the prefecture."""
    return PREFECTURE in summary.consent


def records_of(
    city: str,
    batch: Sequence[tuple[int, StoredEvent]],
    summaries: Mapping[str, CaseSummary],
    personal: Mapping[str, bytes],
    erased: frozenset[str] | set[str] = frozenset(),
) -> list[FeedRecord]:
    """The feed records of stored events, in the order given.

    Args:
        city: The city's feed name.
        batch: ``(position, event)`` pairs.
        summaries: The case index row of every case the batch touches.
        personal: Sealed personal blocks by case id; used only for a case whose
            consent lists :data:`PREFECTURE` and that is not erased.
        erased: Cases erased on the HQ: nothing sealed of them leaves.

    Raises:
        KeyError: a case event whose case has no summary (a caller's bug).
    """
    out: list[FeedRecord] = []
    # A case's fields, counts and shareable sealed block: once per batch.
    known: dict[str, tuple[Mapping[str, str | None], Mapping[str, int], bytes | None]] = {}
    case_kind, erasure_kind = RecordKind.CASE, RecordKind.ERASURE
    for pos, event in batch:
        case_id = event.case_id
        if case_id is None:
            if event.kind == NoticeKind.ANNOUNCEMENT:
                announcement = _announcement(event)
                if announcement is not None:
                    out.append(FeedRecord(RecordKind.ANNOUNCEMENT, city, pos, event.hash,
                                          event.author, event.seq, event.hlc,
                                          announcement=announcement))  # fmt: skip
            continue
        case = known.get(case_id)
        if case is None:
            summary = summaries[case_id]
            sealed = None
            if case_id not in erased and shares_with_prefecture(summary):
                sealed = personal.get(case_id)
            tally = {"events": summary.events, "referrals": len(summary.referrals)}
            case = known[case_id] = (row_of(summary, None, OPEN_COLUMNS, "en"), tally, sealed)
        fields, counts, sealed = case
        erasure = event.kind == EventKind.CASE_ERASED
        out.append(FeedRecord(erasure_kind if erasure else case_kind, city, pos, event.hash,
                              event.author, event.seq, event.hlc, case_id, fields, counts,
                              None if erasure else sealed))  # fmt: skip
    return out


def _announcement(event: StoredEvent) -> dict[str, Any] | None:
    try:
        payload = decode_notice(event.kind, event.body)
    except SyncError:
        return None  # a body the HQ could not read itself: nothing to tell the hub
    assert isinstance(payload, Announcement)
    return {
        "notice_id": payload.notice_id,
        "severity": str(payload.severity),
        "title_ja": payload.title_ja,
        "title_en": payload.title_en,
        "body_ja": payload.body_ja,
        "body_en": payload.body_en,
        "sites": list(payload.sites),
        "exercise": payload.exercise,
    }


# -- the wire ---------------------------------------------------------------------------


def _size(record: FeedRecord, new_case: bool) -> int:
    """Bytes the record adds to a message at most (its case's fields when ``new_case``)."""
    size = _RECORD_FIXED + 4 * len(record.author) + len(record.personal or b"")
    if new_case:
        size += _RECORD_FIXED + sum(_ITEM + 4 * len(v or "") for v in record.fields.values())
    if record.announcement is not None:
        size += sum(_ITEM + 4 * len(str(v)) for v in record.announcement.values())
    return size


def messages_of(records: Sequence[FeedRecord], most: int) -> list[tuple[str, bytes]]:
    """Records packed into feed messages, in order: ``(message id, payload)``.

    A message holds up to ``most`` records (at most :data:`MESSAGE_RECORDS`) of one
    city, and at most :data:`MESSAGE_MAX` bytes (counted high: text as 4 bytes a
    character); a case whose fields differ from those it already has in the message
    starts a new one. Its id is its last record's (the hash of the newest event in
    it), so publishing the same stretch again repeats the id.
    """
    most = max(1, min(most, MESSAGE_RECORDS))
    out: list[tuple[str, bytes]] = []
    start, size = 0, 0
    cases: dict[str, tuple[Mapping[str, str | None], Mapping[str, int]]] = {}
    for i, record in enumerate(records):
        case = None if record.case_id is None else cases.get(record.case_id)
        differs = case is not None and (
            (case[0] is not record.fields and case[0] != record.fields)
            or (case[1] is not record.counts and case[1] != record.counts)
        )
        grows = _size(record, case is None and record.case_id is not None)
        if i > start and (
            i - start >= most
            or size + grows > MESSAGE_MAX
            or record.city != records[start].city
            or differs
        ):
            out.append((records[i - 1].msg_id, encode_message(records[start:i])))
            start, size, cases = i, 0, {}
            grows = _size(record, record.case_id is not None)
        if record.case_id is not None:
            cases.setdefault(record.case_id, (record.fields, record.counts))
        size += grows
    if start < len(records):
        out.append((records[-1].msg_id, encode_message(records[start:])))
    return out


def encode_message(records: Sequence[FeedRecord]) -> bytes:
    """One feed message of ``records`` (version 2 arrays; see the module's doc).

    Raises:
        ValueError: no records, too many, of more than one city, or a case whose
            records disagree on its fields (:func:`messages_of` never makes these).
    """
    if not 0 < len(records) <= MESSAGE_RECORDS:
        raise ValueError(f"a feed message holds 1 to {MESSAGE_RECORDS} records")
    city = records[0].city
    cases: dict[str, tuple[Mapping[str, str | None], Mapping[str, int]]] = {}
    wire_cases: list[list[Any]] = []
    wire_records: list[list[Any]] = []
    for r in records:
        if r.city != city:
            raise ValueError("a feed message holds records of one city")
        case_id = r.case_id
        if case_id is not None:
            case = cases.get(case_id)
            if case is None:
                cases[case_id] = (r.fields, r.counts)
                counts = [r.counts.get("events", 0), r.counts.get("referrals", 0)]
                wire_cases.append([case_id, [r.fields.get(k) for k in _OPEN_KEYS], counts])
            elif case[0] != r.fields or case[1] != r.counts:
                raise ValueError(f"records of case {case_id} disagree on its fields")
        a = r.announcement
        notice = None if a is None else [a[k] for k in _ANNOUNCEMENT_KEYS]
        wire_records.append([int(r.kind), r.pos, r.event_hash, r.author, r.seq, r.hlc, case_id,
                             r.personal, notice])  # fmt: skip
    data: bytes = msgpack.packb([FEED_VERSION, city, wire_cases, wire_records], use_bin_type=True)
    return data


def _bad(what: str) -> WireError:
    return WireError(f"feed message: {what}")


def _text_ok(value: object) -> bool:
    return type(value) is str and "\x00" not in value


def _int_ok(value: object) -> bool:
    return type(value) is int and 0 <= value <= _INT64


def decode_message(data: bytes) -> list[FeedRecord]:
    """The records of one feed message, each value's type and range checked.

    Raises:
        WireError: too large or empty, not msgpack, an unknown version, or any record
            or case in it malformed (then none is applied).
    """
    if not isinstance(data, bytes) or not 0 < len(data) <= MESSAGE_MAX:
        raise _bad(f"a message holds 1 to {MESSAGE_MAX} bytes")
    try:
        obj: Any = msgpack.unpackb(data, raw=False, **_UNPACK_LIMITS)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _bad(f"not valid msgpack: {exc}") from exc
    if type(obj) is not list or len(obj) != 4:
        raise _bad("not a feed message")
    version, city, wire_cases, wire_records = obj
    if version != FEED_VERSION or type(version) is not int:
        raise _bad(f"unknown version {version!r}")
    if not _text_ok(city) or not 0 < len(city) <= 64:
        raise _bad("city must be 1 to 64 characters")
    if type(wire_cases) is not list or type(wire_records) is not list or not wire_records:
        raise _bad("no records")
    cases = _cases(wire_cases)
    out: list[FeedRecord] = []
    case_kind, announcement_kind = RecordKind.CASE, RecordKind.ANNOUNCEMENT
    for entry in wire_records:
        if type(entry) is not list or len(entry) != 9:
            raise _bad("a record must be an array of 9")
        k, pos, event_hash, author, seq, hlc, case_id, personal, announcement = entry
        kind = _KINDS.get(k) if type(k) is int else None
        if kind is None:
            raise _bad(f"unknown kind {k!r}")
        if not (_int_ok(pos) and _int_ok(seq) and _int_ok(hlc)):
            raise _bad("position, seq and hlc must be integers ≥ 0")
        if type(event_hash) is not bytes or len(event_hash) != 32:
            raise _bad("hash must be 32 bytes")
        if not _text_ok(author) or not 0 < len(author) <= 256:
            raise _bad("author must be text")
        if personal is not None and (type(personal) is not bytes or kind is not case_kind):
            raise _bad("personal must be sealed bytes, on a case record only")
        if kind is announcement_kind:
            if case_id is not None:
                raise _bad("an announcement with a case id")
            out.append(FeedRecord(kind, city, pos, event_hash, author, seq, hlc,
                                  announcement=_announcement_of(announcement)))  # fmt: skip
            continue
        if announcement is not None:
            raise _bad("an announcement on a case record")
        case = cases.get(case_id) if type(case_id) is str else None
        if case is None:
            raise _bad(f"case id {case_id!r} not among the message's cases")
        out.append(FeedRecord(kind, city, pos, event_hash, author, seq, hlc, case_id, case[0],
                              case[1], personal))  # fmt: skip
    return out


def _cases(wire_cases: list[Any]) -> dict[str, tuple[dict[str, str | None], dict[str, int]]]:
    cases: dict[str, tuple[dict[str, str | None], dict[str, int]]] = {}
    n = len(_OPEN_KEYS)
    for entry in wire_cases:
        if type(entry) is not list or len(entry) != 3:
            raise _bad("a case must be an array of 3")
        case_id, fields, counts = entry
        if not is_valid_id(case_id) or case_id in cases:
            raise _bad(f"malformed or repeated case id {case_id!r}")
        if type(fields) is not list or len(fields) != n:
            raise _bad(f"a case's fields must be an array of {n}")
        for value in fields:
            if value is not None and not _text_ok(value):
                raise _bad("a field must be text or nil")
        if type(counts) is not list or len(counts) != 2 or not all(map(_int_ok, counts)):
            raise _bad("a case's counts must be 2 integers ≥ 0")
        cases[case_id] = (dict(zip(_OPEN_KEYS, fields, strict=True)),
                          {"events": counts[0], "referrals": counts[1]})  # fmt: skip
    return cases


def _announcement_of(value: object) -> dict[str, Any]:
    if type(value) is not list or len(value) != len(_ANNOUNCEMENT_KEYS):
        raise _bad(f"an announcement must be an array of {len(_ANNOUNCEMENT_KEYS)}")
    a = dict(zip(_ANNOUNCEMENT_KEYS, value, strict=True))
    if not (_text_ok(a["notice_id"]) and _text_ok(a["severity"])):
        raise _bad("an announcement's id and severity must be text")
    for key in ("title_ja", "title_en", "body_ja", "body_en"):
        if a[key] is not None and not _text_ok(a[key]):
            raise _bad(f"an announcement's {key} must be text")
    sites = a["sites"]
    if type(sites) is not list or len(sites) > _SITES_MAX or not all(map(_text_ok, sites)):
        raise _bad("an announcement's sites must be text")
    if type(a["exercise"]) is not bool:
        raise _bad("an announcement's exercise must be true or false")
    return a
