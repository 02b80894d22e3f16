"""The prefecture CA, cities' hub credentials, the hub roster and its NATS users."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshdesk.errors import AuthError, HomeError, UsageError
from meshdesk.identity import RevocationList
from meshdesk.prefecture import (
    NO_CITY_USER,
    CityEntry,
    HubCredential,
    PrefectureCA,
    PrefectureHome,
    Roster,
    admitted_users,
    municipality_code,
    render_authorization,
    render_tls,
    verify_city_cert,
)

NOW = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
HUB = "tls://127.0.0.1:7422"


@pytest.fixture(scope="module")
def pref_ca() -> PrefectureCA:
    return PrefectureCA.create("静岡県", now=NOW)


@pytest.fixture(scope="module")
def other_pref_ca() -> PrefectureCA:
    return PrefectureCA.create("愛知県", now=NOW)


@pytest.fixture
def home(tmp_path: Path) -> PrefectureHome:
    home = PrefectureHome(tmp_path / "pref")
    home.init("静岡県", now=NOW)
    home.issue_server("hub1", ["hub1.pref.example", "10.0.0.11"], now=NOW)
    return home


def _admit(home: PrefectureHome, code: str, out: Path, **kw: bool) -> HubCredential:
    return home.issue_city(code, name="静岡市", urls=[HUB], out=out, now=NOW, **kw)


# -- municipality codes ------------------------------------------------------------


def test_municipality_code_check_digit() -> None:
    assert municipality_code("131016") == "131016"  # Chiyoda
    assert municipality_code(" 13101 ") == "131016"  # the check digit is appended
    assert municipality_code("221007") == "221007"  # Shizuoka
    with pytest.raises(UsageError, match=r"wrong check digit.*131016"):
        municipality_code("131017")
    assert municipality_code("１３１０１６") == "131016"  # typed full-width
    for bad in ("", "1310", "1310166", "13a016", "١٣١٠١٦"):
        with pytest.raises(UsageError, match="not a municipality code"):
            municipality_code(bad)


# -- certificates --------------------------------------------------------------------


def test_city_certificate_names_the_city_in_an_ascii_subject(pref_ca: PrefectureCA) -> None:
    _, cert = pref_ca.issue_city("13101", now=NOW)
    info = verify_city_cert(cert, pref_ca.cert, now=NOW)
    assert info.code == "131016"
    assert info.subject == (
        f"CN=131016,OU=credential {cert.serial_number:x},"
        f"O=meshdesk prefecture {pref_ca.prefecture_id}"
    )
    assert info.subject.isascii()
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.signature_hash_algorithm is not None  # ECDSA P-256 with SHA-256


def test_city_certificate_of_another_prefecture_is_refused(
    pref_ca: PrefectureCA, other_pref_ca: PrefectureCA
) -> None:
    _, cert = other_pref_ca.issue_city("131016", now=NOW)
    with pytest.raises(AuthError, match="not signed by the prefecture CA"):
        verify_city_cert(cert, pref_ca.cert, now=NOW)
    with pytest.raises(AuthError, match="expired"):
        verify_city_cert(cert, other_pref_ca.cert, now=NOW + dt.timedelta(days=365 * 21))


def test_server_certificate_sans(pref_ca: PrefectureCA) -> None:
    _, cert = pref_ca.issue_server("hub1", ["hub1.pref.example", "10.0.0.11"], now=NOW)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.11"),
    ]
    assert sans.get_values_for_type(x509.DNSName) == ["hub1", "hub1.pref.example"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    with pytest.raises(UsageError, match="neither an IP address nor a host name"):
        pref_ca.issue_server("hub2", ["bad host!"], now=NOW)


def test_revocation_list_of_a_p256_ca(pref_ca: PrefectureCA, other_pref_ca: PrefectureCA) -> None:
    crl = RevocationList.build(pref_ca, [(7, NOW)], number=3, now=NOW)
    loaded = RevocationList.load(crl.der, pref_ca.cert)
    assert (loaded.number, loaded.serials) == (3, frozenset({7}))
    with pytest.raises(AuthError, match="not signed by the CA"):
        RevocationList.load(crl.der, other_pref_ca.cert)


# -- the roster and the NATS users ---------------------------------------------------


def _entry(ca: PrefectureCA, code: str, name: str) -> CityEntry:
    _, cert = ca.issue_city(code, now=NOW)
    return CityEntry(code=municipality_code(code), name=name, cert=cert, issued_at=NOW)


def test_revoked_city_no_longer_maps_to_a_user(pref_ca: PrefectureCA) -> None:
    shizuoka = _entry(pref_ca, "221007", "静岡市")
    hamamatsu = _entry(pref_ca, "221309", "浜松市")
    roster = Roster.new(pref_ca, now=NOW).add(shizuoka).add(hamamatsu)
    block = render_authorization(roster)
    assert shizuoka.info.subject in block
    assert hamamatsu.info.subject in block
    assert roster.admitted("221007")
    assert roster.admitted("221309")

    roster = roster.revoke([shizuoka.serial], pref_ca, reason="stolen laptop", now=NOW)
    block = render_authorization(roster)
    assert shizuoka.info.subject not in block
    assert hamamatsu.info.subject in block
    assert not roster.admitted("221007")
    assert roster.admitted("221309")
    assert roster.revocations.number == 2

    # Re-admitted with a new credential: the old one still maps to nobody.
    again = _entry(pref_ca, "221007", "静岡市")
    roster = roster.add(again)
    users = [subject for _, subject in admitted_users(roster)]
    assert again.info.subject in users
    assert shizuoka.info.subject not in users
    assert roster.admitted("221007")
    assert not roster.admitted("221007", now=NOW + dt.timedelta(days=365 * 21))  # expired


def test_no_admitted_city_still_renders_a_users_list(pref_ca: PrefectureCA) -> None:
    city = _entry(pref_ca, "221007", "静岡市")
    roster = (
        Roster.new(pref_ca, now=NOW).add(city).revoke([city.serial], pref_ca, reason="", now=NOW)
    )
    block = render_authorization(roster)
    assert f'{{user: "{NO_CITY_USER}"}}' in block  # never an empty list: that means no auth
    assert city.info.subject not in block


def test_authorization_with_account_permissions_and_indent(pref_ca: PrefectureCA) -> None:
    roster = Roster.new(pref_ca, now=NOW).add(_entry(pref_ca, "221007", "静岡\n市"))
    block = render_authorization(
        roster,
        account="CITIES",
        permissions=lambda code: {"publish": [f"city.{code}.>"], "subscribe": ["_INBOX.>"]},
        indent=4,
    )
    assert block.startswith("    authorization {\n")
    assert 'account: "CITIES"' in block
    assert (
        'permissions: {publish: {allow: ["city.221007.>"]}, subscribe: {allow: ["_INBOX.>"]}}'
        in (block)
    )
    assert "    # 221007 静岡 市\n" in block  # a name never breaks out of its comment
    with pytest.raises(ValueError, match="cannot put"):
        render_authorization(roster, account='x"y')
    tls = render_tls(cert_file=Path("/a/s.crt"), key_file=Path("/a/s.key"), ca_file=Path("/a/ca"))
    assert "verify_and_map: true" in tls
    assert 'ca_file: "/a/ca"' in tls


def test_roster_round_trip_and_tampering(
    pref_ca: PrefectureCA, other_pref_ca: PrefectureCA
) -> None:
    a = _entry(pref_ca, "221007", "静岡市")
    b = _entry(pref_ca, "221309", "浜松市")
    roster = (
        Roster.new(pref_ca, now=NOW).add(a).add(b).revoke([a.serial], pref_ca, reason="r", now=NOW)
    )
    data = roster.to_bytes()
    loaded = Roster.load(data, pref_ca.cert)
    assert [e.to_json() for e in loaded.entries] == [e.to_json() for e in roster.entries]
    assert not loaded.admitted("221007")
    assert loaded.admitted("221309")

    doc = json.loads(data)
    # "Un-revoking" a city in the plain fields contradicts the signed list.
    unrevoked = json.loads(data)
    unrevoked["cities"][0]["revoked_at"] = None
    with pytest.raises(AuthError, match="disagrees with the signed revocation list"):
        Roster.load(json.dumps(unrevoked).encode(), pref_ca.cert)
    # An older (empty) revocation list in its place: refused by number.
    older = dict(
        doc, revocations=base64.b64encode(Roster.new(pref_ca, now=NOW).revocations.der).decode()
    )
    older["cities"] = [c for c in doc["cities"] if c["revoked_at"] is None]
    with pytest.raises(AuthError, match="older than #2"):
        Roster.load(json.dumps(older).encode(), pref_ca.cert, min_crl=2)
    # A city certificate from another CA slipped in.
    forged = json.loads(data)
    forged["cities"][1]["cert"] = x509_pem(other_pref_ca.issue_city("221309", now=NOW)[1])
    with pytest.raises(AuthError, match="not signed by the prefecture CA"):
        Roster.load(json.dumps(forged).encode(), pref_ca.cert)
    # A roster signed by another prefecture altogether.
    with pytest.raises(AuthError, match="revocation list is not signed"):
        Roster.load(data, other_pref_ca.cert)
    # Entry code contradicting its certificate.
    renamed = json.loads(data)
    renamed["cities"][1]["code"] = "131016"
    with pytest.raises(AuthError, match="says city 131016 but its certificate names 221309"):
        Roster.load(json.dumps(renamed).encode(), pref_ca.cert)
    for bad in (data[: len(data) // 2], b"\xff\xfe", b"[]", b'{"version": 1}'):
        with pytest.raises(AuthError):
            Roster.load(bad, pref_ca.cert)


def x509_pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


# -- the credential file ----------------------------------------------------------------


def test_credential_round_trip(home: PrefectureHome, tmp_path: Path) -> None:
    out = tmp_path / "221007.cred"
    issued = _admit(home, "221007", out)
    assert os.stat(out).st_mode & 0o777 == 0o600
    text = out.read_text("utf-8")
    assert text.startswith("meshdesk hub credential for city 221007 (静岡市)\n")
    loaded = HubCredential.read(out, now=NOW)
    assert (loaded.city_code, loaded.city_name, loaded.prefecture) == ("221007", "静岡市", "静岡県")
    assert loaded.cert == issued.cert
    assert loaded.ca_cert == home.load_ca_cert()
    assert [s.subject for s in loaded.servers] == [c.subject for c in home.server_certs()]
    assert loaded.urls == (HUB,)


def test_credential_sealed_under_a_passphrase(home: PrefectureHome, tmp_path: Path) -> None:
    out = tmp_path / "221007.cred"
    issued = home.issue_city(
        "221007", name="静岡市", urls=[HUB], out=out, passphrase=b"hamana-ko", now=NOW
    )
    text = out.read_text("utf-8")
    assert "-----BEGIN MESHDESK ENCRYPTED HUB CREDENTIAL-----" in text
    assert "protected by a passphrase" in text
    assert HubCredential.read(out, passphrase=b"hamana-ko", now=NOW).cert == issued.cert
    with pytest.raises(AuthError, match="wrong passphrase"):
        HubCredential.read(out, passphrase=b"fuji", now=NOW)
    with pytest.raises(AuthError, match="protected by a passphrase"):
        HubCredential.read(out, now=NOW)


def test_tampered_credentials_give_a_clear_error(home: PrefectureHome, tmp_path: Path) -> None:
    out = tmp_path / "221007.cred"
    cred = _admit(home, "221007", out)
    text = out.read_text("utf-8")
    body_at = text.index("-----BEGIN") + 60
    flipped = text[:body_at] + ("A" if text[body_at] != "A" else "B") + text[body_at + 1 :]
    cases = {
        "cut short": text[: len(text) // 2],
        "not a credential": "hello\n",
        "edited": flipped,
    }
    for what, bad in cases.items():
        path = tmp_path / "bad.cred"
        path.write_text(bad, "utf-8")
        with pytest.raises(AuthError, match="hub credential") as info:
            HubCredential.read(path, now=NOW)
        assert "\n" not in str(info.value), what
    # Parts that do not belong together: another prefecture's CA, another key.
    other = PrefectureCA.create("愛知県", now=NOW)
    with pytest.raises(AuthError, match="not signed by the prefecture CA"):
        HubCredential.assemble(
            prefecture="x",
            city_name="x",
            key=cred.key,
            cert=cred.cert,
            ca_cert=other.cert,
            servers=(),
            urls=(),
            now=NOW,
        )
    key, _ = other.issue_city("221007", now=NOW)
    with pytest.raises(AuthError, match="key does not belong"):
        HubCredential.assemble(
            prefecture="x",
            city_name="x",
            key=key,
            cert=cred.cert,
            ca_cert=cred.ca_cert,
            servers=(),
            urls=(),
            now=NOW,
        )
    big = tmp_path / "big.cred"
    big.write_bytes(b"x" * (300 * 1024))
    with pytest.raises(AuthError, match="too large"):
        HubCredential.read(big, now=NOW)
    with pytest.raises(AuthError, match="cannot read"):
        HubCredential.read(tmp_path / "missing.cred", now=NOW)


# -- the prefecture home -----------------------------------------------------------------


def test_home_keys_are_owner_only_and_never_replaced(home: PrefectureHome) -> None:
    assert os.stat(home.path).st_mode & 0o777 == 0o700
    for key in (home.ca_key_path, home.servers_dir / "hub1.key"):
        assert os.stat(key).st_mode & 0o777 == 0o600
    with pytest.raises(HomeError, match="never replaced"):
        home.init("静岡県", now=NOW)
    with pytest.raises(HomeError, match="has a certificate already"):
        home.issue_server("hub1", [], now=NOW)
    os.chmod(home.ca_key_path, 0o644)
    with pytest.raises(HomeError, match="readable by other users"):
        home.load_ca()


def test_home_issue_replace_and_revoke(home: PrefectureHome, tmp_path: Path) -> None:
    first = _admit(home, "22100", tmp_path / "a.cred")
    with pytest.raises(UsageError, match="already holds a hub credential"):
        _admit(home, "221007", tmp_path / "b.cred")
    assert not (tmp_path / "b.cred").exists()
    second = _admit(home, "221007", tmp_path / "b.cred", replace=True)
    roster = home.load_roster()
    assert roster.is_revoked(first.cert.serial_number)
    assert [s for _, s in admitted_users(roster)] == [second.info.subject]
    roster = home.revoke_city("221007", reason="test", now=NOW)
    assert not home.load_roster().admitted("221007")
    assert home.load_roster(min_crl=roster.revocations.number).revocations.number == 3
    with pytest.raises(AuthError, match="older than #4"):
        home.load_roster(min_crl=4)
    assert f'{{user: "{NO_CITY_USER}"}}' in render_authorization(roster)
    with pytest.raises(UsageError, match="revoked already"):
        home.revoke_city("221007", reason="again", now=NOW)
    with pytest.raises(UsageError, match="never admitted"):
        home.revoke_city("131016", reason="", now=NOW)
    with pytest.raises(UsageError, match="not a hub URL"):
        home.issue_city("131016", name="千代田区", urls=["http://x"], out=tmp_path / "c", now=NOW)
    with pytest.raises(HomeError, match="holds no prefecture CA"):
        PrefectureHome(tmp_path / "none").load_ca()


def test_hub_client_is_admitted_beside_the_cities(home: PrefectureHome, tmp_path: Path) -> None:
    assert home.client_subjects() == []
    files = home.issue_client("projection", now=NOW)
    assert os.stat(files.key_path).st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(files.cert_path.read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # no server identity
    (subject,) = home.client_subjects()
    assert subject.startswith("CN=projection,OU=hub client,O=meshdesk prefecture ")
    with pytest.raises(HomeError, match="has a certificate already"):
        home.issue_client("projection", now=NOW)
    with pytest.raises(UsageError, match="client name"):
        home.client_files("../x")
    # No city admitted: the projection alone is the users list (no placeholder).
    text = render_authorization(home.load_roster(), clients=home.client_subjects())
    assert f'{{user: "{subject}"}}' in text
    assert NO_CITY_USER not in text
    # A certificate of another CA dropped into clients/ is refused, not admitted.
    other = PrefectureHome(tmp_path / "other")
    other.init("愛知県", now=NOW)
    stray = other.issue_client("stray", now=NOW)
    (home.clients_dir / "stray.crt").write_bytes(stray.cert_path.read_bytes())
    with pytest.raises(AuthError, match="not signed by the prefecture CA"):
        home.client_subjects()
