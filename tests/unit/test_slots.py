"""Fast constructors of frozen slotted dataclasses build what ``__init__`` builds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from meshdesk._slots import slot_builder
from meshdesk.store.records import StoredEvent, stored_event
from meshdesk.wire import WireEvent, wire_event
from meshdesk.wire._schema import compile_record


def test_built_events_equal_constructed_ones() -> None:
    fields = ("node/1", 3, 77, None, 2, b"body", bytes(32), b"h" * 32, (b"blob",))
    built, made = stored_event(*fields), StoredEvent(*fields)
    assert built == made
    assert hash(built) == hash(made)
    assert repr(built) == repr(made)
    assert dataclasses.astuple(built) == dataclasses.astuple(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.seq = 4  # type: ignore[misc]
    wire = wire_event(3, 77, "c", 2, b"body", bytes(32), ())
    assert wire == WireEvent(3, 77, "c", 2, b"body", bytes(32), ())


@dataclass(frozen=True, slots=True)
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


def test_classes_that_check_their_fields_are_refused() -> None:
    @dataclass(frozen=True)
    class Unslotted:
        n: int

    for cls in (Positive, Unslotted):
        with pytest.raises(TypeError, match="slotted dataclass"):
            slot_builder(cls)


def test_a_record_that_checks_its_fields_still_runs_its_checks() -> None:
    record = compile_record(Positive)
    assert record.decode([5]) == Positive(5)
    with pytest.raises(ValueError, match="negative"):
        record.decode([-1])
