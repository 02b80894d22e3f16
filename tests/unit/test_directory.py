"""The directory: certificates and revocation lists, kept and passed on over fake links."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshdesk.directory import CERTS_PER_FRAME, Directory, is_directory_frame
from meshdesk.errors import ChannelClosed
from meshdesk.identity import (
    CertificateAuthority,
    NodeInfo,
    NodeKit,
    RevocationList,
    Role,
    verify_node_cert,
)
from meshdesk.store import IssuedNode, Store
from meshdesk.wire import Certificates, Frame, Ping, Revocations

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Issued:
    """A node's key and the certificate the CA gave it."""

    key: Ed25519PrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def issue(authority: CertificateAuthority, name: str) -> Issued:
    key = Ed25519PrivateKey.generate()
    return Issued(
        key, authority.issue(key.public_key(), name=name, site="大町", role=Role.CENTER, now=NOW)
    )


def crl(authority: CertificateAuthority, *revoked: Issued, number: int) -> RevocationList:
    return RevocationList.build(
        authority, [(i.serial, NOW) for i in revoked], number=number, now=NOW
    )


@dataclass
class FakeLink:
    """A link to one peer that records what it was sent; a closed one raises."""

    peer: NodeInfo
    sent: list[Frame] = field(default_factory=list)
    closed: bool = False

    async def send(self, frame: Frame) -> None:
        if self.closed:
            raise ChannelClosed(f"link with {self.peer.name} is closed")
        self.sent.append(frame)

    def __repr__(self) -> str:
        return f"link with {self.peer.name}"


@dataclass
class FakeMesh:
    """The node's links; ``revoke`` cuts matching peers off as the link manager does."""

    live: list[FakeLink]
    cut: list[tuple[str, str]] = field(default_factory=list)

    def links(self) -> list[FakeLink]:
        return list(self.live)

    def revoke(self, revoked: Callable[[NodeInfo], bool], reason: str) -> list[str]:
        gone = [link for link in self.live if revoked(link.peer)]
        for link in gone:
            self.live.remove(link)
            self.cut.append((link.peer.name, reason))
        return [str(link.peer.node_id) for link in gone]


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.create("デモ市", now=NOW)


@pytest.fixture(scope="module")
def stranger() -> CertificateAuthority:
    return CertificateAuthority.create("別の町", now=NOW)


@pytest.fixture(scope="module")
def nodes(authority: CertificateAuthority) -> dict[str, Issued]:
    return {name: issue(authority, name) for name in ("me", "a", "b", "c")}


def info(authority: CertificateAuthority, issued: Issued) -> NodeInfo:
    return verify_node_cert(issued.cert, authority.cert, now=NOW)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "store.db", create=True) as opened:
        yield opened


@pytest.fixture
async def directory(
    store: Store, authority: CertificateAuthority, nodes: dict[str, Issued]
) -> Directory:
    me = nodes["me"]
    kit = NodeKit.assemble(me.key, me.cert, authority.cert, now=NOW)
    opened = await Directory.open(store, kit, now=lambda: NOW)
    await opened.seed()
    return opened


def mesh_of(authority: CertificateAuthority, *peers: Issued) -> FakeMesh:
    return FakeMesh([FakeLink(info(authority, p)) for p in peers])


async def names(directory: Directory) -> set[str]:
    return {i.name for i in await directory.nodes()}


async def test_seed_keeps_our_own_certificate_and_every_kit_hq_issued(
    store: Store, authority: CertificateAuthority, nodes: dict[str, Issued], tmp_path: Path
) -> None:
    a = nodes["a"]
    await store.record_issued(
        IssuedNode(
            node_id=str(info(authority, a).node_id),
            name="a",
            site="大町",
            role="center",
            departments=(),
            serial=str(a.serial),
            cert_pem=a.cert.public_bytes(serialization.Encoding.PEM).decode(),
            issued_at=0,
        )
    )
    me = nodes["me"]
    kit = NodeKit.assemble(me.key, me.cert, authority.cert, now=NOW)
    directory = await Directory.open(store, kit, now=lambda: NOW)
    await directory.seed()
    assert await names(directory) == {"me", "a"}


async def test_certificates_that_verify_are_kept_and_new_ones_passed_on(
    directory: Directory, authority: CertificateAuthority, nodes: dict[str, Issued]
) -> None:
    mesh = mesh_of(authority, nodes["a"], nodes["b"])
    directory.connect(mesh)
    source, other = mesh.live
    certs = (nodes["b"].der, nodes["c"].der)
    assert await directory.take_certificates(certs, source=source) == 2
    assert await names(directory) == {"me", "b", "c"}
    assert source.sent == []  # never back to where they came from
    assert other.sent == [Certificates(certs=certs)]
    # Known already: nothing new, nothing passed on.
    assert await directory.take_certificates(certs, source=other) == 0
    assert other.sent == [Certificates(certs=certs)]
    assert source.sent == []


async def test_foreign_revoked_and_garbage_certificates_change_nothing(
    directory: Directory,
    authority: CertificateAuthority,
    stranger: CertificateAuthority,
    nodes: dict[str, Issued],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mesh = mesh_of(authority, nodes["a"])
    directory.connect(mesh)
    assert await directory.apply_revocations(crl(authority, nodes["c"], number=1).der)
    mesh.live[0].sent.clear()
    foreign = issue(stranger, "spy")
    with caplog.at_level(logging.INFO, logger="meshdesk.directory"):
        taken = await directory.take_certificates(
            (foreign.der, nodes["c"].der, b"garbage"), source=None
        )
    assert taken == 0
    assert await names(directory) == {"me"}
    assert mesh.live[0].sent == []
    assert "skipped 3 certificates" in caplog.text


async def test_only_a_newer_list_of_our_ca_is_adopted(
    directory: Directory,
    store: Store,
    authority: CertificateAuthority,
    stranger: CertificateAuthority,
    nodes: dict[str, Issued],
) -> None:
    assert await directory.apply_revocations(crl(authority, nodes["a"], number=2).der)
    assert not await directory.apply_revocations(crl(authority, nodes["b"], number=1).der)
    assert not await directory.apply_revocations(crl(authority, nodes["b"], number=2).der)
    assert not await directory.apply_revocations(crl(stranger, nodes["b"], number=9).der)
    assert not await directory.apply_revocations(b"not a list")
    assert directory.trust.crl is not None
    assert directory.trust.crl.number == 2
    assert directory.trust.is_revoked(nodes["a"].serial)
    assert not directory.trust.is_revoked(nodes["b"].serial)
    stored = await store.revocation_list()
    assert stored is not None
    assert stored[0] == 2


async def test_an_adopted_list_cuts_revoked_peers_and_is_passed_on(
    directory: Directory, authority: CertificateAuthority, nodes: dict[str, Issued]
) -> None:
    mesh = mesh_of(authority, nodes["a"], nodes["b"], nodes["c"])
    directory.connect(mesh)
    source, _b, c = mesh.live
    c.closed = True  # a link that went away meanwhile does not stop the others
    revocations = crl(authority, nodes["b"], number=1)
    assert await directory.apply_revocations(revocations.der, source=source)
    assert mesh.cut == [("b", "revoked (revocation list #1)")]
    assert source.sent == []
    assert c.sent == []
    assert [link.peer.name for link in mesh.live] == ["a", "c"]
    c.closed = False
    assert await directory.apply_revocations(crl(authority, nodes["b"], number=2).der)
    assert source.sent == [Revocations(number=2, crl=crl_der(source.sent))]
    assert c.sent == source.sent


def crl_der(sent: list[Frame]) -> bytes:
    frame = sent[0]
    assert isinstance(frame, Revocations)
    return frame.crl


async def test_author_keys_come_only_from_valid_certificates(
    directory: Directory, authority: CertificateAuthority, nodes: dict[str, Issued]
) -> None:
    a, b = nodes["a"], nodes["b"]
    await directory.take_certificates((a.der, b.der), source=None)
    a_id, b_id = str(info(authority, a).node_id), str(info(authority, b).node_id)
    key = await directory.author_key(a_id)
    assert key is not None
    assert key.public_bytes_raw() == a.key.public_key().public_bytes_raw()
    assert await directory.author_key("NOBODY0-AAAAAAA-BBBBBBB-CCCCCC1") is None
    await directory.apply_revocations(crl(authority, b, number=1).der)
    assert await directory.author_key(b_id) is None  # its events are refused from now on
    assert await names(directory) == {"me", "a"}


async def test_a_new_peer_hears_our_list_then_every_certificate(
    directory: Directory, authority: CertificateAuthority, nodes: dict[str, Issued]
) -> None:
    many = tuple(issue(authority, f"n{i}").der for i in range(CERTS_PER_FRAME))
    await directory.take_certificates(many, source=None)
    link = FakeLink(info(authority, nodes["a"]))
    await directory.greet(link)
    assert [type(f) for f in link.sent] == [Certificates, Certificates]  # no list yet
    sent = [der for f in link.sent if isinstance(f, Certificates) for der in f.certs]
    assert len(sent) == CERTS_PER_FRAME + 1  # ours too
    assert all(len(f.certs) <= CERTS_PER_FRAME for f in link.sent if isinstance(f, Certificates))
    await directory.apply_revocations(crl(authority, nodes["b"], number=1).der)
    link.sent.clear()
    await directory.greet(link)
    assert isinstance(link.sent[0], Revocations)
    link.closed = True
    with pytest.raises(ChannelClosed):
        await directory.greet(link)


async def test_frames_from_links_reach_the_right_handler(
    directory: Directory, authority: CertificateAuthority, nodes: dict[str, Issued]
) -> None:
    link = FakeLink(info(authority, nodes["a"]))
    revocations = crl(authority, nodes["c"], number=1)
    frames: list[Frame] = [
        Certificates(certs=(nodes["b"].der,)),
        Revocations(number=1, crl=revocations.der),
    ]
    assert all(is_directory_frame(f) for f in frames)
    assert not is_directory_frame(Ping(nonce=1, sent_ms=0))
    for frame in frames:
        await directory.on_frame(link, frame)
    assert await names(directory) == {"me", "b"}
    assert directory.trust.crl is not None
    with pytest.raises(TypeError, match="not a directory frame"):
        await directory.on_frame(link, Ping(nonce=1, sent_ms=0))


async def test_reload_adopts_the_stored_list_once(
    directory: Directory, store: Store, authority: CertificateAuthority, nodes: dict[str, Issued]
) -> None:
    assert await directory.reload_revocations() == {"adopted": False, "number": None}
    revocations = crl(authority, nodes["a"], number=3)
    await store.save_revocation_list(revocations.number, revocations.der)  # what HQ's revoke does
    assert await directory.reload_revocations() == {"adopted": True, "number": 3}
    assert await directory.reload_revocations() == {"adopted": False, "number": 3}
    assert directory.trust.is_revoked(nodes["a"].serial)


async def test_a_stored_list_that_no_longer_verifies_is_ignored_when_opening(
    store: Store,
    authority: CertificateAuthority,
    stranger: CertificateAuthority,
    nodes: dict[str, Issued],
    caplog: pytest.LogCaptureFixture,
) -> None:
    foreign = crl(stranger, nodes["a"], number=5)
    await store.save_revocation_list(foreign.number, foreign.der)
    me = nodes["me"]
    kit = NodeKit.assemble(me.key, me.cert, authority.cert, now=NOW)
    with caplog.at_level(logging.ERROR, logger="meshdesk.directory"):
        directory = await Directory.open(store, kit, now=lambda: NOW)
    assert directory.trust.crl is None
    assert "stored revocation list is invalid" in caplog.text
