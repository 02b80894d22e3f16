"""Property tests: the codec refuses garbage with WireError only, and round-trips.

Strategies are derived from the frame classes' own type hints (bounds included), so
a frame added later is fuzzed without touching this file.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from meshdesk.errors import WireError
from meshdesk.wire import (
    Frame,
    FrameDecoder,
    FrameKind,
    MaxLen,
    Range,
    decode,
    encode,
    frame_types,
    pack_frame,
)

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Tuples are drawn short; their bounds are checked by the unit tests.
_MAX_DRAWN_ITEMS = 6


def _strategy(hint: Any, meta: tuple[object, ...] = ()) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _strategy(hint.__origin__, meta + hint.__metadata__)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.none() | _strategy(inner, meta)
    max_len = min((m.n for m in meta if isinstance(m, MaxLen)), default=None)
    if hint is bool:
        return st.booleans()
    if hint is int:
        bounds = next((m for m in meta if isinstance(m, Range)), Range())
        lo = -(2**63) if bounds.lo is None else bounds.lo
        hi = 2**64 - 1 if bounds.hi is None else bounds.hi
        return st.integers(lo, hi)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if hint is str:
        return st.text(max_size=max_len if max_len is not None else 100)
    if hint is bytes:
        return st.binary(max_size=max_len if max_len is not None else 100)
    if origin is tuple:
        cap = _MAX_DRAWN_ITEMS if max_len is None else min(max_len, _MAX_DRAWN_ITEMS)
        return st.lists(_strategy(typing.get_args(hint)[0]), max_size=cap).map(tuple)
    if dataclasses.is_dataclass(hint):
        return _record(hint)
    raise AssertionError(f"no strategy for {hint!r}")


def _record(cls: Any) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return st.builds(cls, **{f.name: _strategy(hints[f.name]) for f in dataclasses.fields(cls)})


frames: st.SearchStrategy[Frame] = st.one_of([_record(cls) for cls in frame_types().values()])

#: Bytes that often get past the first checks: an envelope header, then anything.
envelope_like = st.builds(
    lambda kind, rest: b"\x93\x01" + bytes([kind]) + rest,
    st.sampled_from([*FrameKind, 0, 7, 99]),
    st.binary(max_size=200),
)

#: Any msgpack value our limits allow, to reach the schema checks with odd shapes.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


def _assert_valid(frame: object) -> None:
    """A decoded frame is a registered type that encodes back to itself."""
    event(f"decoded {type(frame).__name__}")
    assert type(frame) in frame_types().values()
    assert decode(encode(frame)) == frame  # type: ignore[arg-type]


@FUZZ
@given(st.binary(max_size=600) | envelope_like)
def test_decode_arbitrary_bytes(data: bytes) -> None:
    try:
        frame = decode(data)
    except WireError:
        return
    _assert_valid(frame)


@FUZZ
@given(
    st.lists(
        st.binary(max_size=80)
        | envelope_like.map(lambda body: struct.pack(">I", len(body)) + body)
        | frames.map(pack_frame),
        max_size=8,
    )
)
def test_stream_decoder_arbitrary_chunks(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        try:
            for frame in decoder.feed(chunk):
                _assert_valid(frame)
        except WireError:
            break
    else:
        return
    with pytest.raises(WireError, match="decoder closed after an earlier error"):
        decoder.feed(b"")


@FUZZ
@given(st.sampled_from([*FrameKind, 99]), msgpack_values)
def test_decode_arbitrary_fields(kind: int, fields: object) -> None:
    try:
        frame = decode(msgpack.packb([1, kind, fields], use_bin_type=True))
    except WireError:
        return
    _assert_valid(frame)


@FUZZ
@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert decode(encode(frame)) == frame
    assert FrameDecoder().feed(pack_frame(frame)) == [frame]


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**16), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 2**16)),
    st.tuples(st.just("insert"), st.integers(0, 2**16), st.binary(min_size=1, max_size=9)),
    st.tuples(st.just("replace"), st.integers(0, 2**16), st.integers(0, 255)),
)


def _mutate(data: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    buf = bytearray(data)
    for op, at, *arg in mutations:
        at %= len(buf) + 1
        if op == "insert":
            buf[at:at] = arg[0]
        elif op == "truncate":
            del buf[at:]
        elif at < len(buf):
            buf[at] = buf[at] ^ (1 << arg[0]) if op == "flip" else arg[0]
    return bytes(buf)


@FUZZ
@given(frames, st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_frames(frame: Frame, mutations: list[tuple[Any, ...]]) -> None:
    data = _mutate(encode(frame), mutations)
    try:
        decoded = decode(data)
    except WireError:
        return
    _assert_valid(decoded)


@FUZZ
@given(frames, st.data())
def test_one_field_replaced(frame: Frame, data: st.DataObject) -> None:
    version, kind, fields = msgpack.unpackb(encode(frame))
    at = data.draw(st.integers(0, len(fields) - 1), label="field")
    fields[at] = data.draw(msgpack_values, label="value")
    try:
        decoded = decode(msgpack.packb([version, kind, fields], use_bin_type=True))
    except WireError:
        return
    _assert_valid(decoded)
