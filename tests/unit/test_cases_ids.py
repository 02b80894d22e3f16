"""Case and item ids: valid UUIDv7, ordered by time, strict for peers."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.cases.ids import check_id, id_wall_ms, is_valid_id, new_id
from meshdesk.errors import UsageError

NOW = 1_700_000_000_000


@given(st.integers(0, (1 << 48) - 1), st.randoms(use_true_random=False))
def test_new_id_is_a_canonical_uuid7(wall_ms: int, rng: random.Random) -> None:
    text = new_id(wall_ms, rng)
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert is_valid_id(text)
    assert id_wall_ms(text) == wall_ms


@given(st.lists(st.integers(0, (1 << 48) - 1), min_size=2, max_size=20, unique=True))
def test_ids_sort_by_time(walls: list[int]) -> None:
    ids = [new_id(wall) for wall in walls]
    by_time = [text for _, text in sorted(zip(walls, ids, strict=True))]
    assert sorted(ids) == by_time


def test_random_bits_come_from_the_given_rng() -> None:
    assert new_id(NOW, random.Random(7)) == new_id(NOW, random.Random(7))
    assert new_id(NOW, random.Random(7)) != new_id(NOW, random.Random(8))
    assert new_id(NOW) != new_id(NOW)  # os.urandom


def test_random_bits_cover_all_74() -> None:
    lo = uuid.UUID(new_id(0, _Fixed(0))).int
    hi = uuid.UUID(new_id(0, _Fixed((1 << 74) - 1))).int
    assert lo == (7 << 76) | (0b10 << 62)
    assert hi ^ lo == ((0xFFF << 64) | ((1 << 62) - 1))


class _Fixed(random.Random):
    def __init__(self, value: int) -> None:
        super().__init__()
        self.value = value

    def getrandbits(self, k: int, /) -> int:
        return self.value & ((1 << k) - 1)


@pytest.mark.parametrize("wall_ms", [-1, 1 << 48])
def test_new_id_refuses_times_outside_48_bits(wall_ms: int) -> None:
    with pytest.raises(ValueError, match="UUIDv7"):
        new_id(wall_ms)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0190f1c2-7a3b-7c4d-8e5f",  # a prefix
        "0190F1C2-7A3B-7C4D-8E5F-0123456789AB",  # upper case is not canonical
        "0190f1c2-7a3b-4c4d-8e5f-0123456789ab",  # version 4
        "0190f1c2-7a3b-7c4d-ce5f-0123456789ab",  # wrong variant
        "0190f1c27a3b7c4d8e5f0123456789ab",  # no dashes
        " 0190f1c2-7a3b-7c4d-8e5f-0123456789ab",
        "0190f1c2-7a3b-7c4d-8e5f-0123456789ab\n",
    ],
)
def test_peers_must_send_the_canonical_form(text: str) -> None:
    assert not is_valid_id(text)


def test_is_valid_id_takes_anything() -> None:
    assert not is_valid_id(None)
    assert not is_valid_id(b"0190f1c2-7a3b-7c4d-8e5f-0123456789ab")


def test_check_id_canonicalises_operator_input() -> None:
    text = " 0190F1C2-7A3B-7C4D-8E5F-0123456789AB "
    assert check_id(text) == "0190f1c2-7a3b-7c4d-8e5f-0123456789ab"
    with pytest.raises(UsageError, match="case id '0190f1c2' is not a valid id"):
        check_id("0190f1c2")
    with pytest.raises(UsageError, match="note id"):
        check_id("nope", "note id")
