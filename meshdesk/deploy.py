"""Throw-away deployments, built the way an administrator builds a real one.

Tests, benches, drills and the demo need whole deployments in a temporary folder.
:func:`build_deployment` makes one from node specs with the operations behind the
CLI (:mod:`meshdesk.admin`): ``deployment create`` in the first node's home (the HQ
node that holds the CA), then for every other node ``deployment issue`` of a kit
and ``init`` of its home from that kit (checked against the deployment id), each
with its role, site and departments. Last, every home's ``config.toml`` is written
from its spec's :class:`~meshdesk.config.Config` (commented, as ``init`` writes it)::

    city = await build_deployment(tmp, "City", [
        HomeSpec("hq", Role.HQ),
        HomeSpec("centre", site="大町", config=Config(calls=CallSettings(auto_accept=True))),
    ])
    city.homes["centre"]  # a provisioned NodeHome

A home's settings are changed later the same way: ``load_config`` →
``dataclasses.replace`` (or ``Config.with_overrides``) → ``NodeHome.write_config``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meshdesk import admin
from meshdesk.config import Config
from meshdesk.home import NodeHome
from meshdesk.identity import NodeId, NodeInfo, Role

__all__ = ["Deployment", "HomeSpec", "build_deployment"]


@dataclass(frozen=True, slots=True)
class HomeSpec:
    """One node of a deployment to build.

    Attributes:
        name: The node's name (in its certificate; may be Japanese).
        role: Its role; the first node of a deployment must be :attr:`Role.HQ`.
        site: Its site (in its certificate).
        departments: Its departments (one certificate OU each).
        config: Its ``config.toml``.
        folder: Its home's folder under the deployment's root (default: ``name``).
    """

    name: str
    role: Role = Role.CENTER
    site: str = "lab"
    departments: tuple[str, ...] = ()
    config: Config = field(default_factory=Config)
    folder: str | None = None

    @property
    def home_folder(self) -> str:
        return self.folder if self.folder is not None else self.name


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment :func:`build_deployment` made: every home and node, by node name.

    Attributes:
        root: The folder holding the homes and kit files.
        name: The deployment's name (in its CA certificate).
        deployment_id: Its id (the CA key's fingerprint), as ``init`` checks it.
        hq: The name of the node that created it and holds the CA.
        homes: Every node's home, in the order of the specs.
        nodes: Every node's certificate information (node id, role, ...).
        kits: The kit file each node other than :attr:`hq` was provisioned from.
    """

    root: Path
    name: str
    deployment_id: NodeId
    hq: str
    homes: Mapping[str, NodeHome]
    nodes: Mapping[str, NodeInfo]
    kits: Mapping[str, Path]

    def node_id(self, name: str) -> str:
        """The node id of node ``name``, as control ops and peer lists show it."""
        return str(self.nodes[name].node_id)


def _check(specs: Sequence[HomeSpec]) -> None:
    if not specs:
        raise ValueError("a deployment needs at least one node")
    if specs[0].role is not Role.HQ:
        raise ValueError(f"the first node creates the deployment: {specs[0].name!r} must be hq")
    for what, values in (
        ("name", [s.name for s in specs]),
        ("home folder", [s.home_folder for s in specs]),
    ):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"two nodes with the same {what}: {', '.join(twice)}")


async def build_deployment(
    root: Path, name: str, specs: Sequence[HomeSpec], *, now: dt.datetime | None = None
) -> Deployment:
    """Create deployment ``name`` under ``root`` with one provisioned home per spec.

    Args:
        root: A folder for the homes (``root/FOLDER``) and kits (``root/FOLDER.kit``);
            created if missing.
        name: The deployment's name.
        specs: Its nodes; the first is the HQ node that creates it.
        now: The clock for certificates (default: now).

    Raises:
        ValueError: no node, the first is not hq, or two share a name or folder.
        MeshdeskError: what ``deployment create``, ``issue`` or ``init`` would report
            (a bad name or site, a home in use), or a config that cannot be written.
    """
    _check(specs)
    now = now if now is not None else dt.datetime.now(dt.UTC)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    first, *rest = specs
    hq = NodeHome(root / first.home_folder)
    nodes = {
        first.name: await admin.create_deployment(
            hq,
            deployment=name,
            node_name=first.name,
            site=first.site,
            departments=first.departments,
            now=now,
        )
    }
    deployment_id = hq.load_identity(now=now).deployment_id
    homes = {first.name: hq}
    kits = {}
    for spec in rest:
        kit = kits[spec.name] = root / f"{spec.home_folder}.kit"
        await admin.issue_kit(
            hq, name=spec.name, site=spec.site, role=spec.role, departments=spec.departments,
            out=kit, passphrase=None, now=now,
        )  # fmt: skip
        home = homes[spec.name] = NodeHome(root / spec.home_folder)
        nodes[spec.name] = await admin.provision(
            home, kit_path=kit, passphrase=None, expect_deployment=deployment_id, now=now
        )
    for spec in specs:
        await asyncio.to_thread(homes[spec.name].write_config, spec.config)
    return Deployment(root, name, deployment_id, first.name, homes, nodes, kits)
