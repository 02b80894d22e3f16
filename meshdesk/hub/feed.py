"""What leaves a city for the prefecture hub: feed records, and their codec.

A city HQ turns each stored event into at most one :class:`FeedRecord`, which carries
the event's hash. Records travel in feed messages of up to a few hundred records
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
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    "decode_record",
    "encode_record",
    "messages_of",
    "records_of",
    "shares_with_prefecture",
]

#: The consent label that lets a case's sealed personal block leave the city.
PREFECTURE = "prefecture"
FEED_VERSION = 1
#: The export's open columns: what the hub may see of a case.
OPEN_COLUMNS = tuple(c for c in COLUMNS if not c.personal)
_OPEN_KEYS = frozenset(c.key for c in OPEN_COLUMNS)
_COUNT_KEYS = frozenset({"events", "referrals"})
_ANNOUNCEMENT_KEYS = frozenset(
    {"notice_id", "severity", "title_ja", "title_en", "body_ja", "body_en", "sites", "exercise"}
)
#: Bytes of one encoded record: a sealed block plus metadata, or an announcement.
RECORD_MAX = SEALED_MAX + 64 * 1024
#: Bytes and records of one feed message (NATS refuses payloads over 1 MiB).
MESSAGE_MAX = 960 * 1024
MESSAGE_RECORDS = 2000
_TEXT_MAX = 16 * 1024
_UNPACK_LIMITS: dict[str, Any] = {
    "max_str_len": _TEXT_MAX,
    "max_bin_len": SEALED_MAX,
    "max_array_len": 64,
    "max_map_len": 32,
    "max_ext_len": 0,
}
_INT64 = (1 << 63) - 1
_KEYS = frozenset("vkcpahstifnxm")


class RecordKind(enum.IntEnum):
    """What a feed record says. Values are on the wire: never reuse one."""

    CASE = 1
    ERASURE = 2
    ANNOUNCEMENT = 3


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One event of a city as the prefecture may see it.

    Attributes:
        kind: What it says.
        city: The city (its feed's name).
        pos: The event's position in the city HQ's store (publishing order); of two
            records of a case, the higher position carries the newer metadata.
        event_hash: The event's 32-byte hash; its hex is the message id.
        author, seq, hlc: The event's chain, position in it and time stamp.
        case_id: The case (None for an announcement).
        fields: Open metadata, keyed as the export's JSON (``CASE``, ``ERASURE``).
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
    fields: Mapping[str, str | None] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    personal: bytes | None = None
    announcement: Mapping[str, Any] | None = None

    @property
    def msg_id(self) -> str:
        """The JetStream message id (``Nats-Msg-Id``): the event hash in hex."""
        return self.event_hash.hex()


def shares_with_prefecture(summary: CaseSummary) -> bool:
    """Whether the citizen consented to share the case with the prefecture."""
    return PREFECTURE in summary.consent


def _case_fields(summary: CaseSummary) -> dict[str, str | None]:
    return row_of(summary, None, OPEN_COLUMNS, "en")


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
    fields: dict[str, dict[str, str | None]] = {}  # a case's fields, once per batch
    for pos, event in batch:

        def record(
            kind: RecordKind, pos: int = pos, event: StoredEvent = event, **parts: Any
        ) -> FeedRecord:
            return FeedRecord(kind, city, pos, event.hash, event.author, event.seq,
                              event.hlc, **parts)  # fmt: skip

        if event.case_id is None:
            if event.kind == NoticeKind.ANNOUNCEMENT:
                announcement = _announcement(event)
                if announcement is not None:
                    out.append(record(RecordKind.ANNOUNCEMENT, announcement=announcement))
            continue
        summary = summaries[event.case_id]
        erasure = event.kind == EventKind.CASE_ERASED
        sealed = None
        if not erasure and event.case_id not in erased and shares_with_prefecture(summary):
            sealed = personal.get(event.case_id)
        out.append(
            record(
                RecordKind.ERASURE if erasure else RecordKind.CASE,
                case_id=event.case_id,
                fields=fields.get(event.case_id)
                or fields.setdefault(event.case_id, _case_fields(summary)),
                counts={"events": summary.events, "referrals": len(summary.referrals)},
                personal=sealed,
            )
        )
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


def messages_of(records: Sequence[FeedRecord], most: int) -> list[tuple[str, bytes]]:
    """Records packed into feed messages, in order: ``(message id, payload)``.

    A message holds up to ``most`` records (at most :data:`MESSAGE_RECORDS`) and
    :data:`MESSAGE_MAX` bytes; its id is its last record's (the hash of the newest
    event in it), so publishing the same stretch again repeats the id.
    """
    out: list[tuple[str, bytes]] = []
    parts: list[bytes] = []
    size = 0
    most = max(1, min(most, MESSAGE_RECORDS))
    encoded = [encode_record(r) for r in records]
    for i, (record, data) in enumerate(zip(records, encoded, strict=True)):
        parts.append(data)
        size += len(data)
        last = i + 1 == len(records)
        if last or len(parts) >= most or size + len(encoded[i + 1]) > MESSAGE_MAX:
            out.append((record.msg_id, b"".join(parts)))
            parts, size = [], 0
    return out


# -- codec -----------------------------------------------------------------------------


def encode_record(record: FeedRecord) -> bytes:
    """A record as msgpack (a map with short keys, versioned)."""
    return msgpack.packb(
        {
            "v": FEED_VERSION,
            "k": int(record.kind),
            "c": record.city,
            "p": record.pos,
            "h": record.event_hash,
            "a": record.author,
            "s": record.seq,
            "t": record.hlc,
            "i": record.case_id,
            "f": dict(record.fields),
            "n": dict(record.counts),
            "x": record.personal,
            "m": None if record.announcement is None else dict(record.announcement),
        },
        use_bin_type=True,
    )


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise WireError(f"feed record: {what}")


def _int(value: object, what: str) -> int:
    _need(type(value) is int and 0 <= value <= _INT64, f"{what} must be an integer ≥ 0")
    assert isinstance(value, int)
    return value


def _text(value: object, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    _need(isinstance(value, str) and "\x00" not in value, f"{what} must be text")
    assert isinstance(value, str)
    return value


def decode_record(data: bytes) -> FeedRecord:
    """Decode and check a record from the network.

    Raises:
        WireError: too large, not msgpack, an unknown version or kind, or a field of
            the wrong type; the record is then not applied.
    """
    _need(isinstance(data, bytes) and len(data) <= RECORD_MAX, f"more than {RECORD_MAX} bytes")
    try:
        obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"feed record: not valid msgpack: {exc}") from exc
    return _record(obj)


def decode_message(data: bytes) -> list[FeedRecord]:
    """The records of one feed message, each checked as :func:`decode_record` does.

    Raises:
        WireError: too large, empty, or any record in it is refused (then none is
            applied).
    """
    _need(isinstance(data, bytes) and 0 < len(data) <= MESSAGE_MAX,
          f"a message holds 1 to {MESSAGE_MAX} bytes")  # fmt: skip
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=True, max_buffer_size=MESSAGE_MAX, **_UNPACK_LIMITS
    )
    unpacker.feed(data)
    out: list[FeedRecord] = []
    try:
        for obj in unpacker:
            _need(len(out) < MESSAGE_RECORDS, f"more than {MESSAGE_RECORDS} records")
            out.append(_record(obj))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"feed message: not valid msgpack: {exc}") from exc
    return out


def _record(obj: Any) -> FeedRecord:
    _need(isinstance(obj, dict), "not a map")
    _need(obj.get("v") == FEED_VERSION, f"unknown version {obj.get('v')!r}")
    _need(set(obj) == _KEYS, "not exactly the record's keys")
    try:
        kind = RecordKind(obj["k"])
    except ValueError:
        raise WireError(f"feed record: unknown kind {obj['k']!r}") from None
    city = _text(obj["c"], "city")
    assert city is not None
    _need(0 < len(city) <= 64, "city must be 1 to 64 characters")
    event_hash = obj["h"]
    _need(isinstance(event_hash, bytes) and len(event_hash) == 32, "hash must be 32 bytes")
    author = _text(obj["a"], "author")
    assert author is not None
    case_id = _text(obj["i"], "case id", optional=True)
    _need((case_id is None) == (kind is RecordKind.ANNOUNCEMENT), "case id and kind disagree")
    _need(case_id is None or is_valid_id(case_id), "malformed case id")
    fields, counts = obj["f"], obj["n"]
    _need(isinstance(fields, dict) and set(fields) <= _OPEN_KEYS, "unknown or personal fields")
    for key, value in fields.items():
        _text(value, f"field {key}", optional=True)
    _need(isinstance(counts, dict) and set(counts) <= _COUNT_KEYS, "unknown counts")
    for key, value in counts.items():
        _int(value, f"count {key}")
    personal = obj["x"]
    _need(personal is None or isinstance(personal, bytes), "personal must be sealed bytes")
    _need(personal is None or kind is RecordKind.CASE, "a sealed block on a non-case record")
    announcement = obj["m"]
    _need((announcement is not None) == (kind is RecordKind.ANNOUNCEMENT), "announcement")
    if announcement is not None:
        _need(isinstance(announcement, dict), "announcement must be a map")
        _need(set(announcement) == _ANNOUNCEMENT_KEYS, "announcement's keys")
        for key in ("notice_id", "severity"):
            _text(announcement[key], key)
        for key in ("title_ja", "title_en", "body_ja", "body_en"):
            _text(announcement[key], key, optional=True)
        sites = announcement["sites"]
        _need(isinstance(sites, list) and all(isinstance(s, str) for s in sites), "sites")
        _need(isinstance(announcement["exercise"], bool), "exercise must be true or false")
    return FeedRecord(
        kind,
        city=city,
        pos=_int(obj["p"], "position"),
        event_hash=event_hash,
        author=author,
        seq=_int(obj["s"], "seq"),
        hlc=_int(obj["t"], "hlc"),
        case_id=case_id,
        fields=fields,
        counts=counts,
        personal=personal,
        announcement=announcement,
    )
