"""Calls without a network: quality policy, encoders, media sources, signalling refusals.

Anything that needs ICE to connect runs in the lab tier (tests/lab/test_calls_lab.py);
here a leg at most creates an offer, which gathers host candidates but sends nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiortc.codecs import get_encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from waits import AsyncWaitUntil

from meshdesk.calls.codecs import (
    CappedVp8Encoder,
    EncoderProfile,
    SpeechOpusEncoder,
    encoder_profile,
    select_encoder,
)
from meshdesk.calls.manager import CallManager
from meshdesk.calls.media import TestPatternTrack, ToneTrack, open_media, parse_media
from meshdesk.calls.peer import ice_configuration
from meshdesk.calls.policy import QualityPolicy, Sample
from meshdesk.config import CallSettings, ConfigError, load_config
from meshdesk.errors import CallError, WireError
from meshdesk.identity import NodeId, NodeInfo, Role
from meshdesk.net.mesh import PeerEvent
from meshdesk.net.peers import PeerRecord, PeerState
from meshdesk.wire import (
    CallAnswer,
    CallDecline,
    CallLeave,
    CallMember,
    CallOffer,
    CallRoster,
    Frame,
    decode,
    encode,
)

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
CALL_ID = "019a3b4c-5d6e-7f80-9123-456789abcdef"


# -- quality policy ----------------------------------------------------------------------


def test_policy_degrades_after_three_bad_seconds_only_once() -> None:
    policy = QualityPolicy()
    bad = Sample(loss_pct=25.0, rtt_ms=40.0)
    assert policy.observe(bad) is None
    assert policy.observe(bad) is None
    reason = policy.observe(bad)
    assert reason is not None
    assert "loss 25 %" in reason
    assert policy.degraded
    assert policy.observe(bad) is None  # told once


def test_policy_forgives_a_blip_and_watches_rtt() -> None:
    policy = QualityPolicy()
    bad, good = Sample(loss_pct=30.0, rtt_ms=None), Sample(loss_pct=1.0, rtt_ms=20.0)
    for sample in (bad, bad, good, bad, bad, good):
        assert policy.observe(sample) is None
    slow = Sample(loss_pct=0.0, rtt_ms=900.0)
    assert [policy.observe(slow) for _ in range(3)][-1] == "RTT 900 ms > 500 ms for 3 s"


def test_five_percent_loss_keeps_video() -> None:
    policy = QualityPolicy()
    assert all(policy.observe(Sample(5.0, 30.0)) is None for _ in range(20))


# -- encoders ----------------------------------------------------------------------------


def test_opus_at_speech_rate_and_vp8_capped_only_inside_the_profile() -> None:
    with encoder_profile(EncoderProfile(opus_bps=24_000, video_max_bps=600_000)):
        opus, vp8 = select_encoder(OPUS), select_encoder(VP8)
    assert isinstance(opus, SpeechOpusEncoder)
    assert opus.codec.bit_rate == 24_000
    assert isinstance(vp8, CappedVp8Encoder)
    vp8.target_bitrate = 1_500_000  # what a receiver estimate (REMB) may ask for
    assert vp8.target_bitrate == 600_000
    vp8.target_bitrate = 300_000
    assert vp8.target_bitrate == 300_000
    # Outside a meshdesk call aiortc's own encoders are untouched.
    plain = select_encoder(OPUS)
    assert type(plain) is OpusEncoder
    assert plain.codec.bit_rate == 96_000
    assert type(select_encoder(VP8)) is Vp8Encoder


def test_the_sender_module_uses_the_profile_aware_factory() -> None:
    import aiortc.rtcrtpsender as sender_module

    with encoder_profile():
        # aiortc imports get_encoder without re-exporting it, so read the module's namespace.
        assert isinstance(vars(sender_module)["get_encoder"](OPUS), SpeechOpusEncoder)
    assert type(get_encoder(OPUS)) is OpusEncoder


def test_ice_configuration_names_no_stun_or_turn_server() -> None:
    # aiortc's default (configuration None) would ask stun.l.google.com.
    assert ice_configuration().iceServers == []


# -- media -------------------------------------------------------------------------------


async def test_synthetic_media_is_a_moving_test_pattern_and_a_tone() -> None:
    video, audio = TestPatternTrack("避難所 hq-1"), ToneTrack()
    first, second = await video.recv(), await video.recv()
    assert (first.width, first.height) == (640, 480)
    # The clock and frame counter change the picture every frame.
    assert bytes(first.planes[0]) != bytes(second.planes[0])
    tone = await audio.recv()
    assert tone.sample_rate == 48000
    assert tone.samples == 960
    assert any(bytes(tone.planes[0]))  # not silence
    video.stop()
    audio.stop()


def test_audio_only_synthetic_media_has_no_video() -> None:
    media = open_media("synthetic", "a", audio_only=True)
    assert media.video is None
    media.close()


@pytest.mark.parametrize("spec", ["", "camera", "file:", "synthetic "])
def test_bad_media_spec_is_one_clear_error(spec: str) -> None:
    with pytest.raises(CallError, match="media must be"):
        parse_media(spec)


def test_missing_media_file_is_a_call_error(tmp_path: Path) -> None:
    with pytest.raises(CallError, match="does not exist"):
        open_media(f"file:{tmp_path / 'none.mp4'}", "a", audio_only=False)


def test_calls_config_media_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[calls]\nauto_accept = true\nmedia = "synthetic"\n')
    assert load_config(path).calls == CallSettings(auto_accept=True, media="synthetic")
    path.write_text('[calls]\nmedia = "webcam"\n')
    with pytest.raises(ConfigError, match=r"calls\.media"):
        load_config(path)


def test_an_oversized_sdp_is_refused_by_the_codec() -> None:
    offer = CallOffer(CALL_ID, None, False, "n-1", ("n-1",), False, "v=0\r\n" * 8000)
    with pytest.raises(WireError):
        encode(offer)
    small = CallOffer(CALL_ID, None, True, "n-1", ("n-1",), False, "v=0\r\n")
    assert decode(encode(small)) == small


# -- signalling --------------------------------------------------------------------------


def _info(seed: int, name: str) -> NodeInfo:
    return NodeInfo(
        node_id=NodeId.from_public_bytes(bytes([seed]) * 32),
        name=name,
        site="本庁",
        role=Role.CENTER,
        departments=(),
        deployment="デモ市",
        serial=seed,
    )


ME, PEER, OTHER = _info(1, "me"), _info(2, "peer"), _info(3, "other")


@dataclass
class FakeLink:
    """A :class:`~meshdesk.calls.CallLink` that records what it was sent."""

    peer_id: str
    remote: str = "127.0.0.1:7420"
    sent: list[Frame] = field(default_factory=list)

    async def send(self, frame: Frame) -> None:
        self.sent.append(frame)

    def __repr__(self) -> str:
        return f"<FakeLink {self.peer_id}>"


@pytest.fixture
async def manager() -> AsyncIterator[tuple[CallManager, dict[str, FakeLink]]]:
    links = {str(n.node_id): FakeLink(str(n.node_id)) for n in (PEER, OTHER)}
    records = [
        PeerRecord(node_id=str(n.node_id), name=n.name, site=n.site, state=PeerState.LINKED)
        for n in (PEER, OTHER)
    ]
    settings = CallSettings(auto_accept=False, media="synthetic")
    async with CallManager(
        ME,
        settings,
        link_of=links.get,
        peers=lambda: records,
    ) as calls:
        yield calls, links


def _offer(
    sender: NodeInfo,
    *,
    call_id: str = CALL_ID,
    host: str | None = None,
    members: tuple[str, ...] | None = None,
    join: bool = False,
    sdp: str = "v=0\r\n",
) -> CallOffer:
    """An audio call offer from ``sender``, by default hosted by it and naming only it."""
    sender_id = str(sender.node_id)
    return CallOffer(
        call_id=call_id,
        case_id=None,
        audio_only=True,
        host=host or sender_id,
        members=members or (sender_id,),
        join=join,
        sdp=sdp,
    )


async def test_an_offer_that_does_not_list_its_sender_is_declined(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    calls, links = manager
    link = links[str(PEER.node_id)]
    # PEER forwards an offer that claims to come from OTHER only.
    await calls.on_frame(link, _offer(PEER, members=(str(OTHER.node_id),)))
    assert calls.calls() == []
    assert link.sent == [CallDecline(CALL_ID, "offer does not list its sender")]


async def test_join_for_an_unknown_call_and_a_bad_call_id_are_declined(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    calls, links = manager
    link = links[str(PEER.node_id)]
    await calls.on_frame(link, _offer(PEER, join=True))
    await calls.on_frame(link, _offer(PEER, call_id="not-a-uuid"))
    assert calls.calls() == []
    assert link.sent == [
        CallDecline(CALL_ID, "no such call here"),
        CallDecline("not-a-uuid", "malformed call id"),
    ]


async def test_an_incoming_call_rings_until_answered_and_a_decline_is_sent(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    calls, links = manager
    link = links[str(PEER.node_id)]
    await calls.on_frame(link, _offer(PEER))
    (ringing,) = calls.calls()
    assert ringing["state"] == "ringing"
    assert ringing["direction"] == "incoming"
    assert link.sent == []  # auto_accept is off: the operator decides
    # A second call while one rings is refused as busy.
    await calls.on_frame(
        links[str(OTHER.node_id)],
        _offer(OTHER, call_id="019a3b4c-5d6e-7f80-9123-456789abcdee"),
    )
    assert links[str(OTHER.node_id)].sent == [
        CallDecline("019a3b4c-5d6e-7f80-9123-456789abcdee", "busy in another call")
    ]
    ended = await calls.answer(CALL_ID, False)
    assert ended["state"] == "ended"
    assert ended["reason"] == "declined"
    assert link.sent == [CallDecline(CALL_ID, "declined")]
    with pytest.raises(CallError, match="not ringing"):
        await calls.answer(CALL_ID, True)


async def test_frames_from_a_node_not_in_the_call_change_nothing(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    calls, links = manager
    await calls.on_frame(links[str(PEER.node_id)], _offer(PEER))
    before = calls.calls()
    await calls.on_frame(links[str(OTHER.node_id)], CallAnswer(CALL_ID, "v=0\r\n"))
    assert calls.calls() == before


async def test_an_unusable_offer_is_declined_on_accept(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    calls, links = manager
    link = links[str(PEER.node_id)]
    await calls.on_frame(link, _offer(PEER, sdp="this is not SDP"))
    with pytest.raises(CallError, match="unusable offer"):
        await calls.answer(CALL_ID, True)
    (ended,) = calls.calls()
    assert ended["state"] == "ended"
    assert isinstance(link.sent[-1], CallDecline)


async def test_calling_an_unlinked_or_unknown_node_is_refused(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    calls, links = manager
    with pytest.raises(CallError, match="no known node"):
        await calls.start("nobody", case_id=None, audio_only=True, media="synthetic")
    del links[str(PEER.node_id)]
    with pytest.raises(CallError, match="not linked"):
        await calls.start("peer", case_id=None, audio_only=True, media="synthetic")
    assert calls.calls() == []


async def test_link_down_while_ringing_ends_the_call(
    manager: tuple[CallManager, dict[str, FakeLink]], async_wait_until: AsyncWaitUntil
) -> None:
    calls, links = manager
    await calls.on_frame(links[str(PEER.node_id)], _offer(PEER))
    calls.on_peer_event(PeerEvent("down", {"node_id": str(PEER.node_id)}))
    # The end runs as a task of the manager.
    await async_wait_until(lambda: calls.calls()[0]["state"] == "ended", 5, message="call ended")
    (ended,) = calls.calls()
    assert ended["state"] == "ended"
    assert "link lost" in str(ended["reason"])


def test_bench_call_refuses_clearly_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshdesk.cli import main

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["bench", "call", "--json"]) == 1


# -- relayed calls (signalling only) -----------------------------------------------------

X, Y = _info(4, "x"), _info(5, "y")
GROUP = tuple(str(n.node_id) for n in (PEER, OTHER, X, Y))


async def test_an_offer_over_the_mesh_limit_is_taken_only_from_the_host(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    calls, links = manager
    other = links[str(OTHER.node_id)]
    # OTHER offers a five-node call that PEER hosts: only a host relays.
    await calls.on_frame(other, _offer(OTHER, host=str(PEER.node_id), members=GROUP))
    assert calls.calls() == []
    assert other.sent == [CallDecline(CALL_ID, "only the host relays")]
    # Past the group limit nobody can.
    crowd = GROUP + tuple(str(_info(10 + i, f"n{i}").node_id) for i in range(4))
    await calls.on_frame(links[str(PEER.node_id)], _offer(PEER, members=crowd))
    assert links[str(PEER.node_id)].sent == [CallDecline(CALL_ID, "call is over the group limit")]


async def test_the_hosts_roster_rules_a_relayed_call_and_its_leaving_ends_it(
    manager: tuple[CallManager, dict[str, FakeLink]], async_wait_until: AsyncWaitUntil
) -> None:
    calls, links = manager
    host = links[str(PEER.node_id)]
    await calls.on_frame(host, _offer(PEER, members=GROUP))
    (ringing,) = calls.calls()
    assert ringing["relayed"] is True
    assert ringing["host"] == str(PEER.node_id)

    members = (
        CallMember(str(PEER.node_id), "connected"),
        CallMember(str(ME.node_id), "connecting"),
        CallMember(str(X.node_id), "connected"),
        CallMember(str(Y.node_id), "connecting"),
    )  # OTHER is no longer listed: it left
    # A roster from a non-host changes no one's state.
    await calls.on_frame(links[str(OTHER.node_id)], CallRoster(CALL_ID, str(PEER.node_id), members))
    states = {p["node_id"]: p["state"] for p in calls.calls()[0]["participants"]}
    assert states[str(OTHER.node_id)] == "invited"
    await calls.on_frame(host, CallRoster(CALL_ID, str(PEER.node_id), members))
    states = {p["node_id"]: p["state"] for p in calls.calls()[0]["participants"]}
    assert states[str(OTHER.node_id)] == "left"
    assert states[str(X.node_id)] == "connected"
    assert states[str(Y.node_id)] == "connecting"

    # Another member leaving does not end it; the host leaving does, saying so.
    await calls.on_frame(links[str(OTHER.node_id)], CallLeave(CALL_ID, "hung up"))
    assert calls.calls()[0]["state"] == "ringing"
    await calls.on_frame(host, CallLeave(CALL_ID, "hung up"))
    # The end runs as a task of the manager.
    await async_wait_until(lambda: calls.calls()[0]["state"] == "ended", 5, message="call ended")
    (ended,) = calls.calls()
    assert ended["state"] == "ended"
    assert "the host peer left" in ended["reason"]


async def test_a_member_taken_for_gone_that_then_says_it_left_is_shown_as_left(
    manager: tuple[CallManager, dict[str, FakeLink]],
) -> None:
    """A new host may announce the old one gone before the old host's own leave
    arrives (a busy link): its word, when it comes, says what happened."""
    calls, links = manager
    host = links[str(PEER.node_id)]
    await calls.on_frame(host, _offer(PEER, members=GROUP))
    members = (
        CallMember(str(PEER.node_id), "connected"),
        CallMember(str(ME.node_id), "connecting"),
        CallMember(str(OTHER.node_id), "dropped"),
        CallMember(str(X.node_id), "connected"),
        CallMember(str(Y.node_id), "connecting"),
    )
    await calls.on_frame(host, CallRoster(CALL_ID, str(PEER.node_id), members))
    states = {p["node_id"]: p["state"] for p in calls.calls()[0]["participants"]}
    assert states[str(OTHER.node_id)] == "dropped"
    await calls.on_frame(links[str(OTHER.node_id)], CallLeave(CALL_ID, "hung up"))
    states = {p["node_id"]: p["state"] for p in calls.calls()[0]["participants"]}
    assert states[str(OTHER.node_id)] == "left"
    assert calls.calls()[0]["state"] == "ringing"  # the call goes on
