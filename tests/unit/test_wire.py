"""Wire codec: round trips, every refusal, and stream framing."""

from __future__ import annotations

import re
import struct
import types
import typing
from dataclasses import dataclass
from typing import Annotated

import msgpack
import pytest

import meshdesk.wire as wire
from meshdesk.errors import MeshdeskError, WireError
from meshdesk.wire import (
    DEFAULT_LIMITS,
    WIRE_VERSION,
    AuthorHead,
    BundleHeader,
    BundleHeads,
    BundleSeal,
    CallAnswer,
    CallDecline,
    CallDegrade,
    CallGuestReady,
    CallGuestStandby,
    CallHost,
    CallLeave,
    CallMember,
    CallMute,
    CallOffer,
    CallRoster,
    CallStanding,
    Certificates,
    CheckpointRef,
    ErrorFrame,
    Frame,
    FrameDecoder,
    FrameKind,
    Goodbye,
    Hello,
    MaxLen,
    PeerAddr,
    PeerExchange,
    Ping,
    Pong,
    Range,
    Revocations,
    SyncCredit,
    SyncDelta,
    SyncEvents,
    SyncHeads,
    SyncReject,
    SyncResync,
    WireEvent,
    WireLimits,
    decode,
    encode,
    frame_types,
    pack_frame,
)
from meshdesk.wire._codec import frame
from meshdesk.wire._schema import compile_record

SHELTER = "避難所 第一小学校"

EXAMPLES: dict[FrameKind, Frame] = {
    FrameKind.HELLO: Hello(
        proto=1,
        node_id="n-7f3a9c",
        name=SHELTER,
        site="市役所 本庁舎",
        role="desk",
        listen_port=4433,
        features=("sync", "calls", "受付"),
        instance=2**63 - 1,
    ),
    FrameKind.PING: Ping(nonce=2**63 - 1, sent_ms=1_725_000_000_000),
    FrameKind.PONG: Pong(nonce=0, echo_ms=1_725_000_000_000),
    FrameKind.GOODBYE: Goodbye(reason="シャットダウン"),
    FrameKind.PEER_EXCHANGE: PeerExchange(
        peers=(
            PeerAddr(node_id="n-1", host="192.168.10.5", port=4433, via="mdns"),
            PeerAddr(node_id="n-2", host="fe80::1%eth0", port=0, via="static"),
        )
    ),
    FrameKind.ERROR: ErrorFrame(code=65535, message="名前が長すぎます"),
    FrameKind.CERTIFICATES: Certificates(certs=(b"\x30\x82\x01\x00" * 64, b"")),
    FrameKind.REVOCATIONS: Revocations(number=3, crl=b"\x30\x82" + bytes(range(256)) * 4),
    FrameKind.SYNC_HEADS: SyncHeads(
        round=2**32 - 1,
        part=0,
        parts=2,
        heads=(
            AuthorHead(author="n-7f3a9c", seq=2**63 - 1, hash=bytes(range(32))),
            AuthorHead(author="n-1", seq=0, hash=bytes(32)),
        ),
    ),
    FrameKind.SYNC_DELTA: SyncDelta(heads=(AuthorHead(author="n-2", seq=7, hash=b"\xff" * 32),)),
    FrameKind.SYNC_CREDIT: SyncCredit(round=1, settled=2**63 - 1, window=2**31 - 1),
    FrameKind.SYNC_EVENTS: SyncEvents(
        round=3,
        offset=512,
        author="n-7f3a9c",
        events=(
            WireEvent(
                seq=41,
                hlc=-(2**63),
                case_id="2026-0042",
                kind=3,
                body=msgpack.packb({"op": "田中", "note": SHELTER}),
                prev_hash=bytes(32),
                payloads=(b"\x00sealed block", b"\xff" * (64 * 1024)),
            ),
            WireEvent(
                seq=42, hlc=2**63 - 1, case_id=None, kind=0, body=b"", prev_hash=b"\x01" * 32
            ),
        ),
        checkpoints=(CheckpointRef(seq=42, hash=b"\x02" * 32, sig=b"\x03" * 64),),
    ),
    FrameKind.SYNC_REJECT: SyncReject(author="n-1", seq=9, reason="checkpoint signature forged"),
    FrameKind.SYNC_RESYNC: SyncResync(round=7, sent=2**63 - 1),
    FrameKind.CALL_OFFER: CallOffer(
        call_id="019a3b4c-5d6e-7f80-9123-456789abcdef",
        case_id=None,
        audio_only=False,
        host="n-1",
        members=("n-1", "n-2", "n-3"),
        join=True,
        sdp="v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n" + "a=candidate:1 1 udp 1 x\r\n" * 40,
    ),
    FrameKind.CALL_ANSWER: CallAnswer(call_id="c-1", sdp="v=0\r\ns=相談\r\n"),
    FrameKind.CALL_DECLINE: CallDecline(call_id="c-1", reason="担当者が不在です"),
    FrameKind.CALL_LEAVE: CallLeave(call_id="c-1", reason=""),
    FrameKind.CALL_ROSTER: CallRoster(
        call_id="c-1",
        host="n-1",
        members=(CallMember(node_id="n-1", state="connected"), CallMember("n-2", "invited")),
    ),
    FrameKind.CALL_MUTE: CallMute(call_id="c-1", audio=True, video=False),
    FrameKind.CALL_DEGRADE: CallDegrade(call_id="c-1", reason="loss 12 % over 3 s"),
    FrameKind.CALL_STANDING: CallStanding(call_id="c-1", cpu_free_pct=64, rtt_ms=3, loss_pct=0),
    FrameKind.CALL_GUEST_STANDBY: CallGuestStandby(
        call_id="c-1",
        guest_id="citizen:0a1b2c3d",
        code="4821",
        token="t" * 32,
        case_id=None,
        remote="10.0.0.9",
    ),
    FrameKind.CALL_GUEST_READY: CallGuestReady(
        call_id="c-1", guest_id="citizen:0a1b2c3d", url="https://10.0.0.2:7443/j/" + "t" * 32
    ),
    FrameKind.CALL_HOST: CallHost(
        call_id="c-1",
        host="n-2",
        epoch=1,
        relayed=True,
        successors=("n-3", "n-4"),
        reason="the host n-1 left",
    ),
    FrameKind.BUNDLE_HEADER: BundleHeader(
        version=1,
        deployment="d-1",
        creator="n-1",
        creator_name="避難所",
        created_ms=1_800_000_000_000,
        runs=2,
        events=3,
        authors=1,
        certificates=4,
    ),
    FrameKind.BUNDLE_SEAL: BundleSeal(sig=b"s" * 64),
    FrameKind.BUNDLE_HEADS: BundleHeads(heads=(AuthorHead("n-1", 3, b"h" * 32),)),
}


def envelope(*items: object) -> bytes:
    """Hand-built msgpack, for inputs our encoder would never produce."""
    return msgpack.packb(list(items), use_bin_type=True)


def prefixed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# -- registry and public API -------------------------------------------------------------


def test_every_kind_has_a_frame_class_and_an_example() -> None:
    assert set(frame_types()) == set(FrameKind)
    assert set(EXAMPLES) == set(FrameKind)


def test_frame_union_lists_every_frame_class() -> None:
    assert set(typing.get_args(Frame)) == set(frame_types().values())


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(wire).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(wire.__all__) == public


def test_wire_error_is_a_meshdesk_error() -> None:
    assert issubclass(WireError, MeshdeskError)


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(frame_types()), ids=lambda kind: kind.name)
def test_round_trip(kind: FrameKind) -> None:
    example = EXAMPLES[kind]  # a kind without an example fails here
    assert type(example) is frame_types()[kind]
    data = encode(example)
    assert msgpack.unpackb(data)[:2] == [WIRE_VERSION, kind]
    assert decode(data) == example
    assert FrameDecoder().feed(pack_frame(example)) == [example]


def test_fields_go_out_in_declared_order() -> None:
    hello = EXAMPLES[FrameKind.HELLO]
    assert msgpack.unpackb(encode(hello)) == [
        1,
        1,
        [
            1,
            "n-7f3a9c",
            SHELTER,
            "市役所 本庁舎",
            "desk",
            4433,
            ["sync", "calls", "受付"],
            2**63 - 1,
        ],
    ]


def test_japanese_text_is_utf8_on_the_wire() -> None:
    assert SHELTER.encode() in encode(Goodbye(reason=SHELTER))


def test_values_at_their_limits_round_trip() -> None:
    hello = Hello(
        proto=-(2**63),
        node_id="x" * 64,
        name="避" * 128,
        site="s" * 128,
        role="r" * 16,
        listen_port=65535,
        features=tuple("f" * 32 for _ in range(32)),
    )
    peers = PeerExchange(peers=(PeerAddr("n" * 64, "h" * 255, 65535, "v" * 16),) * 256)
    for example in (hello, peers, Ping(nonce=0, sent_ms=2**64 - 1), Goodbye("")):
        assert decode(encode(example)) == example


def test_int_enum_values_go_out_as_plain_ints() -> None:
    assert decode(encode(ErrorFrame(code=FrameKind.PING, message=""))) == ErrorFrame(2, "")


# -- refused input -----------------------------------------------------------------------

PING = encode(Ping(nonce=1, sent_ms=2))
BAD_INPUT = {
    "empty": (b"", "empty frame"),
    "not-msgpack": (b"\xc1", "malformed msgpack"),
    "truncated": (encode(EXAMPLES[FrameKind.HELLO])[:-3], "malformed msgpack"),
    "trailing-garbage": (PING + b"\x00", "trailing data after the envelope"),
    "not-an-array": (msgpack.packb(7), "envelope: expected a non-empty array, got int"),
    "empty-array": (envelope(), "envelope: expected a non-empty array, got list"),
    "map-for-envelope": (msgpack.packb({"v": 1}), "expected a non-empty array, got dict"),
    "wrong-version": (envelope(2, 2, [1, 2]), "unsupported wire version 2"),
    "future-envelope-shape": (envelope(9), "unsupported wire version 9"),
    "bool-for-version": (envelope(True, 2, [1, 2]), "wire version must be an int, got bool"),
    "extra-envelope-item": (envelope(1, 2, [1, 2], 0), "envelope: expected 3 items, got 4"),
    "unknown-kind": (envelope(1, 99, []), "unknown frame kind 99"),
    "huge-kind": (envelope(1, 2**64 - 1, []), f"unknown frame kind {2**64 - 1}"),
    "bool-for-kind": (envelope(1, True, []), "frame kind must be an int, got bool"),
    "str-for-kind": (envelope(1, "ping", []), "frame kind must be an int, got str"),
    "too-few-fields": (envelope(1, 2, [1]), "Ping: expected 2 fields, got 1"),
    "too-many-fields": (envelope(1, 2, [1, 2, 3]), "Ping: expected 2 fields, got 3"),
    "map-for-fields": (envelope(1, 2, {"nonce": 1}), "Ping: expected array, got dict"),
    "bool-for-int": (envelope(1, 2, [True, 2]), "Ping.nonce: expected int, got bool"),
    "float-for-int": (envelope(1, 2, [1.0, 2]), "Ping.nonce: expected int, got float"),
    "nil-for-int": (envelope(1, 2, [None, 2]), "Ping.nonce: expected int, got None"),
    "negative-nonce": (
        envelope(1, 2, [-1, 2]),
        r"Ping.nonce: -1 is outside 0\.\.9223372036854775807",
    ),
    "port-out-of-range": (
        envelope(1, 1, [1, "n", "a", "s", "r", 70000, [], 0]),
        r"Hello.listen_port: 70000 is outside 0\.\.65535",
    ),
    "bytes-for-str": (envelope(1, 4, [b"bye"]), "Goodbye.reason: expected str, got bytes"),
    "str-too-long": (
        envelope(1, 4, ["x" * 257]),
        "Goodbye.reason: 257 characters exceeds the limit of 256",
    ),
    "tuple-too-long": (
        envelope(1, 1, [1, "n", "a", "s", "r", 1, ["f"] * 33, 0]),
        "Hello.features: 33 items exceeds the limit of 32",
    ),
    "tuple-item-too-long": (
        envelope(1, 1, [1, "n", "a", "s", "r", 1, ["ok", "f" * 33], 0]),
        r"Hello.features\[1\]: 33 characters exceeds the limit of 32",
    ),
    "str-for-tuple": (
        envelope(1, 1, [1, "n", "a", "s", "r", 1, "f", 0]),
        "Hello.features: expected array, got str",
    ),
    "nested-wrong-type": (
        envelope(1, 5, [[["n", "h", 1, "v"], ["n", "h", "443", "v"]]]),
        r"PeerExchange.peers\[1\].port: expected int, got str",
    ),
    "nested-wrong-arity": (
        envelope(1, 5, [[["n", "h", 1]]]),
        r"PeerExchange.peers\[0\]: expected 4 fields, got 3",
    ),
    "map-for-nested": (
        envelope(1, 5, [[{"node_id": "n"}]]),
        r"PeerExchange.peers\[0\]: expected array, got dict",
    ),
    "nested-too-deep": (b"\x91" * 5000 + b"\x01", "nested too deeply"),
    "deep-inside-a-field": (
        b"\x93\x01\x04\x91" + b"\x91" * 5000 + b"\xc0",
        "nested too deeply",
    ),
    "deep-but-legal-nesting": (
        b"\x93\x01\x04\x91" + b"\x91" * 100 + b"\xc0",
        "Goodbye.reason: expected str, got list",
    ),
    "ext-type": (envelope(1, 4, [msgpack.ExtType(5, b"x")]), "malformed msgpack: .*max_ext_len"),
    "empty-ext-type": (b"\x93\x01\x04\x91\xc7\x00\x05", "ext type 5 is not allowed"),
    "timestamp": (
        msgpack.packb([1, 2, [msgpack.Timestamp(1, 0), 2]], datetime=False),
        "malformed msgpack",
    ),
    "non-utf8-str": (b"\x93\x01\x04\x91\xa2\xff\xfe", "string is not valid UTF-8"),
    "map-with-int-keys": (msgpack.packb([1, 2, {1: 2}]), "malformed msgpack: int is not allowed"),
    "array-length-lie": (b"\x93\x01\x05\x91\xdd\xff\xff\xff\xff", "exceeds max_array_len"),
    "oversized": (
        b"\x00" * (DEFAULT_LIMITS.max_frame + 1),
        "frame of 1048577 bytes exceeds the 1048576-byte limit",
    ),
}


@pytest.mark.parametrize(("data", "match"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_raises_wire_error(data: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode(data)


def test_msgpack_errors_are_chained() -> None:
    with pytest.raises(WireError) as info:
        decode(PING + b"\x00")
    assert isinstance(info.value.__cause__, msgpack.ExtraData)


def test_limits_reach_msgpack() -> None:
    small = WireLimits(max_str=8, max_bin=8, max_array=4, max_map=1)
    with pytest.raises(WireError, match="exceeds max_str_len"):
        decode(envelope(1, 4, ["123456789"]), small)
    with pytest.raises(WireError, match="exceeds max_array_len"):
        decode(envelope(1, 1, [1, "n", "a", "s", "r", 1, ["a"] * 5]), small)
    with pytest.raises(WireError, match="exceeds max_bin_len"):
        decode(envelope(1, 4, [b"123456789"]), small)
    with pytest.raises(WireError, match="exceeds max_map_len"):
        decode(envelope(1, 4, [{"a": 1, "b": 2}]), small)
    with pytest.raises(WireError, match="frame of 11 bytes exceeds the 10-byte limit"):
        decode(b"\x00" * 11, WireLimits(max_frame=10))


# -- refused output ----------------------------------------------------------------------

BAD_FRAMES = {
    "int-for-str": (
        Hello(1, "n", 5, "s", "r", 1, ()),  # type: ignore[arg-type]
        "Hello.name: expected str, got int",
    ),
    "bool-for-int": (Ping(nonce=True, sent_ms=0), "Ping.nonce: expected int, got bool"),
    "out-of-range": (Ping(nonce=2**63, sent_ms=0), "Ping.nonce: 9223372036854775808 is outside"),
    "beyond-msgpack": (Hello(2**64, "n", "a", "s", "r", 1, ()), "Hello.proto: .* is outside"),
    "str-too-long": (Goodbye("x" * 257), "Goodbye.reason: 257 characters exceeds"),
    "list-for-tuple": (
        Hello(1, "n", "a", "s", "r", 1, ["f"]),  # type: ignore[arg-type]
        "Hello.features: expected tuple, got list",
    ),
    "lone-surrogate": (Goodbye("\ud800"), "Goodbye.reason: not encodable as UTF-8"),
    "nested-bad": (
        PeerExchange((PeerAddr("n", "h", -1, "v"),)),
        r"PeerExchange.peers\[0\].port: -1 is outside 0\.\.65535",
    ),
    "wrong-nested-type": (
        PeerExchange((("n", "h", 1, "v"),)),  # type: ignore[arg-type]
        r"PeerExchange.peers\[0\]: expected PeerAddr, got tuple",
    ),
    "too-many-peers": (
        PeerExchange((PeerAddr("n", "h", 1, "v"),) * 257),
        "PeerExchange.peers: 257 items exceeds the limit of 256",
    ),
}


@pytest.mark.parametrize(("bad", "match"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_encoding_a_bad_frame_raises_wire_error(bad: Frame, match: str) -> None:
    with pytest.raises(WireError, match=match):
        encode(bad)
    with pytest.raises(WireError, match=match):
        pack_frame(bad)


def test_encoder_applies_limits() -> None:
    with pytest.raises(WireError, match="Goodbye: frame of 15 bytes exceeds the 10-byte limit"):
        encode(Goodbye("0123456789"), WireLimits(max_frame=10))
    with pytest.raises(WireError, match=r"Goodbye\.reason: string of 26 bytes exceeds the 25-byte"):
        encode(Goodbye(SHELTER + "."), WireLimits(max_str=25))
    with pytest.raises(WireError, match=r"Hello\.features: 9 items exceeds the limit of 8"):
        encode(Hello(1, "n", "a", "s", "r", 1, ("f",) * 9), WireLimits(max_array=8))
    with pytest.raises(WireError, match="Hello: 8 fields exceeds the limit of 6"):
        encode(EXAMPLES[FrameKind.HELLO], WireLimits(max_array=6))


def test_encoding_a_non_frame_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="PeerAddr is not a registered frame type"):
        encode(PeerAddr("n", "h", 1, "v"))  # type: ignore[arg-type]


def test_wire_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_str must be a positive int"):
        WireLimits(max_str=0)
    with pytest.raises(ValueError, match="4-byte length prefix"):
        WireLimits(max_frame=2**32)


# -- schema compiler (types no current frame uses, and misuse) ---------------------------


@dataclass(frozen=True, slots=True)
class _AllTypes:
    flag: bool
    ratio: float
    blob: Annotated[bytes, MaxLen(4)]
    maybe: Annotated[str | None, MaxLen(3)]
    small: Annotated[int, Range(-5, 5)] | None


ALL_TYPES = compile_record(_AllTypes)


def test_schema_round_trips_other_types() -> None:
    for value in (
        _AllTypes(True, 0.5, b"\x00\xff", "abc", -5),
        _AllTypes(False, -1e300, b"", None, None),
    ):
        fields = ALL_TYPES.encode(value, DEFAULT_LIMITS)
        assert ALL_TYPES.decode(msgpack.unpackb(msgpack.packb(fields))) == value


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ([1, 0.5, b"", None, None], "_AllTypes.flag: expected bool, got int"),
        ([True, 1, b"", None, None], "_AllTypes.ratio: expected float, got int"),
        ([True, float("nan"), b"", None, None], "_AllTypes.ratio: non-finite float nan"),
        ([True, 0.5, b"12345", None, None], "_AllTypes.blob: 5 bytes exceeds the limit of 4"),
        ([True, 0.5, "ab", None, None], "_AllTypes.blob: expected bytes, got str"),
        ([True, 0.5, b"", "abcd", None], "_AllTypes.maybe: 4 characters exceeds the limit of 3"),
        ([True, 0.5, b"", None, 6], r"_AllTypes.small: 6 is outside -5\.\.5"),
    ],
)
def test_schema_refuses_bad_values(fields: list[object], match: str) -> None:
    with pytest.raises(WireError, match=match):
        ALL_TYPES.decode(fields)


def test_schema_is_compiled_once() -> None:
    assert compile_record(_AllTypes) is ALL_TYPES


@dataclass(frozen=True, slots=True)
class _Mutable:
    x: int


@dataclass(frozen=True, slots=True)
class _BadHint:
    x: list[int]


@dataclass(frozen=True, slots=True)
class _MisplacedRange:
    x: Annotated[str, Range(0, 1)]


@dataclass(frozen=True, slots=True)
class _WideUnion:
    x: int | str


def test_registration_refuses_misuse() -> None:
    with pytest.raises(ValueError, match="frame kind 2 is taken by Ping"):
        frame(FrameKind.PING)(_Mutable)
    with pytest.raises(TypeError, match="must be a frozen dataclass"):
        frame(250)(dataclass(type("Loose", (), {"__annotations__": {"x": int}})))
    with pytest.raises(TypeError, match="unsupported field type"):
        frame(251)(_BadHint)
    with pytest.raises(TypeError, match="Range applies to int fields only"):
        frame(252)(_MisplacedRange)
    with pytest.raises(TypeError, match=re.escape("only `X | None` unions")):
        frame(253)(_WideUnion)
    assert set(frame_types()) == set(FrameKind)


# -- stream framing ----------------------------------------------------------------------

STREAM_FRAMES = [EXAMPLES[FrameKind.HELLO], Ping(7, 8), EXAMPLES[FrameKind.PEER_EXCHANGE]]
STREAM = b"".join(pack_frame(f) for f in STREAM_FRAMES)


def test_pack_frame_is_a_length_prefix_and_the_envelope() -> None:
    body = encode(Ping(7, 8))
    assert pack_frame(Ping(7, 8)) == struct.pack(">I", len(body)) + body


def test_frames_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == STREAM_FRAMES
        assert decoder.buffered == 0


def test_frames_fed_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(STREAM)):
        out += decoder.feed(STREAM[i : i + 1])
    assert out == STREAM_FRAMES


def test_many_frames_in_one_chunk() -> None:
    pings = [Ping(i, i * 10) for i in range(5000)]
    decoder = FrameDecoder()
    assert decoder.feed(b"".join(pack_frame(p) for p in pings)) == pings
    assert decoder.buffered == 0


def test_partial_tail_is_kept() -> None:
    decoder = FrameDecoder()
    tail = pack_frame(Ping(1, 1))[:-1]
    assert decoder.feed(pack_frame(Ping(0, 0)) + tail) == [Ping(0, 0)]
    assert decoder.buffered == len(tail)
    assert decoder.feed(b"\x01") == [Ping(1, 1)]


def test_oversized_announcement_fails_before_buffering() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x10") == []
    with pytest.raises(WireError, match="announced frame of 1048577 bytes exceeds the 1048576"):
        decoder.feed(b"\x00\x01")
    assert decoder.buffered == 0


def test_custom_limits_apply_to_the_stream() -> None:
    decoder = FrameDecoder(WireLimits(max_frame=8))
    with pytest.raises(WireError, match="announced frame of 9 bytes exceeds the 8-byte limit"):
        decoder.feed(pack_frame(Goodbye("")) + struct.pack(">I", 9))


def test_zero_length_frame_is_an_error() -> None:
    with pytest.raises(WireError, match="zero-length frame"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


@pytest.mark.parametrize(
    "poison",
    [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", prefixed(b"\xc1"), prefixed(envelope(1, 99, []))],
    ids=["zero-length", "oversized", "not-msgpack", "unknown-kind"],
)
def test_decoder_is_poisoned_after_an_error(poison: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(WireError):
        decoder.feed(pack_frame(Ping(1, 1)) + poison)
    for _ in range(2):
        with pytest.raises(WireError, match="decoder closed after an earlier error"):
            decoder.feed(pack_frame(Ping(1, 1)))
    assert decoder.buffered == 0


def test_an_event_carries_at_most_four_payloads_of_64_kib() -> None:
    """Detached sealed blobs are bounded like bodies: a hostile peer cannot send more."""

    def frame(payloads: tuple[bytes, ...]) -> SyncEvents:
        event = WireEvent(seq=1, hlc=1, case_id=None, kind=3, body=b"", prev_hash=bytes(32),
                          payloads=payloads)  # fmt: skip
        return SyncEvents(round=1, offset=0, author="n-1", events=(event,), checkpoints=())

    assert decode(encode(frame((b"x",) * 4))) == frame((b"x",) * 4)
    with pytest.raises(WireError):
        encode(frame((b"x",) * 5))
    with pytest.raises(WireError):
        encode(frame((b"x" * (64 * 1024 + 1),)))
