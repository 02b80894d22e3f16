"""What leaves a city (issue 17, point 2): the feed records and their codec.

Properties over drawn cases and events: nothing sealed leaves without the
citizen's consent to the prefecture (nor after an erasure), no personal field ever
leaves in plaintext, erasures always follow, every record round-trips, and a
hostile message gets a ``WireError`` and nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.cases.events import EventKind
from meshdesk.cases.hlc import make_hlc
from meshdesk.cases.ids import new_id
from meshdesk.errors import WireError
from meshdesk.hub.feed import (
    MESSAGE_MAX,
    MESSAGE_RECORDS,
    OPEN_COLUMNS,
    PREFECTURE,
    FeedRecord,
    RecordKind,
    decode_message,
    encode_message,
    messages_of,
    records_of,
)
from meshdesk.notices.events import Announcement, NoticeKind, Severity
from meshdesk.store import CaseSummary, StoredEvent

WALL = 1_780_000_000_000
#: Stands for a sealed personal block: it must never appear in a record without consent.
SEALED = b"SEALED-PERSONAL-BLOCK" * 4
CASE_KINDS = [k for k in EventKind]


def summary(case_id: str, consent: tuple[str, ...]) -> CaseSummary:
    hlc = make_hlc(WALL)
    return CaseSummary(
        case_id=case_id,
        opened=True,
        created_hlc=hlc,
        updated_hlc=hlc + 5,
        events=3,
        origin="node-a",
        site="第一小学校",
        category="medical",
        urgency="high",
        urgency_rank=1,
        status="in_progress",
        status_rank=1,
        department="福祉課",
        consent=tuple(sorted(consent)),
        referrals=(("福祉課", "requested"),),
        conflicts=(),
        personal=b"d" * 16,
        grants=0,
    )


def event(n: int, case_id: str | None, kind: int, body: bytes = b"\x80") -> StoredEvent:
    digest = n.to_bytes(32, "big")
    return StoredEvent("node-a", n, make_hlc(WALL, n), case_id, kind, body, bytes(32), digest)


def announcement_body() -> bytes:
    return Announcement(
        notice_id=new_id(WALL, random.Random(1)),
        op="本部",
        severity=Severity.WARNING,
        title_ja="給水",
        title_en="Water",
        body_ja="14時から",
        body_en="From 2 pm",
    ).encode()


cases = st.lists(
    st.tuples(
        st.sets(st.sampled_from([PREFECTURE, "福祉課", "税務課"])),  # consent
        st.booleans(),  # erased on the HQ
        st.lists(st.sampled_from(CASE_KINDS), min_size=1, max_size=5),  # its events
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=80, deadline=None)
@given(cases, st.randoms(use_true_random=False))
def test_nothing_sealed_leaves_without_consent_and_erasures_follow(
    drawn: list[tuple[set[str], bool, list[EventKind]]], rnd: random.Random
) -> None:
    summaries, batch, erased, personal = {}, [], set(), {}
    n = 0
    for consent, was_erased, kinds in drawn:
        case_id = new_id(WALL, rnd)
        summaries[case_id] = summary(case_id, tuple(consent))
        personal[case_id] = SEALED  # the caller offers it for every case: feed must filter
        if was_erased:
            erased.add(case_id)
        for kind in kinds:
            n += 1
            batch.append((n, event(n, case_id, int(kind))))
    records = records_of("city-a", batch, summaries, personal, erased)

    assert [r.pos for r in records] == [p for p, _ in batch]  # one record per case event
    for record, (_, source) in zip(records, batch, strict=True):
        assert record.msg_id == source.hash.hex()
        assert record.case_id == source.case_id
        assert set(record.fields) == {c.key for c in OPEN_COLUMNS}
        if source.kind == EventKind.CASE_ERASED:
            assert record.kind is RecordKind.ERASURE
        consented = PREFECTURE in summaries[source.case_id].consent
        allowed = consented and source.case_id not in erased and record.kind is RecordKind.CASE
        assert (record.personal is not None) == allowed
        wire = encode_message([record])
        assert (SEALED in wire) == allowed
        assert decode_message(wire) == [record]
    # A whole batch, packed as the publisher packs it, comes back the same.
    assert [r for _, p in messages_of(records, 4) for r in decode_message(p)] == records


def test_announcements_leave_other_facts_stay() -> None:
    batch = [
        (1, event(1, None, NoticeKind.ANNOUNCEMENT, announcement_body())),
        (2, event(2, None, NoticeKind.MESSAGE, b"\x80")),  # operator messages stay
        (3, event(3, None, NoticeKind.ANNOUNCEMENT, b"\xc1")),  # unreadable: stays
    ]
    records = records_of("city-a", batch, {}, {})
    assert len(records) == 1
    (record,) = records
    assert record.kind is RecordKind.ANNOUNCEMENT
    assert record.announcement is not None
    assert record.announcement["title_en"] == "Water"
    assert decode_message(encode_message([record])) == [record]


def test_fields_follow_the_export_mapping() -> None:
    case_id = new_id(WALL, random.Random(2))
    (record,) = records_of(
        "city-a",
        [(7, event(7, case_id, EventKind.CASE_OPENED))],
        {case_id: summary(case_id, ())},
        {},
    )
    assert record.fields["id"] == case_id
    assert record.fields["site"] == "第一小学校"
    assert record.fields["category"] == "medical"
    assert record.fields["created_at"] is not None
    assert record.counts == {"events": 3, "referrals": 1}
    assert not any(c.personal for c in OPEN_COLUMNS)


def _valid() -> list[Any]:
    """A good one-record message, decoded to its arrays: [2, city, cases, records]."""
    case_id = new_id(WALL, random.Random(3))
    (record,) = records_of(
        "city-a",
        [(1, event(1, case_id, EventKind.CASE_OPENED))],
        {case_id: summary(case_id, (PREFECTURE,))},
        {case_id: SEALED},
    )
    obj = msgpack.unpackb(encode_message([record]), raw=False)
    assert isinstance(obj, list)
    return obj


def _set(path: tuple[int, ...], value: object) -> Callable[[list[Any]], None]:
    def change(obj: list[Any]) -> None:
        for i in path[:-1]:
            obj = obj[i]
        obj[path[-1]] = value

    return change


CASE, RECORD = (2, 0), (3, 0)  # the first case and the first record of a message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set((0,), 1), "unknown version"),
        (_set((1,), ""), "city"),
        (_set((*RECORD, 0), 9), "unknown kind"),
        (_set((*RECORD, 0), True), "unknown kind"),
        (_set((*RECORD, 2), b"short"), "hash"),
        (_set((*RECORD, 1), -1), "position"),
        (_set((*RECORD, 5), (1 << 64) - 1), "hlc"),
        (_set((*CASE, 0), "not-an-id"), "case id"),
        (_set((*RECORD, 6), new_id(WALL, random.Random(9))), "not among the message's cases"),
        (_set((*CASE, 1), [*[None] * len(OPEN_COLUMNS), "山田"]), "fields must be an array"),
        (_set((*CASE, 1), {"name": "山田"}), "msgpack"),  # no maps on the wire at all
        (_set((*CASE, 1, 3), "第一\x00"), "a field must be text"),
        (_set((*RECORD, 7), "plaintext"), "personal must be sealed"),
        (_set((*CASE, 2), ["3", 1]), "counts"),
        (_set((*RECORD, 0), int(RecordKind.ERASURE)), "on a case record only"),
        (_set((*RECORD, 8), ["x"] * 8), "announcement on a case record"),
        (_set((3,), []), "no records"),
    ],
)
def test_hostile_messages_are_refused(change: Callable[[list[Any]], None], message: str) -> None:
    obj = _valid()
    change(obj)
    with pytest.raises(WireError, match=message):
        decode_message(msgpack.packb(obj, use_bin_type=True))


def test_oversized_and_garbage_are_refused() -> None:
    with pytest.raises(WireError, match="bytes"):
        decode_message(b"\x80" * (MESSAGE_MAX + 1))
    with pytest.raises(WireError, match="msgpack"):
        decode_message(b"\xc1")
    with pytest.raises(WireError, match="msgpack"):
        decode_message(msgpack.packb(_valid()) + b"\x01")  # trailing bytes
    with pytest.raises(WireError, match="not a feed message"):
        decode_message(msgpack.packb([1, 2]))
    deep = b"\x91" * 5000  # nested arrays beyond the decoder's stack
    with pytest.raises(WireError, match="msgpack"):
        decode_message(deep)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        records = decode_message(data)
    except WireError:
        return
    assert records
    assert all(isinstance(r, FeedRecord) for r in records)


def test_messages_pack_records_in_order_and_round_trip() -> None:
    rnd = random.Random(4)
    case_ids = [new_id(WALL, rnd) for _ in range(7)]
    batch = [(i + 1, event(i + 1, c, EventKind.FIELD_SET)) for i, c in enumerate(case_ids)]
    records = records_of("city-a", batch, {c: summary(c, ()) for c in case_ids}, {})
    packed = messages_of(records, 3)
    assert [len(decode_message(payload)) for _, payload in packed] == [3, 3, 1]
    assert [msg_id for msg_id, _ in packed] == [records[i].msg_id for i in (2, 5, 6)]
    assert [r for _, p in packed for r in decode_message(p)] == records
    assert messages_of(records, 3) == packed  # the same stretch: the same ids


def test_a_message_with_one_bad_record_is_refused_whole() -> None:
    obj = _valid()
    good = obj[3][0]
    bad = [*good[:7], "plaintext", None]
    obj[3] = [good, good]
    assert len(decode_message(msgpack.packb(obj, use_bin_type=True))) == 2
    obj[3] = [good, bad]
    with pytest.raises(WireError, match="personal must be sealed"):
        decode_message(msgpack.packb(obj, use_bin_type=True))
    with pytest.raises(WireError, match="bytes"):
        decode_message(b"")


def test_messages_are_cut_by_size_city_and_a_case_that_changed() -> None:
    rnd = random.Random(5)
    big = b"s" * (60 * 1024)  # a sealed block near the case limit
    case_ids = [new_id(WALL, rnd) for _ in range(40)]
    sums = {c: summary(c, (PREFECTURE,)) for c in case_ids}
    batch = [(i + 1, event(i + 1, c, EventKind.FIELD_SET)) for i, c in enumerate(case_ids)]
    records = records_of("city-a", batch, sums, {c: big for c in case_ids})
    packed = messages_of(records, MESSAGE_RECORDS)
    assert len(packed) > 1  # 40 x 60 KiB does not fit one message
    assert all(len(p) <= MESSAGE_MAX for _, p in packed)
    assert [r for _, p in packed for r in decode_message(p)] == records

    one = records[0]
    other_city = one._replace(city="city-b", pos=2, event_hash=bytes(31) + b"\x02")
    changed = one._replace(pos=3, event_hash=bytes(31) + b"\x03",
                           fields={**one.fields, "status": "closed"})  # fmt: skip
    packed = messages_of([one, other_city, changed], MESSAGE_RECORDS)
    assert [len(decode_message(p)) for _, p in packed] == [1, 1, 1]
    assert [r for _, p in packed for r in decode_message(p)] == [one, other_city, changed]
    with pytest.raises(ValueError, match="one city"):
        encode_message([one, other_city])
    with pytest.raises(ValueError, match="disagree"):
        encode_message([one, changed])
