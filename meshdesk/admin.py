"""Deployment administration: create a deployment, issue and revoke kits, provision.

These are the operations behind ``meshdesk deployment …``, ``meshdesk init`` and
``meshdesk status``. They take the clock as an argument and return plain
records; the CLI formats them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshdesk._fs import write_private
from meshdesk.config import load_config, write_default_config
from meshdesk.errors import AuthError, HomeError, KitError, UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import (
    CertificateAuthority,
    NodeId,
    NodeInfo,
    NodeKit,
    RevocationList,
    Role,
)
from meshdesk.identity.webpki import WebCA
from meshdesk.store import IssuedNode, RevokedNode, Store, StoreCounts

__all__ = [
    "NodeStatus",
    "Revocation",
    "add_web_ca",
    "create_deployment",
    "issue_kit",
    "node_status",
    "provision",
    "revoke_node",
]

_META_NODE_ID = "node_id"
_META_DEPLOYMENT_ID = "deployment_id"


def _ms(now: dt.datetime) -> int:
    return int(now.timestamp() * 1000)


def _issued_record(info: NodeInfo, kit: NodeKit, now: dt.datetime) -> IssuedNode:
    return IssuedNode(
        node_id=str(info.node_id),
        name=info.name,
        site=info.site,
        role=str(info.role),
        departments=info.departments,
        serial=str(info.serial),
        cert_pem=kit.cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        issued_at=_ms(now),
    )


def _der(kit: NodeKit) -> bytes:
    return kit.cert.public_bytes(serialization.Encoding.DER)


async def _init_store(home: NodeHome, kit: NodeKit, now: dt.datetime) -> None:
    async with Store.open(home.store_path, create=True) as store:
        await store.set_meta(_META_NODE_ID, str(kit.node_id).encode())
        await store.set_meta(_META_DEPLOYMENT_ID, str(kit.deployment_id).encode())
        # The directory starts with this node: it is in the audience of its own cases.
        await store.save_certificate(str(kit.node_id), _der(kit), _ms(now))


async def create_deployment(
    home: NodeHome,
    *,
    deployment: str,
    node_name: str,
    site: str,
    departments: tuple[str, ...],
    now: dt.datetime,
) -> NodeInfo:
    """Create the deployment CA in ``home`` and make this node its first ``hq`` node.

    Raises:
        HomeError: ``home`` already holds a node.
        UsageError: a bad name, site or department.
    """
    home.require_empty()
    try:
        ca = CertificateAuthority.create(deployment, now=now)
        key = Ed25519PrivateKey.generate()
        sealing = X25519PrivateKey.generate()
        cert = ca.issue(
            key.public_key(),
            name=node_name,
            site=site,
            role=Role.HQ,
            departments=departments,
            sealing_key=sealing.public_key(),
            now=now,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    kit = NodeKit.assemble(key, cert, ca.cert, sealing_key=sealing, now=now)
    web_ca = WebCA.create(ca.deployment, now=now)
    kit = dataclasses.replace(kit, web=web_ca.issue_subca(node_name, str(kit.node_id), now=now))
    home.write_identity(kit, ca=ca)
    home.write_web_ca(web_ca)
    if not home.config_path.exists():
        write_default_config(home.config_path)
    await _init_store(home, kit, now)
    async with Store.open(home.store_path) as store:
        await store.record_issued(_issued_record(kit.info, kit, now))
    return kit.info


async def issue_kit(
    home: NodeHome,
    *,
    name: str,
    site: str,
    role: Role,
    departments: tuple[str, ...],
    out: Path,
    passphrase: bytes | None,
    now: dt.datetime,
) -> NodeKit:
    """Issue a kit for a new node: fresh key, certificate signed by the CA.

    Raises:
        HomeError: this home holds no CA.
        UsageError: bad labels, a name already in use, ``out`` exists.
    """
    home.require_provisioned()
    ca = home.load_ca()
    if await asyncio.to_thread(out.exists):
        raise UsageError(f"{out} exists; meshdesk does not overwrite kits")
    async with Store.open(home.store_path) as store:
        revoked = {r.node_id for r in await store.revoked_nodes()}
        for node in await store.issued_nodes():
            if node.name == name.strip() and node.node_id not in revoked:
                raise UsageError(
                    f"a node named {node.name!r} exists already ({node.node_id}); "
                    "choose another name or revoke that node first"
                )
        key = Ed25519PrivateKey.generate()
        sealing = X25519PrivateKey.generate()
        try:
            cert = ca.issue(
                key.public_key(),
                name=name,
                site=site,
                role=role,
                departments=departments,
                sealing_key=sealing.public_key(),
                now=now,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        kit = NodeKit.assemble(key, cert, ca.cert, sealing_key=sealing, now=now)
        if home.has_web_ca():
            web = home.load_web_ca().issue_subca(kit.info.name, str(kit.node_id), now=now)
            kit = dataclasses.replace(kit, web=web)
        try:
            # scrypt and fsync take a while: keep them off the event loop.
            data = await asyncio.to_thread(kit.to_bytes, passphrase)
            await asyncio.to_thread(write_private, out, data)
        except FileExistsError as exc:
            raise UsageError(f"{out} exists; meshdesk does not overwrite kits") from exc
        except OSError as exc:
            raise UsageError(f"cannot write the kit to {out}: {exc.strerror}") from exc
        await store.record_issued(_issued_record(kit.info, kit, now))
        await store.save_certificate(str(kit.node_id), _der(kit), _ms(now))
    return kit


async def provision(
    home: NodeHome,
    *,
    kit_path: Path,
    passphrase: bytes | None,
    expect_deployment: NodeId | None,
    now: dt.datetime,
) -> NodeInfo:
    """Provision ``home`` from a kit file.

    Raises:
        KitError: the kit is unreadable, damaged, sealed, or of another deployment.
        HomeError: the home already holds a node.
    """
    kit = NodeKit.read(kit_path, passphrase=passphrase, now=now)
    if expect_deployment is not None and kit.deployment_id != expect_deployment:
        raise KitError(
            f"kit {kit_path} belongs to deployment {kit.info.deployment!r} "
            f"({kit.deployment_id}), not to {expect_deployment}"
        )
    if home.is_provisioned():
        existing = home.load_identity(now=now)
        if existing.deployment_id != kit.deployment_id:
            raise KitError(
                f"kit {kit_path} belongs to deployment {kit.info.deployment!r} "
                f"({kit.deployment_id}), but {home.path} is a node of "
                f"{existing.info.deployment!r} ({existing.deployment_id})"
            )
        raise HomeError(
            f"{home.path} already holds node {existing.info.name!r} ({existing.node_id}); "
            "use another --home"
        )
    home.write_identity(kit)
    if not home.config_path.exists():
        write_default_config(home.config_path)
    await _init_store(home, kit, now)
    return kit.info


def add_web_ca(home: NodeHome, *, now: dt.datetime) -> bool:
    """Give an HQ home created before the web port its web CA and its own web sub-CA.

    Kits issued afterwards carry a web sub-CA; older nodes get theirs with a new kit.
    Returns False when the home had both already (nothing changed).

    Raises:
        HomeError: this home holds no deployment CA (not the creating HQ).
    """
    ca = home.load_ca()
    kit = home.load_identity(now=now)
    changed = False
    if not home.has_web_ca():
        home.write_web_ca(WebCA.create(ca.deployment, now=now))
        changed = True
    if kit.web is None:
        web_ca = home.load_web_ca()
        home.write_web_subca(web_ca.issue_subca(kit.info.name, str(kit.node_id), now=now))
        changed = True
    return changed


@dataclass(frozen=True, slots=True)
class Revocation:
    """The outcome of ``deployment revoke``."""

    node: IssuedNode
    crl_number: int


async def revoke_node(home: NodeHome, query: str, *, reason: str, now: dt.datetime) -> Revocation:
    """Revoke an issued node (by ID, ID prefix or name) and sign a new revocation list.

    Raises:
        UsageError: nothing or more than one node matches; the HQ itself.
        HomeError: this home holds no CA.
    """
    home.require_provisioned()
    ca = home.load_ca()
    me = home.load_identity(now=now)
    async with Store.open(home.store_path) as store:
        matches = await store.find_issued(query)
        exact = [m for m in matches if m.name == query.strip()]
        if exact:
            matches = exact  # a node's full name beats an id that happens to start alike
        elif len(query.replace("-", "").strip()) < 4:
            raise UsageError(
                f"{query!r} is no node's name; give its full name or at least 4 characters "
                "of its node id"
            )
        if not matches:
            raise UsageError(f"no node issued by this HQ matches {query!r}")
        if len(matches) > 1:
            listed = ", ".join(f"{m.name} ({m.node_id})" for m in matches[:5])
            raise UsageError(f"{query!r} matches {len(matches)} nodes: {listed}; be more precise")
        node = matches[0]
        if node.node_id == str(me.node_id):
            raise UsageError("the HQ node that holds the CA cannot revoke itself")
        if await store.is_revoked(node.node_id):
            raise UsageError(f"{node.name} ({node.node_id}) is revoked already")
        await store.mark_revoked(
            RevokedNode(
                node_id=node.node_id, serial=node.serial, revoked_at=_ms(now), reason=reason
            )
        )
        entries = [
            (int(r.serial), dt.datetime.fromtimestamp(r.revoked_at / 1000, tz=dt.UTC))
            for r in await store.revoked_nodes()
        ]
        current = await store.revocation_list()
        number = (current[0] if current else 0) + 1
        crl = RevocationList.build(ca, entries, number=number, now=now)
        if not await store.save_revocation_list(crl.number, crl.der):
            raise AuthError("a newer revocation list appeared while signing; try again")
    return Revocation(node=node, crl_number=crl.number)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``meshdesk status`` reports about a node home."""

    home: Path
    info: NodeInfo
    deployment_id: NodeId
    holds_ca: bool
    listen: str
    language: str
    counts: StoreCounts
    crl_number: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "home": str(self.home),
            **self.info.to_json(),
            "deployment_id": str(self.deployment_id),
            "holds_ca": self.holds_ca,
            "listen": self.listen,
            "language": self.language,
            "store": {
                "events": self.counts.events,
                "authors": self.counts.authors,
                "cases": self.counts.cases,
                "issued_nodes": self.counts.issued_nodes,
                "revoked_nodes": self.counts.revoked_nodes,
                "revocation_list": self.crl_number,
            },
        }


async def node_status(home: NodeHome, *, now: dt.datetime) -> NodeStatus:
    """Read a node's identity, config and store counts (the node need not run)."""
    kit = home.load_identity(now=now)
    config = load_config(home.config_path)
    if not home.store_path.exists():
        raise HomeError(f"{home.store_path} is missing; the node home {home.path} is incomplete")
    async with Store.open(home.store_path) as store:
        counts = await store.counts()
        crl = await store.revocation_list()
    return NodeStatus(
        home=home.path,
        info=kit.info,
        deployment_id=kit.deployment_id,
        holds_ca=home.has_ca(),
        listen=str(config.network.listen),
        language=config.node.language,
        counts=counts,
        crl_number=crl[0] if crl else None,
    )
