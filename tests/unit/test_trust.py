"""TrustPolicy: who may link — this deployment's CA, valid now, a node cert, not revoked."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from meshdesk.errors import AuthError
from meshdesk.identity import CertificateAuthority, NodeId, RevocationList, Role
from meshdesk.net.trust import TrustPolicy, fingerprint

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create("別の町", now=NOW)


def _issue(ca: CertificateAuthority, name: str = "第一小学校") -> tuple[x509.Certificate, NodeId]:
    key = Ed25519PrivateKey.generate()
    cert = ca.issue(key.public_key(), name=name, site="大町", role=Role.CENTER, now=NOW)
    return cert, NodeId.from_public_key(key.public_key())


def _ecdsa_cert() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecdsa")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _crl(ca: CertificateAuthority, *serials: int, number: int) -> RevocationList:
    return RevocationList.build(ca, [(s, NOW) for s in serials], number=number, now=NOW)


def test_verify_peer_returns_the_node_info(ca: CertificateAuthority) -> None:
    cert, node_id = _issue(ca)
    info = TrustPolicy(ca.cert).verify_peer(_der(cert), now=NOW)
    assert info.node_id == node_id
    assert info.name == "第一小学校"
    assert info.deployment == "デモ市"
    assert info.serial == cert.serial_number


def test_another_deployment_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    cert, _ = _issue(other_ca)
    with pytest.raises(AuthError, match="not signed by this deployment's CA"):
        TrustPolicy(ca.cert).verify_peer(_der(cert), now=NOW)


def test_garbage_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(AuthError, match=r"not a valid X\.509"):
        TrustPolicy(ca.cert).verify_peer(b"\x30\x03garbage", now=NOW)


def test_expired_is_refused_but_a_clock_set_back_is_not(ca: CertificateAuthority) -> None:
    cert, _ = _issue(ca)
    policy = TrustPolicy(ca.cert)
    with pytest.raises(AuthError, match="expired on"):
        policy.verify_peer(_der(cert), now=cert.not_valid_after_utc + dt.timedelta(seconds=1))
    # A dead RTC battery sets the clock years back: the peer is still who it is.
    reset = cert.not_valid_before_utc - dt.timedelta(days=400)
    assert policy.verify_peer(_der(cert), now=reset).name == "第一小学校"


def test_the_ca_certificate_is_not_a_node(ca: CertificateAuthority) -> None:
    with pytest.raises(AuthError, match="CA certificate"):
        TrustPolicy(ca.cert).verify_peer(_der(ca.cert), now=NOW)


def test_a_ca_signed_certificate_without_node_extensions_is_refused(
    ca: CertificateAuthority,
) -> None:
    key = Ed25519PrivateKey.generate()
    bare = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(ca.key, algorithm=None)
    )
    with pytest.raises(AuthError, match="not a node certificate"):
        TrustPolicy(ca.cert).verify_peer(_der(bare), now=NOW)


def test_revoked_serials_are_refused(ca: CertificateAuthority) -> None:
    revoked, revoked_id = _issue(ca, "盗まれたPC")
    fine, _ = _issue(ca)
    policy = TrustPolicy(ca.cert, _crl(ca, revoked.serial_number, number=3))
    assert policy.is_revoked(revoked.serial_number)
    assert not policy.is_revoked(fine.serial_number)
    with pytest.raises(AuthError, match=r"revoked \(revocation list #3\)") as err:
        policy.verify_peer(_der(revoked), now=NOW)
    assert str(revoked_id) in str(err.value)
    assert policy.verify_peer(_der(fine), now=NOW).serial == fine.serial_number


def test_no_revocation_list_revokes_nothing(ca: CertificateAuthority) -> None:
    policy = TrustPolicy(ca.cert)
    assert policy.crl is None
    assert not policy.is_revoked(12345)


def test_only_a_higher_crl_number_replaces(ca: CertificateAuthority) -> None:
    policy = TrustPolicy(ca.cert)
    assert policy.update_revocations(_crl(ca, 1, number=5))
    assert policy.is_revoked(1)
    assert not policy.update_revocations(_crl(ca, 2, number=5))  # same number
    assert not policy.update_revocations(_crl(ca, 3, number=4))  # older
    assert policy.crl is not None
    assert policy.crl.number == 5
    assert not policy.is_revoked(2)
    assert not policy.is_revoked(3)
    assert policy.update_revocations(_crl(ca, 2, number=6))
    assert policy.is_revoked(2)
    assert not policy.is_revoked(1)  # a newer list replaces, it does not add


def test_a_crl_of_another_deployment_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    foreign = _crl(other_ca, 1, number=99)
    with pytest.raises(AuthError, match="not signed by the CA"):
        TrustPolicy(ca.cert, foreign)
    policy = TrustPolicy(ca.cert, _crl(ca, number=1))
    with pytest.raises(AuthError, match="not signed by the CA"):
        policy.update_revocations(foreign)
    assert policy.crl is not None
    assert policy.crl.number == 1


def test_fingerprint_of_an_ed25519_certificate_is_its_node_id(ca: CertificateAuthority) -> None:
    cert, node_id = _issue(ca)
    assert fingerprint(_der(cert)) == str(node_id)
    assert TrustPolicy.fingerprint(_der(cert)) == str(node_id)


def test_fingerprint_of_other_certificates_and_garbage() -> None:
    cert = _ecdsa_cert()
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", fingerprint(_der(cert)))
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", fingerprint(b"not a certificate"))
    assert fingerprint(b"a") != fingerprint(b"b")


def test_a_non_ed25519_certificate_is_refused(ca: CertificateAuthority) -> None:
    cert = _ecdsa_cert()
    with pytest.raises(AuthError, match="not signed by this deployment's CA"):
        TrustPolicy(ca.cert).verify_peer(_der(cert), now=NOW)
