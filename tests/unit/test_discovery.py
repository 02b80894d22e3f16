"""Discovery without a network: names, TXT, hostile adverts, interface choice, lifecycle.

Nothing here opens a socket. python-zeroconf is replaced by fakes where the
lifecycle is tested; the real thing runs in the lab tests (network namespaces).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any, ClassVar

import ifaddr
import pytest
from zeroconf import (
    IPVersion,
    NonUniqueNameException,
    RecordUpdate,
    ServiceInfo,
    ServiceStateChange,
)
from zeroconf._dns import DNSAddress, DNSPointer, DNSService, DNSText
from zeroconf._protocol.incoming import DNSIncoming

from meshdesk.config import Endpoint
from meshdesk.errors import ConfigError, LinkError
from meshdesk.identity import NodeId, NodeInfo, Role
from meshdesk.net import discovery as discovery_module
from meshdesk.net._mdns import (
    INSTANCE_MAX_BYTES,
    SERVICE_TYPE,
    TXT_ITEM_MAX_BYTES,
    AnswerListener,
    BadAdvert,
    build_txt,
    host_name,
    instance_name,
    parse_txt,
    service_query,
)
from meshdesk.net.channel import PeerAddress
from meshdesk.net.discovery import Discovery, Sighting, StaticDiscovery, ZeroconfDiscovery
from meshdesk.net.interfaces import Interface, read_sys_net, select_interfaces


def _node_id(seed: str) -> NodeId:
    return NodeId.from_public_bytes(hashlib.sha256(seed.encode()).digest())


def _info(name: str = "本庁 災害対策本部", *, seed: str = "me", site: str = "市役所") -> NodeInfo:
    return NodeInfo(
        node_id=_node_id(seed),
        name=name,
        site=site,
        role=Role.HQ,
        departments=(),
        deployment="テスト市",
        serial=1,
    )


def _raw_txt(*items: bytes) -> bytes:
    """A TXT record on the wire: length-prefixed strings."""
    return b"".join(bytes([len(item)]) + item for item in items)


def _good_items(seed: str = "peer", port: int = 7420) -> dict[bytes, bytes]:
    return {
        b"id": str(_node_id(seed)).encode(),
        b"name": "避難所 北小学校".encode(),
        b"site": "北小".encode(),
        b"role": b"desk",
        b"proto": b"1",
        b"port": str(port).encode(),
    }


def _service(
    instance: str,
    items: dict[bytes, bytes] | bytes,
    *,
    port: int = 7420,
    addresses: tuple[str, ...] = ("10.231.0.12",),
) -> ServiceInfo:
    text = items if isinstance(items, bytes) else _wire(items)
    return ServiceInfo(
        SERVICE_TYPE,
        f"{instance}.{SERVICE_TYPE}",
        port=port,
        properties=text,
        server="peer.local.",
        parsed_addresses=list(addresses),
    )


# -- instance names and TXT ---------------------------------------------------------------


def test_instance_name_is_name_and_short_id() -> None:
    info = _info("本庁 災害対策本部")
    assert instance_name(info) == f"本庁 災害対策本部 ({info.node_id.short})"


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("避難所" * 20, "避難所" * 5 + "避難"),  # 3-byte characters: 17 fit in 53 bytes
        ("a" * 53, "a" * 53),  # exactly fits
        ("a" * 54, "a" * 53),
        ("a" * 51 + "é", "a" * 51 + "é"),  # 2-byte character ends exactly at the limit
        ("a" * 52 + "é", "a" * 52),  # it would straddle the limit: dropped whole
        ("a" * 50 + "😀😀", "a" * 50),  # 4-byte characters
        ("a" * 52 + "q\u0301z", "a" * 52),  # a base character is not split from its mark
        ("長い名前 " * 5, "長い名前 長い名前 長い名前 長い名前"),  # no trailing space
    ],
    ids=["kanji", "fits", "ascii", "2-byte-fits", "2-byte", "4-byte", "combining", "space"],
)
def test_instance_name_is_cut_at_63_bytes_on_a_character_boundary(name: str, kept: str) -> None:
    info = _info(name)
    result = instance_name(info)
    suffix = f" ({info.node_id.short})"
    assert len(result.encode("utf-8")) <= INSTANCE_MAX_BYTES
    assert result == kept + suffix
    assert len(suffix.encode()) == 10  # so the name keeps 53 bytes


def test_instance_name_has_no_dots_or_control_characters() -> None:
    info = _info("Sta. 3\u3000 本部\u200b")
    result = instance_name(info)
    assert "." not in result  # python-zeroconf would split the label at a dot
    assert result == f"Sta· 3 本部 ({info.node_id.short})"


def test_host_name_is_a_valid_dns_label() -> None:
    node_id = _node_id("x")
    assert host_name(node_id) == f"meshdesk-{node_id.short.lower()}.local."


def test_txt_round_trips_through_the_wire_format_with_japanese_labels() -> None:
    info = _info("本庁 災害対策本部", site="市役所 本庁舎")
    txt = build_txt(info, port=7420, proto=1)
    assert set(txt) == {"id", "name", "site", "role", "proto", "port"}
    sent = ServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}", port=7420, properties=txt)
    received = ServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}", port=7420, properties=sent.text)
    advert = parse_txt(received.properties, srv_port=7420)
    assert advert.node_id == info.node_id
    assert (advert.name, advert.site, advert.role) == ("本庁 災害対策本部", "市役所 本庁舎", "hq")
    assert (advert.proto, advert.port) == (1, 7420)


def test_txt_value_too_long_for_one_string_is_cut_on_a_character_boundary() -> None:
    info = _info("😀" * 64)  # 256 bytes: "name=" + this exceeds a TXT string
    txt = build_txt(info, port=7420, proto=1)
    assert len(("name=" + txt["name"]).encode()) <= TXT_ITEM_MAX_BYTES
    assert txt["name"] == "😀" * 62
    sent = ServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}", port=7420, properties=txt)
    assert parse_txt(sent.properties, srv_port=7420).name == "😀" * 62


def test_parse_txt_accepts_an_id_as_typed() -> None:
    items = _good_items()
    canonical = items[b"id"].decode()
    items[b"id"] = canonical.lower().replace("-", " ").encode()
    assert str(parse_txt(items, srv_port=7420).node_id) == canonical


def _without(key: bytes) -> dict[bytes, bytes | None]:
    items: dict[bytes, bytes | None] = dict(_good_items())
    del items[key]
    return items


def _with(key: bytes, value: bytes | None) -> dict[bytes, bytes | None]:
    items: dict[bytes, bytes | None] = dict(_good_items())
    items[key] = value
    return items


def _typo_id() -> bytes:
    text = str(_node_id("peer"))
    wrong = "A" if text[3] != "A" else "B"
    return (text[:3] + wrong + text[4:]).encode()


HOSTILE_TXT: list[tuple[str, dict[bytes, bytes | None], str]] = [
    ("missing id", _without(b"id"), "'id' is missing"),
    ("missing name", _without(b"name"), "'name' is missing"),
    ("missing port", _without(b"port"), "'port' is missing"),
    ("key without value", _with(b"site", None), "'site' is missing"),
    ("id not an id", _with(b"id", b"hello"), "not a node id"),
    ("id with a typo", _with(b"id", _typo_id()), "not a node id"),
    ("id not utf-8", _with(b"id", b"\xff\xfe"), "not UTF-8"),
    ("name not utf-8", _with(b"name", "本庁".encode("shift_jis")), "not UTF-8"),
    ("name oversized", _with(b"name", b"x" * 200), "oversized"),
    ("value over 255 bytes", _with(b"site", b"x" * 300), "oversized"),
    ("name empty", _with(b"name", b"   "), "not a valid label"),
    ("name with control", _with(b"name", b"a\x1b[31mb"), "not a valid label"),
    ("role unknown shape", _with(b"role", "管理".encode()), "not a role"),
    ("proto not a number", _with(b"proto", b"one"), "'proto' must be a number"),
    ("proto zero", _with(b"proto", b"0"), "'proto' must be a number"),
    ("proto signed", _with(b"proto", b"+1"), "'proto' must be a number"),
    ("proto huge", _with(b"proto", b"9" * 40), "'proto' must be a number"),
    ("port out of range", _with(b"port", b"70000"), "'port' must be a number"),
    ("port not ascii digits", _with(b"port", "７４２０".encode()), "'port' must be a number"),
    ("port disagrees with srv", _with(b"port", b"7421"), "disagrees with the SRV port"),
]


@pytest.mark.parametrize(
    ("items", "reason"), [(i, r) for _, i, r in HOSTILE_TXT], ids=[c for c, _, _ in HOSTILE_TXT]
)
def test_parse_txt_refuses_hostile_records(items: dict[bytes, bytes | None], reason: str) -> None:
    with pytest.raises(BadAdvert, match=reason):
        parse_txt(items, srv_port=7420)


# -- the refresh query and its listener -----------------------------------------------------


def test_refresh_query_asks_for_every_peer_without_known_answers() -> None:
    (packet,) = service_query().packets()
    message = DNSIncoming(packet)
    assert message.is_query()
    assert [(q.name, q.type) for q in message.questions] == [(SERVICE_TYPE, 12)]
    assert message.answers() == []


def test_answer_listener_reports_each_answering_service_once() -> None:
    names: list[str] = []
    listener = AnswerListener(names.append)
    a, b = f"A.{SERVICE_TYPE}", f"b.{SERVICE_TYPE}"
    batch = [
        DNSPointer(SERVICE_TYPE, 12, 1, 4500, a),
        DNSService(a, 33, 0x8001, 120, 0, 0, 7420, "a.local."),
        DNSText(b, 16, 0x8001, 4500, b"\x04id=x"),
        DNSPointer("_other._tcp.local.", 12, 1, 4500, "c._other._tcp.local."),
        DNSAddress("a.local.", 1, 0x8001, 120, bytes([10, 0, 0, 1])),
    ]
    listener.async_update_records(None, 0.0, [RecordUpdate(r, None) for r in batch])  # type: ignore[arg-type]
    assert names == []  # only once the cache holds the batch
    listener.async_update_records_complete()
    assert sorted(names) == [a, b]
    listener.async_update_records(None, 0.0, [RecordUpdate(batch[1], batch[1])])  # type: ignore[arg-type]
    listener.async_update_records_complete()
    assert len(names) == 2  # one report per refresh


# -- ZeroconfDiscovery's handling of what the browser reports (no sockets) ---------------------


class Recorder:
    def __init__(self) -> None:
        self.found: list[Sighting] = []
        self.lost: list[NodeId] = []


def _discovery(recorder: Recorder, **kwargs: Any) -> ZeroconfDiscovery:
    return ZeroconfDiscovery(
        _info(),
        7420,
        [Interface("eth0", ("10.231.0.11",))],
        on_found=recorder.found.append,
        on_lost=recorder.lost.append,
        **kwargs,
    )


def _removed(d: ZeroconfDiscovery, instance: str) -> None:
    d._on_state_change(
        zeroconf=None,  # type: ignore[arg-type]
        service_type=SERVICE_TYPE,
        name=f"{instance}.{SERVICE_TYPE}",
        state_change=ServiceStateChange.Removed,
    )


def test_a_resolved_service_becomes_a_sighting_once_until_it_changes() -> None:
    rec = Recorder()
    d = _discovery(rec)
    d._update(f"peer.{SERVICE_TYPE}", _service("peer", _good_items()))
    assert rec.found == [
        Sighting(
            node_id=_node_id("peer"),
            name="避難所 北小学校",
            site="北小",
            role="desk",
            proto=1,
            addresses=(PeerAddress("10.231.0.12", 7420, "mdns"),),
        )
    ]
    d._update(f"peer.{SERVICE_TYPE}", _service("peer", _good_items()))
    assert len(rec.found) == 1  # nothing new
    moved = _service("peer", _good_items(), addresses=("10.231.0.99", "127.0.0.1", "0.0.0.0"))
    d._update(f"peer.{SERVICE_TYPE}", moved)
    assert rec.found[-1].addresses == (PeerAddress("10.231.0.99", 7420, "mdns"),)
    _removed(d, "peer")
    assert rec.lost == [_node_id("peer")]
    _removed(d, "peer")  # twice: nothing more
    assert rec.lost == [_node_id("peer")]


def test_a_refresh_reports_a_peer_again_even_unchanged() -> None:
    rec = Recorder()
    d = _discovery(rec)
    d._update(f"peer.{SERVICE_TYPE}", _service("peer", _good_items()))
    d._forced.add(f"peer.{SERVICE_TYPE}".lower())
    d._update(f"Peer.{SERVICE_TYPE}", _service("peer", _good_items()))  # names are caseless
    assert len(rec.found) == 2


def _wire(items: Mapping[bytes, bytes | None]) -> bytes:
    return _raw_txt(*(k if v is None else k + b"=" + v for k, v in items.items()))


# What can arrive on the wire (a TXT string holds at most 255 bytes), plus garbage.
WIRE_HOSTILE: list[tuple[str, bytes]] = [
    *((case, _wire(items)) for case, items, _ in HOSTILE_TXT if b"x" * 300 not in items.values()),
    ("empty TXT", b"\x00"),
    ("truncated string", b"\x50id=ABC"),
    ("first duplicate wins", _raw_txt(b"id=bad", *_wire(_good_items()).split(b"\x00"))),
]


@pytest.mark.parametrize("text", [t for _, t in WIRE_HOSTILE], ids=[c for c, _ in WIRE_HOSTILE])
def test_hostile_services_are_ignored_and_warned_about_once(
    text: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    d = _discovery(rec)
    with caplog.at_level(logging.DEBUG, logger="meshdesk.net.discovery"):
        for _ in range(3):
            d._update(f"evil.{SERVICE_TYPE}", _service("evil", text))
    assert rec.found == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "evil" in warnings[0].getMessage()
    _removed(d, "evil")  # never found, so never lost
    assert rec.lost == []


def test_a_service_without_a_dialable_ipv4_address_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    d = _discovery(rec)
    with caplog.at_level(logging.WARNING, logger="meshdesk.net.discovery"):
        d._update(f"p.{SERVICE_TYPE}", _service("p", _good_items(), addresses=("127.0.0.1",)))
        d._update(f"q.{SERVICE_TYPE}", _service("q", _good_items(), addresses=("fe80::1",)))
    assert rec.found == []
    assert "no IPv4 address" in caplog.text


def test_own_id_is_ignored_under_any_name() -> None:
    rec = Recorder()
    d = _discovery(rec)
    own = _good_items()
    own[b"id"] = str(_info().node_id).encode()
    d._update(f"impostor.{SERVICE_TYPE}", _service("impostor", own))
    assert rec.found == []


def test_a_name_that_changes_node_id_loses_the_old_node() -> None:
    rec = Recorder()
    d = _discovery(rec)
    d._update(f"x.{SERVICE_TYPE}", _service("x", _good_items("a")))
    d._update(f"y.{SERVICE_TYPE}", _service("y", _good_items("b")))
    d._update(f"x.{SERVICE_TYPE}", _service("x", _good_items("c")))
    assert [s.node_id for s in rec.found] == [_node_id("a"), _node_id("b"), _node_id("c")]
    assert rec.lost == [_node_id("a")]
    # A node seen under two names is lost only when both are gone.
    d._update(f"z.{SERVICE_TYPE}", _service("z", _good_items("b")))
    _removed(d, "y")
    assert rec.lost == [_node_id("a")]
    _removed(d, "z")
    assert rec.lost == [_node_id("a"), _node_id("b")]


def test_a_failing_callback_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def boom(_: object) -> None:
        raise RuntimeError("bug in the caller")

    d = ZeroconfDiscovery(
        _info(), 7420, [Interface("eth0", ("10.231.0.11",))], on_found=boom, on_lost=boom
    )
    with caplog.at_level(logging.ERROR, logger="meshdesk.net.discovery"):
        d._update(f"p.{SERVICE_TYPE}", _service("p", _good_items()))
        _removed(d, "p")
    failures = [r for r in caplog.records if "callback" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info and "bug in the caller" in str(r.exc_info[1]) for r in failures)


@pytest.mark.parametrize(
    ("interfaces", "port", "error"),
    [
        ([], 7420, ConfigError),
        ([Interface("eth0", ())], 7420, ConfigError),
        ([Interface("eth0", ("10.0.0.1",))], 0, ValueError),
    ],
)
def test_constructor_refuses_nothing_to_bind_or_a_bad_port(
    interfaces: list[Interface], port: int, error: type[Exception]
) -> None:
    rec = Recorder()
    with pytest.raises(error):
        ZeroconfDiscovery(
            _info(), port, interfaces, on_found=rec.found.append, on_lost=rec.lost.append
        )


# -- lifecycle, with python-zeroconf replaced by fakes ---------------------------------------


class FakeZeroconf:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.loop = asyncio.get_running_loop()


class FakeAsyncZeroconf:
    instances: ClassVar[list[FakeAsyncZeroconf]] = []
    conflict: ClassVar[bool] = False

    def __init__(self, *, interfaces: Any, ip_version: Any) -> None:
        self.interfaces = interfaces
        self.ip_version = ip_version
        self.calls: list[str] = ["open"]
        self.zeroconf = FakeZeroconf(self.calls)
        FakeAsyncZeroconf.instances.append(self)

    async def async_register_service(self, info: ServiceInfo) -> asyncio.Future[None]:
        self.calls.append(f"register {info.name}")
        await asyncio.sleep(0)
        if self.conflict:
            raise NonUniqueNameException
        return _done()

    async def async_unregister_service(self, info: ServiceInfo) -> asyncio.Future[None]:
        self.calls.append("goodbye")
        return _done()

    async def async_close(self) -> None:
        self.calls.append("close")


class FakeBrowser:
    def __init__(self, zc: FakeZeroconf, type_: str, handlers: list[Callable[..., None]]) -> None:
        assert type_ == SERVICE_TYPE
        assert handlers
        self.calls = zc.calls
        self.calls.append("browse")

    async def async_cancel(self) -> None:
        self.calls.append("stop browsing")


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


@pytest.fixture
def fake_zeroconf(monkeypatch: pytest.MonkeyPatch) -> type[FakeAsyncZeroconf]:
    FakeAsyncZeroconf.instances = []
    FakeAsyncZeroconf.conflict = False
    monkeypatch.setattr(discovery_module, "AsyncZeroconf", FakeAsyncZeroconf)
    monkeypatch.setattr(discovery_module, "AsyncServiceBrowser", FakeBrowser)
    return FakeAsyncZeroconf


async def test_binds_the_chosen_ipv4_addresses_browses_first_and_closes_once(
    fake_zeroconf: type[FakeAsyncZeroconf],
) -> None:
    rec = Recorder()
    interfaces = [Interface("eth0", ("10.231.0.11",)), Interface("wlan0", ("192.168.8.3",))]
    d = ZeroconfDiscovery(
        _info(), 7420, interfaces, on_found=rec.found.append, on_lost=rec.lost.append
    )
    discovery: Discovery = d  # it is a Discovery
    async with discovery:
        (zc,) = fake_zeroconf.instances
        assert zc.interfaces == ["10.231.0.11", "192.168.8.3"]  # never "all"
        assert zc.ip_version is IPVersion.V4Only
        assert zc.calls == ["open", "browse", f"register {d.instance}.{SERVICE_TYPE}"]
    await d.aclose()
    await asyncio.gather(d.aclose(), d.aclose())
    assert zc.calls[3:] == ["stop browsing", "goodbye", "close"]
    with pytest.raises(RuntimeError):
        await d.__aenter__()


async def test_a_name_conflict_is_a_link_error_and_closes_everything(
    fake_zeroconf: type[FakeAsyncZeroconf],
) -> None:
    fake_zeroconf.conflict = True
    rec = Recorder()
    d = _discovery(rec)
    with pytest.raises(LinkError, match="running twice"):
        await d.__aenter__()
    (zc,) = fake_zeroconf.instances
    assert zc.calls[-2:] == ["stop browsing", "close"]  # no goodbye for a name never held


async def test_closing_before_starting_is_fine(fake_zeroconf: type[FakeAsyncZeroconf]) -> None:
    d = _discovery(Recorder())
    await d.aclose()
    await d.refresh()  # not running: a no-op
    assert fake_zeroconf.instances == []


# -- static discovery ------------------------------------------------------------------------


async def test_static_discovery_lists_configured_peers() -> None:
    endpoints = [Endpoint("10.0.0.5", 7420), Endpoint("hq.example", 7500)]
    static = StaticDiscovery([*endpoints, Endpoint("10.0.0.5", 7420)])
    discovery: Discovery = static
    async with discovery:
        await discovery.refresh()
    assert static.addresses == (
        PeerAddress("10.0.0.5", 7420, "static"),
        PeerAddress("hq.example", 7500, "static"),
    )
    assert StaticDiscovery([]).addresses == ()


def test_sighting_is_frozen() -> None:
    sighting = Sighting(_node_id("a"), "n", "s", "desk", 1, ())
    with pytest.raises(FrozenInstanceError):
        sighting.name = "other"  # type: ignore[misc]


# -- interface selection with fake adapters ----------------------------------------------------


def _adapter(name: str, *ips: str | tuple[str, int, int]) -> ifaddr.Adapter:
    return ifaddr.Adapter(name, name, [ifaddr.IP(ip, 24, name) for ip in ips])


ADAPTERS = [
    _adapter("lo", "127.0.0.1", ("::1", 0, 0)),
    _adapter("wlan0", "192.168.8.3", ("fe80::1", 0, 3)),
    _adapter("eth0", "10.231.0.11", "10.231.0.11", "169.254.7.7"),
    _adapter("eth1", ("fe80::2", 0, 4)),  # IPv6 only
    _adapter("docker0", "172.17.0.1"),  # up, no carrier
    _adapter("eth2", "10.9.0.1"),  # administratively down
    _adapter("tun0", "10.8.0.2"),  # no multicast
    _adapter("dummy0", "10.7.0.1"),  # operstate "unknown" counts as up
]
SYS = {
    ("lo", "flags"): "0x9",
    ("lo", "operstate"): "unknown",
    ("wlan0", "flags"): "0x1003",
    ("wlan0", "operstate"): "up",
    ("eth0", "flags"): "0x1003",
    ("eth0", "operstate"): "up",
    ("eth1", "flags"): "0x1003",
    ("eth1", "operstate"): "up",
    ("docker0", "flags"): "0x1003",
    ("docker0", "operstate"): "down",
    ("eth2", "flags"): "0x1002",
    ("eth2", "operstate"): "down",
    ("tun0", "flags"): "0x91",  # UP|POINTOPOINT|NOARP (wireguard)
    ("tun0", "operstate"): "unknown",
    ("dummy0", "flags"): "0x10c3",
    ("dummy0", "operstate"): "unknown",
}


def _select(names: list[str], sys: dict[tuple[str, str], str] = SYS) -> list[Interface]:
    return select_interfaces(
        names, adapters=lambda: ADAPTERS, read_sys=lambda name, attr: sys.get((name, attr))
    )


def test_automatic_choice_takes_up_non_loopback_multicast_ipv4_interfaces() -> None:
    assert _select([]) == [
        Interface("dummy0", ("10.7.0.1",)),
        Interface("eth0", ("10.231.0.11", "169.254.7.7")),
        Interface("wlan0", ("192.168.8.3",)),
    ]


def test_explicit_names_are_taken_as_given_in_order() -> None:
    assert _select(["wlan0", "eth2", "wlan0"]) == [
        Interface("wlan0", ("192.168.8.3",)),
        Interface("eth2", ("10.9.0.1",)),  # down, but the operator asked for it
    ]


def test_an_unknown_interface_is_a_config_error_listing_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        _select(["eth0", "wlan9"])
    assert str(info.value) == (
        "interface 'wlan9' does not exist (available: docker0, dummy0, eth0, eth2, tun0, wlan0)"
    )


def test_an_interface_without_ipv4_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^interface 'eth1' has no IPv4 address \(available:"):
        _select(["eth1"])


def test_without_sys_loopback_is_judged_by_address() -> None:
    assert [i.name for i in _select([], sys={})] == [
        "docker0",
        "dummy0",
        "eth0",
        "eth2",
        "tun0",
        "wlan0",
    ]


def test_no_adapters_means_no_interfaces_and_a_clear_error() -> None:
    assert select_interfaces([], adapters=list, read_sys=lambda n, a: None) == []
    with pytest.raises(ConfigError, match=r"\(no interface has an IPv4 address\)"):
        select_interfaces(["eth0"], adapters=list, read_sys=lambda n, a: None)


def test_read_sys_net(tmp_path: Path) -> None:
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "operstate").write_text("up\n")
    assert read_sys_net("eth0", "operstate", root=tmp_path) == "up"
    assert read_sys_net("eth0", "flags", root=tmp_path) is None
    assert read_sys_net("nope", "flags", root=tmp_path) is None
