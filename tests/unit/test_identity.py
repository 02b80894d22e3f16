"""Node IDs, the deployment CA, node certificates and revocation lists."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.errors import AuthError
from meshdesk.identity import (
    CertificateAuthority,
    NodeId,
    RevocationList,
    Role,
    deployment_id,
    node_info,
    verify_node_cert,
)

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Another City", now=NOW)


# -- node ids ---------------------------------------------------------------------


def test_node_id_format_is_four_checked_groups() -> None:
    node_id = NodeId.from_public_key(Ed25519PrivateKey.generate().public_key())
    groups = node_id.text.split("-")
    assert [len(g) for g in groups] == [7, 7, 7, 7]
    assert node_id.short == groups[0]
    assert str(node_id) == node_id.text


def test_node_id_is_stable_for_a_key_and_differs_between_keys() -> None:
    raw = bytes(range(32))
    assert NodeId.from_public_bytes(raw) == NodeId.from_public_bytes(raw)
    assert NodeId.from_public_bytes(raw) != NodeId.from_public_bytes(bytes(32))


def test_node_id_parse_accepts_how_people_type_it() -> None:
    node_id = NodeId.from_public_bytes(b"k" * 32)
    assert NodeId.parse(node_id.text.lower()) == node_id
    assert NodeId.parse(node_id.text.replace("-", "")) == node_id
    assert NodeId.parse(node_id.text.replace("-", " ")) == node_id


@given(raw=st.binary(min_size=32, max_size=32), position=st.integers(0, 30), data=st.data())
def test_node_id_catches_any_single_typo(raw: bytes, position: int, data: st.DataObject) -> None:
    text = NodeId.from_public_bytes(raw).text
    if text[position] == "-":
        position += 1
    replacement = data.draw(
        st.sampled_from([c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" if c != text[position]])
    )
    typo = text[:position] + replacement + text[position + 1 :]
    with pytest.raises(ValueError, match="not a node id"):
        NodeId.parse(typo)


@pytest.mark.parametrize("bad", ["", "ABC", "0" * 28, "MFZWI3D-BONSGYC-YLTMRWG", "é" * 28])
def test_node_id_parse_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="not a node id"):
        NodeId.parse(bad)


def test_node_id_constructor_insists_on_canonical_text() -> None:
    text = NodeId.from_public_bytes(b"x" * 32).text
    with pytest.raises(ValueError, match="canonical"):
        NodeId(text.lower())


# -- certificates -----------------------------------------------------------------


def _issue(ca: CertificateAuthority, **kw: object) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    key = Ed25519PrivateKey.generate()
    fields: dict[str, object] = {
        "name": "第一小学校",
        "site": "大町",
        "role": Role.CENTER,
        "departments": ("福祉課", "housing"),
    }
    fields.update(kw)
    return key, ca.issue(key.public_key(), now=NOW, **fields)  # type: ignore[arg-type]


def test_certificate_carries_name_site_role_departments(ca: CertificateAuthority) -> None:
    key, cert = _issue(ca)
    info = verify_node_cert(cert, ca.cert, now=NOW)
    assert info.name == "第一小学校"
    assert info.site == "大町"
    assert info.role is Role.CENTER
    assert info.departments == ("福祉課", "housing")
    assert info.deployment == "デモ市"
    assert info.node_id == NodeId.from_public_key(key.public_key())
    assert info.serial == cert.serial_number
    assert info.to_json()["role"] == "center"


def test_duplicate_departments_are_kept_once(ca: CertificateAuthority) -> None:
    _, cert = _issue(ca, departments=("welfare", "welfare", " welfare "))
    assert node_info(cert).departments == ("welfare",)


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", ""), ("name", "x" * 65), ("site", "  "), ("departments", ("a\nb",))],
)
def test_bad_labels_are_refused(ca: CertificateAuthority, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=r"empty|longer|control"):
        _issue(ca, **{field: value})


def test_certificate_of_another_deployment_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    _, cert = _issue(other_ca)
    with pytest.raises(AuthError, match="not signed by the CA of deployment"):
        verify_node_cert(cert, ca.cert, now=NOW)


def test_tampered_certificate_is_refused(ca: CertificateAuthority) -> None:
    _, cert = _issue(ca, name="honest")
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    index = der.find(b"honest")
    der[index : index + 6] = b"forged"
    forged = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(AuthError, match="not signed"):
        verify_node_cert(forged, ca.cert, now=NOW)


def test_an_expired_certificate_is_refused(ca: CertificateAuthority) -> None:
    _, cert = _issue(ca)
    with pytest.raises(AuthError, match="expired on"):
        verify_node_cert(cert, ca.cert, now=NOW + dt.timedelta(days=365 * 21))


@pytest.mark.parametrize("days", [-1, -30, -400, -365 * 30])
def test_a_clock_set_back_does_not_invalidate_a_certificate(
    ca: CertificateAuthority, days: int
) -> None:
    # A dead RTC battery resets the clock; the node must still start and link.
    _, cert = _issue(ca)
    assert verify_node_cert(cert, ca.cert, now=NOW + dt.timedelta(days=days)).name


def test_ca_certificate_is_not_a_node_certificate(ca: CertificateAuthority) -> None:
    with pytest.raises(AuthError):
        verify_node_cert(ca.cert, ca.cert, now=NOW)


def test_deployment_id_is_the_ca_key_fingerprint(ca: CertificateAuthority) -> None:
    assert deployment_id(ca.cert) == NodeId.from_public_key(ca.key.public_key())
    assert ca.deployment_id == deployment_id(ca.cert)
    assert ca.deployment == "デモ市"
    assert CertificateAuthority.create("秋田市 Akita", now=NOW).deployment == "秋田市 Akita"


# -- revocation -------------------------------------------------------------------


def test_revocation_list_round_trip(ca: CertificateAuthority) -> None:
    _, a = _issue(ca)
    _, b = _issue(ca)
    crl = RevocationList.build(
        ca, [(a.serial_number, NOW), (a.serial_number, NOW)], number=3, now=NOW
    )
    loaded = RevocationList.load(crl.der, ca.cert)
    assert loaded.number == 3
    assert loaded.is_revoked(a.serial_number)
    assert not loaded.is_revoked(b.serial_number)
    assert loaded.pem().startswith(b"-----BEGIN X509 CRL-----")


def test_revocation_list_of_another_ca_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    crl = RevocationList.build(other_ca, [], number=1, now=NOW)
    with pytest.raises(AuthError, match="not signed by the CA"):
        RevocationList.load(crl.der, ca.cert)


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01\x01", b"not a crl" * 10])
def test_revocation_list_garbage_is_refused(ca: CertificateAuthority, garbage: bytes) -> None:
    with pytest.raises(AuthError, match=r"not a valid X\.509 CRL"):
        RevocationList.load(garbage, ca.cert)
