"""The deployment's directory: node certificates, revocation lists and their gossip.

Every node keeps the certificates of the nodes it has heard of (its own, and on the
HQ that issued them every kit's) and the newest revocation list signed by the CA.
Both spread by gossip: on every new link a node sends its list and every
certificate it holds; what arrives is verified against the CA before it is kept,
and only what is new is passed on to the other links. So:

- a certificate of another deployment, a revoked one or garbage is skipped;
- a revocation list is adopted only when it verifies and is newer (higher CRL
  number) than ours; then it is stored, peers it revokes are cut off, and it is
  passed on;
- the directory (:meth:`Directory.nodes`) lists the nodes whose certificate is
  valid now, and :meth:`Directory.author_key` gives sync the signing key of an
  author that is not revoked.

The directory talks to links through two small seams (:class:`Peer`,
:class:`Mesh`), so tests drive it with in-memory stand-ins; without a mesh (the
CLI working on a store offline) it keeps and verifies but passes nothing on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk.cases.chain import author_node
from meshdesk.errors import AuthError, ChannelClosed, StoreFull
from meshdesk.identity import NodeInfo, NodeKit, RevocationList
from meshdesk.net.trust import TrustPolicy
from meshdesk.store import Store
from meshdesk.wire import Certificates, Frame, Revocations

__all__ = ["CERTS_PER_FRAME", "Directory", "Mesh", "Peer", "is_directory_frame"]

log = logging.getLogger("meshdesk.directory")

#: Certificates per gossip frame (the frame's limit is 256).
CERTS_PER_FRAME = 64


class Peer(Protocol):
    """A link as the directory sees it: something to send frames to."""

    async def send(self, frame: Frame) -> None: ...


class Mesh(Protocol):
    """The links to pass news on to, and the way to cut revoked peers off."""

    def links(self) -> Sequence[Peer]: ...

    def revoke(self, revoked: Callable[[NodeInfo], bool], reason: str) -> list[str]: ...


def is_directory_frame(frame: Frame) -> bool:
    return isinstance(frame, Certificates | Revocations)


class Directory:
    """Certificates and the revocation list of one node, over its store."""

    def __init__(
        self, store: Store, kit: NodeKit, trust: TrustPolicy, *, now: Callable[[], dt.datetime]
    ) -> None:
        self._store = store
        self._kit = kit
        self.trust = trust
        self._now = now
        self._mesh: Mesh | None = None
        #: Verified certificates the store could not keep (a full disk), by node id:
        #: used meanwhile, stored once space returns.
        self._unsaved: dict[str, bytes] = {}
        #: The stored certificates, read once (this directory is their only writer).
        self._stored: dict[str, bytes] | None = None
        #: Certificates whose CA signature and shape verified: their node, expiry and
        #: key. Signatures never change; expiry and revocation are checked every time.
        self._verified: dict[bytes, tuple[NodeInfo, dt.datetime, Ed25519PublicKey | None]] = {}

    @classmethod
    async def open(cls, store: Store, kit: NodeKit, *, now: Callable[[], dt.datetime]) -> Directory:
        """A directory trusting the CA of ``kit`` and the revocation list in ``store``.

        A stored list that no longer verifies is logged and ignored.
        """
        crl = None
        stored = await store.revocation_list()
        if stored is not None:
            try:
                crl = RevocationList.load(stored[1], kit.ca_cert)
            except AuthError as exc:
                log.error("stored revocation list is invalid and was ignored: %s", exc)
        return cls(store, kit, TrustPolicy(kit.ca_cert, crl), now=now)

    def connect(self, mesh: Mesh) -> None:
        """From now on pass news on to ``mesh``'s links and cut revoked peers there."""
        self._mesh = mesh

    def _others(self, source: Peer | None) -> list[Peer]:
        links = self._mesh.links() if self._mesh is not None else []
        return [link for link in links if link is not source]

    def _now_ms(self) -> int:
        return int(self._now().timestamp() * 1000)

    async def seed(self) -> None:
        """Keep our own certificate, and on the HQ that issued them, every kit's."""
        own = self._kit.cert.public_bytes(serialization.Encoding.DER)
        await self._store.save_certificate(str(self._kit.node_id), own, self._now_ms())
        for issued in await self._store.issued_nodes():
            der = x509.load_pem_x509_certificate(issued.cert_pem.encode()).public_bytes(
                serialization.Encoding.DER
            )
            await self._store.save_certificate(issued.node_id, der, self._now_ms())
        self._stored = None  # read again when next needed

    async def nodes(self) -> list[NodeInfo]:
        """Every node of the deployment we know a valid certificate of."""
        infos = []
        now = self._now()
        for der in (await self._certificates()).values():
            with contextlib.suppress(AuthError):
                infos.append(self._check(der, now)[0])
        return infos

    def _check(self, der: bytes, now: dt.datetime) -> tuple[NodeInfo, Ed25519PublicKey | None]:
        """``trust.verify_peer`` of a certificate, its signature checked once: a sync
        run or a sealed case asks again and again (a thousand nodes, a million cases).

        Raises:
            AuthError: as ``verify_peer`` (expiry and revocation are checked each time).
        """
        known = self._verified.get(der)
        if known is not None:
            info, expires, key = known
            if now <= expires and not self.trust.is_revoked(info.serial):
                return info, key
        info = self.trust.verify_peer(der, now=now)  # raises the one clear error
        cert = x509.load_der_x509_certificate(der)
        public = cert.public_key()
        key = public if isinstance(public, Ed25519PublicKey) else None
        self._verified[der] = (info, cert.not_valid_after_utc, key)
        return info, key

    def check_certificate(self, der: bytes) -> tuple[NodeInfo, Ed25519PublicKey | None]:
        """Verify a certificate against the CA and the revocation list now, keeping
        nothing (a USB bundle's certificates are checked before anything is imported).

        Raises:
            AuthError: as ``trust.verify_peer``.
        """
        return self._check(der, self._now())

    async def author_key(self, author: str) -> Ed25519PublicKey | None:
        """The signing key of chain ``author`` (``NODE-ID/EPOCH``, see
        :mod:`meshdesk.cases.chain`) from its node's certificate, if that verifies now."""
        try:
            node = author_node(author)
        except ValueError:
            return None  # not a chain name: its runs are refused
        der = (await self._certificates()).get(node)
        if der is None:
            return None
        try:
            return self._check(der, self._now())[1]
        except AuthError:
            return None  # revoked or expired: its events are refused

    # -- gossip ------------------------------------------------------------------------

    async def greet(self, link: Peer) -> None:
        """Tell a new peer our revocation list and every certificate we hold.

        Raises:
            ChannelClosed: the link went away meanwhile.
        """
        crl = self.trust.crl
        if crl is not None:
            await link.send(Revocations(number=crl.number, crl=crl.der))
        known = list((await self._store.certificates()).values())
        for start in range(0, len(known), CERTS_PER_FRAME):
            await link.send(Certificates(certs=tuple(known[start : start + CERTS_PER_FRAME])))

    async def on_frame(self, link: Peer, frame: Frame) -> None:
        """Take a directory frame (see :func:`is_directory_frame`) from ``link``."""
        match frame:
            case Revocations(crl=der):
                await self.apply_revocations(der, source=link)
            case Certificates(certs=certs):
                await self.take_certificates(certs, source=link)
            case _:
                raise TypeError(f"not a directory frame: {type(frame).__name__}")

    async def _pass_on(self, frame: Frame, source: Peer | None) -> None:
        for link in self._others(source):
            with contextlib.suppress(ChannelClosed):
                await link.send(frame)

    async def _certificates(self) -> dict[str, bytes]:
        if self._stored is None:
            self._stored = await self._store.certificates()
        stored = self._stored
        return {**self._unsaved, **stored} if self._unsaved else stored

    async def _keep(self, node_id: str, der: bytes, now_ms: int) -> bool:
        """Store a verified certificate; True when it is new. On a full disk it is
        kept in memory (and stored later), so the node still knows the peer."""
        try:
            new = await self._store.save_certificate(node_id, der, now_ms)
            if self._stored is not None:
                self._stored.setdefault(node_id, der)
        except StoreFull as exc:
            if node_id not in self._unsaved:
                log.warning("directory: keeping %s's certificate in memory only: %s", node_id, exc)
            new = node_id not in self._unsaved
            self._unsaved[node_id] = der
            return new and node_id not in await self._store.certificates()
        self._unsaved.pop(node_id, None)
        return new

    async def take_certificates(self, certs: tuple[bytes, ...], *, source: Peer | None) -> int:
        """Keep the certificates that verify against our CA; pass new ones on.

        A certificate that does not verify (another deployment, revoked, garbage)
        is skipped and counted in the log; it changes nothing. Returns how many
        were new.
        """
        fresh: list[bytes] = []
        refused = 0
        now = self._now()
        now_ms = int(now.timestamp() * 1000)
        for node_id, der in list(self._unsaved.items()):  # space may have returned
            await self._keep(node_id, der, now_ms)
        for der in certs:
            try:
                info = self.trust.verify_peer(der, now=now)
            except AuthError:
                refused += 1
                continue
            if await self._keep(str(info.node_id), der, now_ms):
                fresh.append(der)
        if refused:
            log.info("skipped %d certificates from %s that do not verify", refused, source)
        if fresh:
            log.info("directory: %d new node certificates from %s", len(fresh), source)
            await self._pass_on(Certificates(certs=tuple(fresh)), source)
        return len(fresh)

    async def apply_revocations(self, der: bytes, *, source: Peer | None = None) -> bool:
        """Verify and adopt a revocation list if it is newer; cut off revoked peers.

        A list that does not verify is logged and changes nothing. Returns whether
        the list was adopted.
        """
        where = f"from {source}" if source is not None else "from the store"
        try:
            crl = RevocationList.load(der, self._kit.ca_cert)
            adopted = self.trust.update_revocations(crl)
        except AuthError as exc:
            log.warning("ignored a revocation list %s: %s", where, exc)
            return False
        if not adopted:
            return False
        await self._store.save_revocation_list(crl.number, crl.der)
        reason = f"revoked (revocation list #{crl.number})"
        cut = (
            self._mesh.revoke(lambda info: crl.is_revoked(info.serial), reason)
            if self._mesh is not None
            else []
        )
        log.warning(
            "revocation list #%d %s adopted: %d certificates revoked, %d links cut",
            crl.number,
            where,
            len(crl.serials),
            len(cut),
        )
        await self._pass_on(Revocations(number=crl.number, crl=crl.der), source)
        return True

    async def reload_revocations(self) -> dict[str, object]:
        """Adopt the list in the store if it is newer (``meshdesk deployment revoke``
        writes it there on HQ); ``{"adopted": bool, "number": n | None}``."""
        stored = await self._store.revocation_list()
        if stored is None:
            return {"adopted": False, "number": None}
        adopted = await self.apply_revocations(stored[1])
        return {"adopted": adopted, "number": stored[0]}
