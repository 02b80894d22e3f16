"""Node kits: round trip, passphrase sealing, and every way a kit can be bad."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshdesk._fs import write_private
from meshdesk.errors import KitError
from meshdesk.identity import CertificateAuthority, NodeKit, Role, read_passphrase

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


def make_kit(ca: CertificateAuthority, name: str = "市民体育館") -> NodeKit:
    key = Ed25519PrivateKey.generate()
    cert = ca.issue(key.public_key(), name=name, site="南区", role=Role.CENTER, now=NOW)
    return NodeKit.assemble(key, cert, ca.cert, now=NOW)


@pytest.fixture(scope="module")
def kit(ca: CertificateAuthority) -> NodeKit:
    return make_kit(ca)


def _payload(data: bytes) -> bytes:
    text = data.decode()
    body = text.split("-----\n", 1)[1].split("-----END", 1)[0]
    return base64.b64decode("".join(body.split()))


def _rearmor(data: bytes, payload: bytes) -> bytes:
    text = data.decode()
    head, rest = text.split("-----\n", 1)
    tail = rest[rest.index("-----END") :]
    return f"{head}-----\n{base64.encodebytes(payload).decode()}{tail}".encode()


def test_plain_kit_round_trip(kit: NodeKit) -> None:
    data = kit.to_bytes()
    assert b"BEGIN MESHDESK KIT" in data
    assert "市民体育館".encode() in data  # the human header names the node
    loaded = NodeKit.from_bytes(data, passphrase=None, now=NOW)
    assert loaded.node_id == kit.node_id
    assert loaded.info == kit.info
    assert loaded.deployment_id == kit.deployment_id


def test_sealed_kit_round_trip(kit: NodeKit) -> None:
    data = kit.to_bytes(b"correct horse")
    assert b"BEGIN MESHDESK ENCRYPTED KIT" in data
    loaded = NodeKit.from_bytes(data, passphrase=b"correct horse", now=NOW)
    assert loaded.node_id == kit.node_id


def test_plain_kit_accepts_an_unneeded_passphrase(kit: NodeKit) -> None:
    assert NodeKit.from_bytes(kit.to_bytes(), passphrase=b"x", now=NOW).node_id == kit.node_id


def test_wrong_passphrase(kit: NodeKit) -> None:
    with pytest.raises(KitError, match="wrong passphrase"):
        NodeKit.from_bytes(kit.to_bytes(b"right"), passphrase=b"wrong", now=NOW)


def test_missing_passphrase(kit: NodeKit) -> None:
    with pytest.raises(KitError, match="protected by a passphrase"):
        NodeKit.from_bytes(kit.to_bytes(b"right"), passphrase=None, now=NOW)


@pytest.mark.parametrize("sealed", [False, True])
def test_truncated_kits_are_refused_at_every_length(kit: NodeKit, sealed: bool) -> None:
    passphrase = b"pw" if sealed else None
    data = kit.to_bytes(passphrase)
    for cut in range(0, len(data) - 1, 7):
        with pytest.raises(KitError):
            NodeKit.from_bytes(data[:cut], passphrase=passphrase, now=NOW)


def test_ciphertext_bit_flip_is_detected(kit: NodeKit) -> None:
    data = kit.to_bytes(b"pw")
    outer = msgpack.unpackb(_payload(data))
    ct = bytearray(outer["ct"])
    ct[10] ^= 1
    outer["ct"] = bytes(ct)
    with pytest.raises(KitError, match="wrong passphrase"):
        NodeKit.from_bytes(_rearmor(data, msgpack.packb(outer)), passphrase=b"pw", now=NOW)


def test_hostile_scrypt_parameters_are_refused(kit: NodeKit) -> None:
    data = kit.to_bytes(b"pw")
    outer = msgpack.unpackb(_payload(data))
    outer["n"] = 2**30
    with pytest.raises(KitError, match="unreasonable scrypt"):
        NodeKit.from_bytes(_rearmor(data, msgpack.packb(outer)), passphrase=b"pw", now=NOW)


def test_key_of_another_node_is_refused(ca: CertificateAuthority, kit: NodeKit) -> None:
    other = make_kit(ca, "other")
    payload = msgpack.unpackb(_payload(kit.to_bytes()))
    payload["key"] = msgpack.unpackb(_payload(other.to_bytes()))["key"]
    with pytest.raises(KitError, match="does not belong to its certificate"):
        NodeKit.from_bytes(
            _rearmor(kit.to_bytes(), msgpack.packb(payload)), passphrase=None, now=NOW
        )


def test_certificate_not_signed_by_the_kit_ca_is_refused(kit: NodeKit) -> None:
    foreign = CertificateAuthority.create("Elsewhere", now=NOW)
    payload = msgpack.unpackb(_payload(kit.to_bytes()))
    payload["ca"] = msgpack.unpackb(_payload(make_kit(foreign).to_bytes()))["ca"]
    with pytest.raises(KitError, match="does not hold up"):
        NodeKit.from_bytes(
            _rearmor(kit.to_bytes(), msgpack.packb(payload)), passphrase=None, now=NOW
        )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: {**p, "v": 2}, "kit version"),
        (lambda p: {k: v for k, v in p.items() if k != "cert"}, "field 'cert'"),
        (lambda p: {**p, "cert": "text"}, "field 'cert'"),
        (lambda p: {**p, "key": b"short"}, "bad key"),
        (lambda p: {**p, "cert": b"\x30\x00"}, "bad key or certificate"),
        (lambda p: [1, 2, 3], "not a map"),
    ],
)
def test_damaged_payloads(kit: NodeKit, mutate: object, message: str) -> None:
    payload = msgpack.unpackb(_payload(kit.to_bytes()))
    bad = msgpack.packb(mutate(payload))  # type: ignore[operator]
    with pytest.raises(KitError, match=message):
        NodeKit.from_bytes(_rearmor(kit.to_bytes(), bad), passphrase=None, now=NOW)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe binary", "not text"),
        (b"hello", "not a meshdesk node kit"),
        (b"-----BEGIN MESHDESK KIT-----\n!!!!\n-----END MESHDESK KIT-----\n", "bad base64"),
        (b"-----BEGIN MESHDESK KIT-----\nAAAA\n-----END MESHDESK KIT-----\n", "damaged"),
        (b"x" * 70_000, "too large"),
    ],
)
def test_not_a_kit(data: bytes, message: str) -> None:
    with pytest.raises(KitError, match=message):
        NodeKit.from_bytes(data, passphrase=None, now=NOW)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="no kit file"):
        NodeKit.read(tmp_path / "nope.kit", passphrase=None, now=NOW)


def test_passphrase_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes("合言葉 words\nsecond line\n".encode())
    assert read_passphrase(path) == "合言葉 words".encode()
    path.write_bytes(b"\n")
    with pytest.raises(KitError, match="empty"):
        read_passphrase(path)
    with pytest.raises(KitError, match="cannot read"):
        read_passphrase(tmp_path / "missing")


def test_write_private_is_owner_only_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_private(path, b"one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private(path, b"two")
    assert path.read_bytes() == b"one"
    write_private(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def _sealed_kit(ca: CertificateAuthority) -> tuple[NodeKit, X25519PrivateKey]:
    key, sealing = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    cert = ca.issue(
        key.public_key(), name="desk", site="本庁", role=Role.DESK,
        sealing_key=sealing.public_key(), now=NOW,
    )  # fmt: skip
    return NodeKit.assemble(key, cert, ca.cert, sealing_key=sealing, now=NOW), sealing


def test_sealing_key_is_certified_and_travels_in_the_kit(ca: CertificateAuthority) -> None:
    kit, sealing = _sealed_kit(ca)
    raw = sealing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert kit.info.sealing_key == raw
    for passphrase in (None, b"pw"):
        loaded = NodeKit.from_bytes(kit.to_bytes(passphrase), passphrase=passphrase, now=NOW)
        assert loaded.sealing_key is not None
        assert loaded.sealing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == raw


def test_wrong_or_missing_sealing_key_is_refused(ca: CertificateAuthority) -> None:
    kit, _ = _sealed_kit(ca)
    with pytest.raises(KitError, match="sealing key does not belong"):
        NodeKit.assemble(
            kit.key, kit.cert, ca.cert, sealing_key=X25519PrivateKey.generate(), now=NOW
        )
    with pytest.raises(KitError, match="lacks the sealing key"):
        NodeKit.assemble(kit.key, kit.cert, ca.cert, now=NOW)
    payload = msgpack.unpackb(_payload(kit.to_bytes()))
    del payload["seal"]
    with pytest.raises(KitError, match="lacks the sealing key"):
        NodeKit.from_bytes(
            _rearmor(kit.to_bytes(), msgpack.packb(payload)), passphrase=None, now=NOW
        )
