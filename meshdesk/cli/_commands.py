"""Handlers of the CLI commands: parse arguments into calls, format the results."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from meshdesk import admin, control
from meshdesk.cli._output import print_fields, print_qr
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import NodeId, NodeInfo, Role, read_passphrase
from meshdesk.store import Store

Env = Mapping[str, str]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _home(args: argparse.Namespace, env: Env) -> NodeHome:
    return NodeHome.resolve(args.home, env)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if args.passphrase_file is None:
        return None
    return read_passphrase(Path(args.passphrase_file))


def _emit_json(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _info_fields(info: NodeInfo, deployment_id: NodeId | None = None) -> list[tuple[str, str]]:
    deployment = info.deployment
    if deployment_id is not None:
        deployment = f"{deployment} ({deployment_id})"
    return [
        ("node", info.name),
        ("node id", str(info.node_id)),
        ("site", info.site),
        ("role", str(info.role)),
        ("departments", ", ".join(info.departments) or "-"),
        ("deployment", deployment),
    ]


def _report_provisioned(
    args: argparse.Namespace, home: NodeHome, info: NodeInfo, headline: str, advice: str
) -> int:
    """Output shared by ``deployment create`` and ``init``: the node a home now holds."""
    deployment_id = home.load_identity(now=_now()).deployment_id
    if args.json:
        _emit_json({**info.to_json(), "deployment_id": str(deployment_id), "home": str(home.path)})
    else:
        print(headline)
        print_fields(_info_fields(info, deployment_id))
        print(advice)
    if args.qr:
        print_qr(str(info.node_id))
    return 0


def deployment_create(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    info = asyncio.run(
        admin.create_deployment(
            home,
            deployment=args.name,
            node_name=args.node_name,
            site=args.site,
            departments=tuple(args.dept),
            now=_now(),
        )
    )
    deployment_id = home.load_identity(now=_now()).deployment_id
    return _report_provisioned(
        args,
        home,
        info,
        f"Created deployment {info.deployment!r} in {home.path}",
        f"Give new nodes this deployment ID to check their kits: {deployment_id}",
    )


def deployment_web_ca(args: argparse.Namespace, env: Env) -> int:
    """Give an HQ created before the web port its web CA (and itself a web sub-CA)."""
    home = _home(args, env)
    changed = admin.add_web_ca(home, now=_now())
    result = {"changed": changed, "web_ca": str(home.web_ca_cert_path)}
    if args.json:
        print(json.dumps(result))
    elif changed:
        print(f"Added the deployment's web CA to {home.path}; kits issued from now on")
        print("carry a web sub-CA. Restart this node to serve citizens' phones.")
        print(f"City tablets trust {home.web_ca_cert_path} (also served as /ca.crt).")
    else:
        print(f"{home.path} has its web CA and web sub-CA already; nothing changed.")
    return 0


def deployment_issue(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    out = Path(args.out)
    kit = asyncio.run(
        admin.issue_kit(
            home,
            name=args.name,
            site=args.site,
            role=Role(args.role),
            departments=tuple(args.dept),
            out=out,
            passphrase=_passphrase(args),
            now=_now(),
        )
    )
    if args.json:
        _emit_json(
            {
                **kit.info.to_json(),
                "deployment_id": str(kit.deployment_id),
                "kit": str(out),
                "protected": args.passphrase_file is not None,
            }
        )
    else:
        protected = " (passphrase-protected)" if args.passphrase_file else ""
        print(f"Wrote kit {out}{protected}; keep it secret, it holds the node's private key.")
        print_fields(_info_fields(kit.info, kit.deployment_id))
    if args.qr:
        print_qr(str(kit.node_id))
    return 0


def deployment_revoke(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    result = asyncio.run(admin.revoke_node(home, args.node, reason=args.reason, now=_now()))
    # A running HQ node applies the new list at once and gossips it to its peers.
    applied = asyncio.run(control.try_call(home.control_socket, "reload_revocations"))
    if args.json:
        _emit_json(
            {
                "node_id": result.node.node_id,
                "name": result.node.name,
                "serial": result.node.serial,
                "revocation_list": result.crl_number,
                "applied_by_running_node": applied is not None,
            }
        )
    else:
        print(
            f"Revoked {result.node.name} ({result.node.node_id}); "
            f"revocation list #{result.crl_number} signed and stored."
        )
        if applied is not None:
            print("The running node applied it and is passing it on to its peers.")
        else:
            print("No node is running here; the list goes out when this node next runs.")
    return 0


def deployment_nodes(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    home.require_provisioned()
    home.load_ca()

    async def read() -> tuple[list[dict[str, object]], set[str]]:
        async with Store.open(home.store_path) as store:
            revoked = {r.node_id for r in await store.revoked_nodes()}
            rows = [
                {
                    "node_id": n.node_id,
                    "name": n.name,
                    "site": n.site,
                    "role": n.role,
                    "departments": list(n.departments),
                    "revoked": n.node_id in revoked,
                }
                for n in await store.issued_nodes()
            ]
        return rows, revoked

    rows, _ = asyncio.run(read())
    if args.json:
        _emit_json(rows)
        return 0
    for row in rows:
        flag = "  REVOKED" if row["revoked"] else ""
        print(f"{row['node_id']}  {row['role']:<6}  {row['name']} @ {row['site']}{flag}")
    return 0


def init(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    expect: NodeId | None = None
    if args.deployment_id is not None:
        try:
            expect = NodeId.parse(args.deployment_id)
        except ValueError as exc:
            raise UsageError(f"--deployment-id: {exc}") from exc
    info = asyncio.run(
        admin.provision(
            home,
            kit_path=Path(args.kit),
            passphrase=_passphrase(args),
            expect_deployment=expect,
            now=_now(),
        )
    )
    return _report_provisioned(
        args,
        home,
        info,
        f"Provisioned node {info.name!r} in {home.path}",
        "Check the node id against the one HQ printed when it issued the kit.",
    )


def status(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    report = asyncio.run(admin.node_status(home, now=_now()))
    live = asyncio.run(control.try_call(home.control_socket, "status"))
    if args.json:
        _emit_json({**report.to_json(), "running": live is not None, "live": live})
    else:
        counts = report.counts
        fields = _info_fields(report.info, report.deployment_id)
        fields += [
            ("home", str(report.home)),
            ("holds CA", "yes" if report.holds_ca else "no"),
            ("listen", report.listen),
            ("language", report.language),
            (
                "store",
                f"{counts.events} events in {counts.authors} chains, {counts.cases} cases",
            ),
            (
                "revocations",
                f"{counts.revoked_nodes} nodes"
                + (f" (list #{report.crl_number})" if report.crl_number else ""),
            ),
        ]
        if report.holds_ca:
            fields.append(("issued kits", str(counts.issued_nodes)))
        if live is None:
            fields.append(("running", "no"))
        else:
            fields.append(("running", f"yes, up {live['uptime_s']} s, port {live['listen_port']}"))
            fields.append(
                ("peers", f"{live['peers_linked']} linked of {live['peers_known']} known")
            )
            web = live.get("web") or {}
            if web.get("port"):
                fields.append(("web port", f"{web['port']} (citizens' phones, HTTPS)"))
            elif web.get("unavailable"):
                fields.append(("web port", f"off: {web['unavailable']}"))
            warning = (live.get("clock") or {}).get("warning")
            if warning:
                fields.append(("clock", f"WARNING: {warning}"))
        print_fields(fields)
    if args.qr:
        print_qr(str(report.info.node_id))
    return 0


_DEMO_NODES = (
    HomeSpec("本部 HQ", Role.HQ, "市役所 City Hall", ("welfare", "housing"), folder="hq"),
    HomeSpec("第一小学校避難所", Role.CENTER, "大町地区", ("welfare",), folder="centre1"),
    HomeSpec("Civic Gym shelter", Role.CENTER, "Minami ward", (), folder="centre2"),
)


def demo_provision(root: Path) -> list[NodeHome]:
    """Create the demo deployment in ``root``: HQ and two centres, provisioned from kits."""
    now = _now()
    hq = root / _DEMO_NODES[0].home_folder
    print(f"== Creating deployment 'デモ市 Demo City' with its HQ node in {hq}")
    city = asyncio.run(build_deployment(root, "デモ市 Demo City", _DEMO_NODES, now=now))
    for name, kit_path in city.kits.items():
        print(f"== Issued kit {kit_path.name}: fingerprint (node id) {city.node_id(name)}")
    homes = list(city.homes.values())
    for home in homes:
        report = asyncio.run(admin.node_status(home, now=now))
        print(f"\n-- meshdesk status --home {home.path}")
        print_fields(
            [
                *_info_fields(report.info, report.deployment_id),
                ("holds CA", "yes" if report.holds_ca else "no"),
                ("listen", report.listen),
                ("store", f"{report.counts.events} events, {report.counts.issued_nodes} kits"),
            ]
        )
    sys.stdout.flush()
    return homes
