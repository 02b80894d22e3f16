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
from meshdesk.cases.export import OPEN_COLUMNS, row_of
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

    The first nine fields, in this order, are the record on the wire
    (:func:`encode_message`; an announcement's mapping goes as an array).

    Attributes:
        kind: What it says.
        pos: The event's position in the city HQ's store (publishing order); of two
            records of a case, the higher position carries the newer metadata.
        event_hash: The event's 32-byte hash; its hex is the message id.
        author, seq, hlc: The event's chain, position in it and time stamp.
        case_id: The case (None for an announcement).
        personal: The sealed personal block (consent to :data:`PREFECTURE` only).
        announcement: The announcement's open fields (``ANNOUNCEMENT``), else None.
        city: The city (its feed's name).
        fields: Open metadata, keyed as the export's JSON (``CASE``, ``ERASURE``;
            empty for an announcement); records of one case in one message share one
            mapping: read only.
        counts: ``events`` and ``referrals`` of the case (empty for an announcement).
    """

    kind: RecordKind
    pos: int
    event_hash: bytes
    author: str
    seq: int
    hlc: int
    case_id: str | None
    personal: bytes | None
    announcement: Mapping[str, Any] | None
    city: str
    fields: Mapping[str, str | None]
    counts: Mapping[str, int]

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
                    out.append(FeedRecord(RecordKind.ANNOUNCEMENT, pos, event.hash,
                                          event.author, event.seq, event.hlc, None, None,
                                          announcement, city, _NO_FIELDS, _NO_COUNTS))  # fmt: skip
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
        out.append(FeedRecord(erasure_kind if erasure else case_kind, pos, event.hash,
                              event.author, event.seq, event.hlc, case_id,
                              None if erasure else sealed, None, city, fields, counts))  # fmt: skip
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


def messages_of(records: Sequence[FeedRecord], most: int) -> list[tuple[str, bytes]]:
    """Records packed into feed messages, in order: ``(message id, payload)``.

    A message holds up to ``most`` records (at most :data:`MESSAGE_RECORDS`) of one
    city; a case whose fields differ from those it already has in the message starts
    a new one, and a message over :data:`MESSAGE_MAX` bytes is cut in halves until
    each fits. Its id is its last record's (the hash of the newest event in it):
    the cuts depend only on the records, so publishing the same stretch again
    repeats the ids.
    """
    most = max(1, min(most, MESSAGE_RECORDS))
    out: list[tuple[str, bytes]] = []
    start = 0
    cases: dict[str, Mapping[str, str | None]] = {}
    counts: dict[str, Mapping[str, int]] = {}
    city = records[0].city if records else ""
    for i, r in enumerate(records):
        case_id = r.case_id
        if i > start and (
            i - start >= most
            or r.city != city
            or (
                case_id in cases
                and (
                    (cases[case_id] is not r.fields and cases[case_id] != r.fields)
                    or (counts[case_id] is not r.counts and counts[case_id] != r.counts)
                )
            )
        ):
            _pack_into(out, records[start:i])
            start, city = i, r.city
            cases.clear()
            counts.clear()
        if case_id is not None and case_id not in cases:
            cases[case_id], counts[case_id] = r.fields, r.counts
    if start < len(records):
        _pack_into(out, records[start:])
    return out


def _pack_into(out: list[tuple[str, bytes]], records: Sequence[FeedRecord]) -> None:
    data = encode_message(records)
    if len(data) <= MESSAGE_MAX:
        out.append((records[-1].msg_id, data))
    elif len(records) == 1:
        raise ValueError(f"a feed record of {len(data)} bytes does not fit a message")
    else:
        half = len(records) // 2
        _pack_into(out, records[:half])
        _pack_into(out, records[half:])


def encode_message(records: Sequence[FeedRecord]) -> bytes:
    """One feed message of ``records`` (version 2 arrays; see the module's doc).

    Raises:
        ValueError: no records, too many, of more than one city, or a case whose
            records disagree on its fields (:func:`messages_of` never makes these).
    """
    if not 0 < len(records) <= MESSAGE_RECORDS:
        raise ValueError(f"a feed message holds 1 to {MESSAGE_RECORDS} records")
    city = records[0].city
    cases: dict[str, FeedRecord] = {}
    wire_cases: list[list[Any]] = []
    wire_records: list[tuple[Any, ...]] = []
    append = wire_records.append
    for r in records:
        if r.city != city:
            raise ValueError("a feed message holds records of one city")
        case_id = r.case_id
        if case_id is not None:
            first = cases.get(case_id)
            if first is None:
                cases[case_id] = r
                f, n = r.fields, r.counts
                wire_cases.append([case_id, [f.get(k) for k in _OPEN_KEYS],
                                   [n.get("events", 0), n.get("referrals", 0)]])  # fmt: skip
            elif (first.fields is not r.fields and first.fields != r.fields) or (
                first.counts is not r.counts and first.counts != r.counts
            ):
                raise ValueError(f"records of case {case_id} disagree on its fields")
        a = r.announcement
        if a is None:
            append(r[:9])  # the record's wire part (see FeedRecord)
        else:
            append((*r[:8], [a[k] for k in _ANNOUNCEMENT_KEYS]))
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
            out.append(FeedRecord(kind, pos, event_hash, author, seq, hlc, None, None,
                                  _announcement_of(announcement), city, _NO_FIELDS,
                                  _NO_COUNTS))  # fmt: skip
            continue
        if announcement is not None:
            raise _bad("an announcement on a case record")
        case = cases.get(case_id) if type(case_id) is str else None
        if case is None:
            raise _bad(f"case id {case_id!r} not among the message's cases")
        out.append(FeedRecord(kind, pos, event_hash, author, seq, hlc, case_id, personal, None,
                              city, case[0], case[1]))  # fmt: skip
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
