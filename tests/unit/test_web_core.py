"""The pure parts of the citizens' web port: invitations, rate limits, language, web PKI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from meshdesk import admin
from meshdesk.calls import Guest
from meshdesk.errors import KitError, UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import CertificateAuthority, NodeKit, Role
from meshdesk.identity.webpki import PRIVATE_RANGES, WebCA, WebSubCA, leaf_addresses
from meshdesk.web.certs import LeafKeeper
from meshdesk.web.desk import CitizenDesk
from meshdesk.web.invites import FINISHED_KEPT, OPEN_MAX, InviteBook, InviteState, RateLimiter
from meshdesk.web.pages import TEXTS, call_page, choose_lang, message_page

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


# -- invitations ---------------------------------------------------------------------------


def test_an_invitation_lives_new_opened_waiting_admitted_ended() -> None:
    book = InviteBook(ttl=600.0)
    invite = book.create(0.0, case_id="c", call_id=None)
    assert len(invite.token) >= 32  # 192 bits in URL-safe base64
    assert book.by_token(invite.token) is invite
    assert book.by_token(invite.token + "x") is None
    secret = book.open(invite, 10.0)
    assert book.owns(invite, secret)
    assert not book.owns(invite, "another browser")
    assert not book.owns(invite, None)
    with pytest.raises(UsageError, match="opened already"):
        book.open(invite, 11.0)  # binds to the first browser only
    code = book.lobby(invite, 12.0)
    assert code.isdigit()
    assert len(code) == 4
    assert book.lobby(invite, 13.0) == code  # asking again is harmless
    assert book.find(code) is invite
    book.admit(invite)
    assert [e["kind"] for e in invite.events] == ["waiting", "admitted"]
    assert book.finish(invite, InviteState.ENDED, "hung up")
    assert not book.finish(invite, InviteState.ENDED, "again")
    assert invite.events_after(2) == [{"seq": 3, "kind": "ended", "reason": "hung up"}]
    with pytest.raises(UsageError, match="no open invitation"):
        book.find(code)  # a finished invitation's code is free again


def test_unopened_and_unadmitted_invitations_expire_but_admitted_ones_do_not() -> None:
    book = InviteBook(ttl=60.0)
    unopened = book.create(0.0, case_id=None, call_id=None)
    waiting = book.create(0.0, case_id=None, call_id=None)
    admitted = book.create(0.0, case_id=None, call_id=None)
    book.open(waiting, 50.0)  # opening gives it another ttl to be admitted
    book.lobby(waiting, 50.0)
    book.open(admitted, 1.0)
    book.lobby(admitted, 1.0)
    book.admit(admitted)
    assert book.expire(59.9) == []
    assert book.expire(60.0) == [unopened]
    assert book.expire(109.9) == []
    assert book.expire(110.0) == [waiting]
    assert admitted.state is InviteState.ADMITTED
    assert book.expire(10_000.0) == []


def test_codes_are_unique_among_open_invitations_and_their_number_is_bounded() -> None:
    book = InviteBook(ttl=600.0)
    codes = set()
    for _ in range(OPEN_MAX):
        invite = book.create(0.0, case_id=None, call_id=None)
        book.open(invite, 0.0)
        codes.add(book.lobby(invite, 0.0))
    assert len(codes) == OPEN_MAX
    with pytest.raises(UsageError, match="invitations are open"):
        book.create(0.0, case_id=None, call_id=None)


def test_finished_invitations_are_kept_a_while_then_forgotten() -> None:
    book = InviteBook(ttl=600.0)
    first = book.create(0.0, case_id=None, call_id=None)
    book.finish(first, InviteState.DECLINED, "no")
    for _ in range(FINISHED_KEPT):
        other = book.create(0.0, case_id=None, call_id=None)
        book.finish(other, InviteState.EXPIRED, "expired")
    assert book.by_token(first.token) is None  # a stale link now gets "does not work"
    assert len(book.all()) == FINISHED_KEPT


def test_rate_limiter_refills_and_bounds_its_memory() -> None:
    limiter = RateLimiter(rate=1.0, burst=3.0, max_keys=2)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.blocked("a", 0.5)
    assert limiter.allow("a", 1.0)
    limiter.allow("b", 1.0)
    limiter.allow("c", 1.0)  # "a" is forgotten: memory stays bounded
    assert not limiter.blocked("a", 1.0)


# -- the page's language and texts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, "ja"),
        ("", "ja"),
        ("en-US,en;q=0.9", "en"),
        ("ja,en-US;q=0.8", "ja"),
        ("en;q=0.5,ja;q=0.9", "ja"),
        ("fr-FR,de", "ja"),
        ("en;q=bogus,ja;q=0.1", "ja"),
        ("x" * 10_000, "ja"),
    ],
)
def test_japanese_unless_english_is_preferred(header: str | None, lang: str) -> None:
    assert choose_lang(header) == lang


def test_both_languages_have_every_text_and_pages_escape_them() -> None:
    assert TEXTS["ja"].keys() == TEXTS["en"].keys()
    page = call_page("ja")
    assert 'id="texts"' in page
    assert "</script><" not in page.split('id="texts">', 1)[1].split("</script>", 1)[0]
    assert '<html lang="en">' in message_page("en", "expired")


# -- the web PKI ---------------------------------------------------------------------------


@given(st.ip_addresses())
def test_a_leaf_names_only_private_addresses(ip: ipaddress.IPv4Address) -> None:
    kept = leaf_addresses([str(ip)])
    private = any(ip.version == n.version and ip in n for n in PRIVATE_RANGES)
    assert kept == ([str(ip)] if private else [])


def test_the_web_sub_ca_is_name_constrained_and_signs_a_leaf() -> None:
    subca = WebCA.create("秋田市", now=NOW).issue_subca("desk", "NODEID", now=NOW)
    constraints = subca.cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = constraints.value.permitted_subtrees
    assert permitted is not None
    assert x509.DNSName("local") in permitted
    assert x509.IPAddress(ipaddress.ip_network("192.168.0.0/16")) in permitted
    _key, cert = subca.issue_leaf(["192.168.1.20", "8.8.8.8", "127.0.0.1"], now=NOW)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "192.168.1.20",
    ]
    assert cert.not_valid_after_utc - NOW <= dt.timedelta(days=31)
    with pytest.raises(ValueError, match="no private IP"):
        subca.issue_leaf(["8.8.8.8"], now=NOW)


def test_a_kit_carries_its_web_sub_ca_and_refuses_one_of_another_ca() -> None:
    authority = CertificateAuthority.create("City", now=NOW)
    key = Ed25519PrivateKey.generate()
    cert = authority.issue(key.public_key(), name="desk", site="s", role=Role.DESK, now=NOW)
    web = WebCA.create("City", now=NOW).issue_subca("desk", "ID", now=NOW)
    kit = NodeKit.assemble(key, cert, authority.cert, web=web, now=NOW)
    again = NodeKit.from_bytes(kit.to_bytes(b"pass phrase"), passphrase=b"pass phrase", now=NOW)
    assert again.web is not None
    assert again.web.cert == web.cert
    stranger = WebCA.create("Other", now=NOW)
    with pytest.raises(KitError, match="not signed by the web CA"):
        WebSubCA.assemble(web.key, web.cert, stranger.cert)


def test_the_leaf_is_renewed_when_the_addresses_change_or_it_grows_old(tmp_path: Path) -> None:
    subca = WebCA.create("City", now=NOW).issue_subca("desk", "ID", now=NOW)
    addresses = ["192.168.1.20", "127.0.0.1"]
    clock = [NOW]
    keeper = LeafKeeper(NodeHome(tmp_path), subca, lambda: list(addresses), now=lambda: clock[0])
    assert keeper.refresh()
    first = (tmp_path / "web" / "leaf.pem").read_bytes()
    assert keeper.names == ["127.0.0.1", "192.168.1.20"]
    assert stat.S_IMODE((tmp_path / "web" / "leaf.key").stat().st_mode) == 0o600
    assert not keeper.refresh()  # nothing changed: the same leaf
    addresses[0] = "10.0.5.7"  # a new Wi-Fi
    assert keeper.refresh()
    assert keeper.names == ["10.0.5.7", "127.0.0.1"]
    assert (tmp_path / "web" / "leaf.pem").read_bytes() != first
    clock[0] = NOW + dt.timedelta(days=25)  # within the last third of its life
    assert keeper.refresh()
    assert keeper.not_after is not None
    assert keeper.not_after > clock[0] + dt.timedelta(days=29)


class _Calls:
    """What the desk asks of the call manager, recorded."""

    def __init__(self) -> None:
        self.offers: list[Guest] = []
        self.left: list[tuple[str, str]] = []
        self.muted: list[tuple[str, bool, bool]] = []

    async def guest_offer(self, guest: Guest, sdp: str) -> tuple[dict[str, object], str]:
        self.offers.append(guest)
        return {"call_id": "CALL"}, "v=0 answer"

    def guest_leave(self, guest_id: str, reason: str) -> None:
        self.left.append((guest_id, reason))

    def guest_mute(self, guest_id: str, audio: bool, video: bool) -> None:
        self.muted.append((guest_id, audio, video))


def _desk() -> tuple[CitizenDesk, _Calls, list[tuple[str, dict[str, object]]]]:
    calls, published = _Calls(), []
    desk = CitizenDesk(
        calls,
        lambda invite, remote: Guest(invite.guest_id, "citizen", remote, invite.case_id),
        ttl=600.0,
        publish=lambda kind, data: published.append((kind, data)),
        clock=lambda: 0.0,
    )
    desk.port, desk.unavailable = 7443, None
    desk.addresses = lambda: ["192.168.1.20"]
    return desk, calls, published


async def test_the_desk_admits_answers_and_follows_the_call() -> None:
    desk, calls, published = _desk()
    view = desk.new(case_id="CASE", call_id=None)
    assert view["url"] == f"https://192.168.1.20:7443/j/{desk.book.all()[0].token}"
    invite = desk.book.all()[0]
    desk.book.open(invite, 0.0)
    code = desk.lobby(invite)
    assert published[-1][1]["change"] == "waiting"
    with pytest.raises(UsageError, match="not admitted"):
        await desk.offer(invite, "v=0", "::ffff:192.168.1.77")
    desk.admit(code)
    assert await desk.offer(invite, "v=0", "::ffff:192.168.1.77") == "v=0 answer"
    assert calls.offers[0].remote == "192.168.1.77"  # IPv4-mapped, unwrapped for ICE
    assert invite.call_id == "CALL"
    desk.mute(invite, True, False)
    assert calls.muted == [(invite.guest_id, True, False)]
    desk.on_call({"call_id": "CALL", "state": "active", "degraded": True, "participants": []})
    desk.on_call({"call_id": "CALL", "state": "active", "degraded": True, "participants": []})
    assert [e["kind"] for e in invite.events].count("degraded") == 1  # told once
    desk.on_call({"call_id": "CALL", "state": "ended", "reason": "hung up", "participants": []})
    assert invite.state is InviteState.ENDED
    assert invite.events[-1] == {"seq": invite.seq, "kind": "ended", "reason": "hung up"}


def test_declining_an_admitted_citizen_takes_it_out_of_the_call() -> None:
    desk, calls, _ = _desk()
    desk.new(case_id=None, call_id=None)
    invite = desk.book.all()[0]
    desk.book.open(invite, 0.0)
    desk.admit(desk.lobby(invite))
    desk.decline(invite.invite_id)
    assert calls.left == [(invite.guest_id, "sent away by staff")]
    assert invite.state is InviteState.ENDED


def test_a_phone_with_a_successor_moves_there_when_the_desk_leaves() -> None:
    desk, _, _ = _desk()
    desk.new(case_id=None, call_id=None)
    invite = desk.book.all()[0]
    desk.book.open(invite, 0.0)
    desk.admit(desk.lobby(invite))
    invite.call_id = "CALL"
    url = "https://192.168.1.30:7443/j/" + "s" * 32
    desk.backup_ready(invite.guest_id, url)
    desk.backup_ready(invite.guest_id, url)  # told once
    assert [e for e in invite.events if e["kind"] == "standby"] == [
        {"seq": 3, "kind": "standby", "url": url}
    ]
    desk.on_call({"call_id": "CALL", "state": "ended", "reason": "hung up", "participants": []})
    kinds = [e["kind"] for e in invite.events]
    assert kinds[-2:] == ["moved", "ended"]  # the page goes before it hears "ended"
    # A citizen who hung up is not moved anywhere.
    other, _, _ = _desk()
    other.new(case_id=None, call_id=None)
    gone = other.book.all()[0]
    other.book.open(gone, 0.0)
    other.admit(other.lobby(gone))
    gone.call_id, gone.backup_url = "CALL", url
    left = {"node_id": gone.guest_id, "state": "left"}
    other.on_call({"call_id": "CALL", "state": "active", "participants": [{}, left]})
    assert "moved" not in [e["kind"] for e in gone.events]


def test_a_phone_whose_successor_left_ends_with_the_desk() -> None:
    desk, _, _ = _desk()
    desk.new(case_id=None, call_id=None)
    invite = desk.book.all()[0]
    desk.book.open(invite, 0.0)
    desk.admit(desk.lobby(invite))
    invite.call_id = "CALL"
    desk.backup_ready(invite.guest_id, "https://192.168.1.30:7443/j/" + "s" * 32)
    desk.backup_ready(invite.guest_id, None)  # the department's laptop left the call
    assert [e.get("url") for e in invite.events if e["kind"] == "standby"][-1] is None
    desk.on_call({"call_id": "CALL", "state": "ended", "reason": "hung up", "participants": []})
    kinds = [e["kind"] for e in invite.events]
    assert "moved" not in kinds
    assert kinds[-1] == "ended"


def test_a_successor_keeps_the_phone_ready_and_admits_it_once_it_hosts() -> None:
    desk, _, published = _desk()
    token = "t" * 32
    url = desk.standby("CALL", "citizen:0a1b2c3d", "4821", token, None, "192.168.1.77")
    assert url == f"https://192.168.1.20:7443/j/{token}"
    invite = desk.book.by_token(token)
    assert invite is not None
    assert (invite.guest_id, invite.code, invite.state) == ("citizen:0a1b2c3d", "4821", "new")
    # The same phone again is the same invitation; bad tokens are refused.
    assert desk.standby("CALL", "citizen:0a1b2c3d", "4821", "u" * 32, None, "") is not None
    assert len(desk.book.all()) == 1
    assert desk.standby("CALL", "citizen:ffff0000", "1", "short", None, "") is None
    desk.book.open(invite, 0.0)
    assert desk.lobby(invite) == "4821"  # the code staff already know
    assert invite.state is InviteState.WAITING  # not hosting the call (yet)
    me = {"node_id": "ME"}
    desk.on_call({"call_id": "CALL", "state": "active", "host": "ME", "participants": [me]})
    assert invite.state is InviteState.ADMITTED
    assert published[-1][1]["change"] == "admitted"
    desk.on_call({"call_id": "CALL", "state": "ended", "host": "ME", "participants": [me]})
    assert invite.state is InviteState.ENDED
    off, _, _ = _desk()
    off.unavailable = "the web port is turned off"
    assert off.standby("CALL", "citizen:0a1b2c3d", "4821", token, None, "") is None


def test_without_the_web_port_staff_are_told_why() -> None:
    desk, _, _ = _desk()
    desk.unavailable = "this node's kit has no web sub-CA"
    with pytest.raises(UsageError, match="citizens cannot join: this node's kit has no web"):
        desk.new(case_id=None, call_id=None)


async def test_an_hq_made_before_the_web_port_gets_its_web_ca(tmp_path: Path) -> None:
    home = NodeHome(tmp_path / "hq")
    await admin.create_deployment(
        home, deployment="City", node_name="HQ", site="本庁", departments=(), now=NOW
    )
    for path in (home.web_ca_key_path, home.web_ca_cert_path, home.web_subca_key_path,
                 home.web_subca_cert_path):  # fmt: skip
        path.unlink()  # as it was before the web port
    assert home.load_identity(now=NOW).web is None
    assert admin.add_web_ca(home, now=NOW)
    kit = home.load_identity(now=NOW)
    assert kit.web is not None
    assert kit.web.root == home.load_web_ca().cert
    assert stat.S_IMODE(home.web_ca_key_path.stat().st_mode) == 0o600
    assert not admin.add_web_ca(home, now=NOW)  # nothing left to add
