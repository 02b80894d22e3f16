"""The case vocabulary: labels, urgency rank, status transitions, the personal block."""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.cases.model import (
    LABELS,
    STATUS_TRANSITIONS,
    CaseField,
    Category,
    Personal,
    ReferralState,
    Status,
    Urgency,
    check_transition,
    referral_register,
)
from meshdesk.errors import SyncError, UsageError

VOCABULARY: list[type[enum.StrEnum]] = [Category, Urgency, Status, ReferralState, CaseField]


def test_the_vocabulary_of_the_brief() -> None:
    assert [c.value for c in Category] == [
        "medical",
        "welfare_eldercare",
        "child_rearing",
        "housing",
        "supplies",
        "safety_missing",
        "procedures_tax",
        "mental_health",
        "other",
    ]
    assert list(Urgency) == ["immediate", "high", "normal", "low"]
    assert list(Status) == ["new", "in_progress", "referred", "resolved", "closed"]
    assert list(ReferralState) == ["requested", "accepted", "declined", "done"]


@pytest.mark.parametrize("enum_type", VOCABULARY, ids=lambda e: e.__name__)
def test_every_member_has_a_japanese_and_an_english_label(enum_type: type[enum.StrEnum]) -> None:
    labels = LABELS[enum_type]
    assert set(labels) == set(enum_type)
    for member in enum_type:
        ja, en = labels[member]
        assert ja
        assert en
        assert ja != en
        assert any(ord(ch) > 0x3000 for ch in ja), f"{member}: {ja!r} is not Japanese"
        assert en.isascii()
        assert member.label("ja") == ja  # type: ignore[attr-defined]
        assert member.label("en") == en  # type: ignore[attr-defined]
    assert len({ja for ja, _ in labels.values()}) == len(labels), "ja labels must differ"
    assert len({en for _, en in labels.values()}) == len(labels), "en labels must differ"


def test_labels_cover_every_labelled_enum() -> None:
    assert set(LABELS) == set(VOCABULARY)


def test_urgency_rank_puts_immediate_first() -> None:
    assert sorted(Urgency, key=lambda u: u.rank) == [
        Urgency.IMMEDIATE,
        Urgency.HIGH,
        Urgency.NORMAL,
        Urgency.LOW,
    ]
    assert Urgency.IMMEDIATE.rank == 0


def test_enum_values_are_plain_strings_on_the_wire() -> None:
    assert msgpack.unpackb(msgpack.packb([Category.HOUSING])) == ["housing"]
    assert f"{Status.IN_PROGRESS}" == "in_progress"


ALLOWED = {
    ("new", "in_progress"),
    ("new", "referred"),
    ("new", "resolved"),
    ("new", "closed"),
    ("in_progress", "referred"),
    ("in_progress", "resolved"),
    ("in_progress", "closed"),
    ("referred", "in_progress"),
    ("referred", "resolved"),
    ("referred", "closed"),
    ("resolved", "closed"),
    ("resolved", "in_progress"),
    ("closed", "in_progress"),
}


@pytest.mark.parametrize("pair", list(itertools.product(Status, Status)), ids=str)
def test_status_transitions(pair: tuple[Status, Status]) -> None:
    current, new = pair
    if (current, new) in ALLOWED:
        check_transition(current, new)
        assert new in STATUS_TRANSITIONS[current]
        return
    with pytest.raises(UsageError) as info:
        check_transition(current, new)
    if current == new:
        assert str(info.value) == f"status is already {current}"
    else:
        names = ", ".join(sorted(STATUS_TRANSITIONS[current]))
        assert str(info.value) == f"cannot go from {current} to {new}; allowed: {names}"


def test_transition_message_of_the_brief() -> None:
    with pytest.raises(UsageError) as info:
        check_transition(Status.RESOLVED, Status.REFERRED)
    assert str(info.value) == "cannot go from resolved to referred; allowed: closed, in_progress"


def test_referral_register_name() -> None:
    assert referral_register("abc") == "referral:abc"


# -- the personal block -----------------------------------------------------------------

FULL = Personal(
    name="山田 太郎",
    furigana="やまだ たろう",
    age=78,
    birth_date=dt.date(1946, 4, 1),
    phone="090-1234-5678",
    address="秋田県横手市中央町1-1\n第二アパート 203",
    shelter="横手南小学校 体育館",
    household_size=2,
    language="日本語",
    needs="血圧の薬が残り3日分。\n車椅子を使用。",
)


def test_personal_round_trips_japanese_text() -> None:
    assert Personal.from_msgpack(FULL.to_msgpack()) == FULL
    minimal = Personal(name="グエン・ヴァン・アン")
    assert Personal.from_msgpack(minimal.to_msgpack()) == minimal


texts = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1)


@given(
    st.builds(
        Personal,
        name=texts.filter(str.strip).map(lambda s: s[:100]).filter(str.strip),
        furigana=st.none() | texts.filter(str.strip).map(lambda s: s[:100]).filter(str.strip),
        age=st.none() | st.integers(0, 150),
        birth_date=st.none() | st.dates(dt.date(1850, 1, 1)),
        household_size=st.none() | st.integers(1, 99),
    )
)
def test_personal_round_trip_property(personal: Personal) -> None:
    assert Personal.from_msgpack(personal.to_msgpack()) == personal


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "name must not be empty"),
        ({"name": "   "}, "name must not be empty"),
        ({"name": "あ" * 101}, "name is longer than 100"),
        ({"name": 5}, "name must be text"),
        ({"phone": "090\x001234"}, "phone contains control characters"),
        ({"shelter": "体育館\n2階"}, "shelter contains control characters"),
        ({"age": -1}, "age must be a whole number from 0 to 150"),
        ({"age": True}, "age must be a whole number"),
        ({"household_size": 0}, "household_size must be a whole number from 1 to 99"),
        ({"birth_date": "1946-04-01"}, "birth_date must be a date"),
        ({"birth_date": dt.datetime(1946, 4, 1)}, "birth_date must be a date"),
        ({"needs": "x" * 2001}, "needs is longer than 2000"),
        ({"language": "\ud800"}, "language is not valid Unicode"),
    ],
)
def test_personal_refuses_bad_fields(changes: dict[str, Any], message: str) -> None:
    fields = {"name": "山田", **changes}
    with pytest.raises(UsageError, match=message):
        Personal(**fields)


def _packed(**changes: Any) -> bytes:
    data = msgpack.unpackb(FULL.to_msgpack())
    data.update(changes)
    return msgpack.packb({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid msgpack"),
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb("山田"), "must be a map"),
        (msgpack.packb([1, 2]), "max_array_len"),
        (_packed(name=...), "must be a map of"),
        (_packed(extra="x"), "must be a map of"),
        (_packed(age="78"), "age must be a whole number"),
        (_packed(birth_date="1946-4-1"), "birth_date must be YYYY-MM-DD"),
        (_packed(birth_date="1946-02-30"), "birth_date is not a date"),
        (_packed(birth_date=19460401), "birth_date must be YYYY-MM-DD"),
        (_packed(name=b"bytes"), "not valid msgpack"),  # max_bin_len=0
        (_packed(name="x" * 20_000), "not valid msgpack"),
    ],
)
def test_personal_from_peers_raises_sync_error(data: bytes, message: str) -> None:
    with pytest.raises(SyncError, match=message):
        Personal.from_msgpack(data)


@given(st.binary(max_size=300))
def test_personal_from_arbitrary_bytes_raises_sync_error_only(data: bytes) -> None:
    try:
        personal = Personal.from_msgpack(data)
    except SyncError:
        return
    assert Personal.from_msgpack(personal.to_msgpack()) == personal
