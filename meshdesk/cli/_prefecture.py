"""``meshdesk prefecture …`` (the hub's CA) and ``meshdesk hub join`` (a city HQ).

Prefecture side, in the prefecture home (``--home``, else
``$MESHDESK_PREFECTURE_HOME``)::

    meshdesk prefecture init --name 静岡県
    meshdesk prefecture issue-server hub1 --host hub1.pref.example --host 10.0.0.11
    meshdesk prefecture issue-client projection   # meshdesk hub run's identity
    meshdesk prefecture issue-city 221007 --name 静岡市 --hub tls://hub1.pref.example:7422 -o FILE
    meshdesk prefecture revoke 221007 --reason "laptop stolen"
    meshdesk prefecture list
    meshdesk prefecture authorization      # the NATS users block for the hub servers
    meshdesk prefecture hub-config hub1 --listen 0.0.0.0:4222 --cluster 0.0.0.0:6222 \
        --route hub2.pref.example:6222 --route hub3.pref.example:6222 \
        --leaf 0.0.0.0:7422 --store /var/lib/meshdesk-hub --out /etc/nats/hub1.conf

City side, in the city HQ's node home::

    meshdesk hub join FILE [--yes]

The ceremony is in docs/hub-join.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from meshdesk.cli._output import print_fields
from meshdesk.config import Endpoint
from meshdesk.errors import UsageError
from meshdesk.home import NodeHome
from meshdesk.hub.natsconf import hub_authorization
from meshdesk.hub.serverconf import HubServerPlan, write_hub_server_config
from meshdesk.identity import read_passphrase
from meshdesk.prefecture import (
    PrefectureHome,
    ServerFiles,
    join_hub,
    municipality_code,
    plan_join,
)

__all__ = ["add_hub_join_parser", "add_prefecture_parser"]

Env = Mapping[str, str]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _emit(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def add_prefecture_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pref = commands.add_parser(
        "prefecture", help="the prefecture hub's CA: admit and revoke cities (prefecture HQ)"
    )
    actions = pref.add_subparsers(dest="prefecture_action", metavar="ACTION", required=True)

    init = actions.add_parser("init", help="create the prefecture CA in a new prefecture home")
    init.add_argument("--name", required=True, help="the prefecture's name, e.g. 静岡県")
    init.set_defaults(handler=_init)

    server = actions.add_parser("issue-server", help="a certificate for one hub NATS server")
    server.add_argument("server", metavar="NAME", help="server name, e.g. hub1")
    server.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="host name or IP address the server is reached at (repeatable; 127.0.0.1 always)",
    )
    server.set_defaults(handler=_issue_server)

    client = actions.add_parser(
        "issue-client", help="a client certificate for meshdesk hub run (the projection)"
    )
    client.add_argument(
        "client", metavar="NAME", nargs="?", default="projection",
        help="client name (default: projection, which meshdesk hub run uses)",
    )  # fmt: skip
    client.set_defaults(handler=_issue_client)

    city = actions.add_parser("issue-city", help="admit a city: write its hub credential file")
    city.add_argument("code", metavar="CODE", help="municipality code, e.g. 221007")
    city.add_argument("--name", required=True, help="the city's name, e.g. 静岡市")
    city.add_argument(
        "--hub",
        action="append",
        default=[],
        metavar="URL",
        help="a hub leaf-node URL the city connects to, e.g. tls://hub1:7422 (repeatable)",
    )
    city.add_argument("-o", "--out", required=True, metavar="FILE", help="credential file")
    city.add_argument(
        "--replace", action="store_true", help="revoke the city's current credential first"
    )
    city.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="file whose first line is a passphrase protecting the credential",
    )
    city.set_defaults(handler=_issue_city)

    revoke = actions.add_parser("revoke", help="revoke a city: the hub stops taking its feed")
    revoke.add_argument("code", metavar="CODE", help="municipality code")
    revoke.add_argument("--reason", required=True, help="why (kept in the roster)")
    revoke.set_defaults(handler=_revoke)

    listing = actions.add_parser("list", help="admitted and revoked cities")
    listing.set_defaults(handler=_list)

    authz = actions.add_parser(
        "authorization", help="print the hub servers' NATS authorization block"
    )
    authz.add_argument("--account", metavar="NAME", help="bind the city users to this account")
    authz.set_defaults(handler=_authorization)

    conf = actions.add_parser(
        "hub-config",
        help="write one hub server's whole NATS configuration (again after each revoke)",
    )
    conf.add_argument("server", metavar="NAME", help="the server, as named to issue-server")
    conf.add_argument(
        "--listen",
        required=True,
        type=_endpoint,
        metavar="HOST:PORT",
        help="where it takes clients (meshdesk hub run), e.g. 0.0.0.0:4222",
    )
    conf.add_argument(
        "--cluster",
        required=True,
        type=_endpoint,
        metavar="HOST:PORT",
        help="where the other hub servers' routes connect, e.g. 0.0.0.0:6222",
    )
    conf.add_argument(
        "--route",
        "--routes",
        action="append",
        default=[],
        type=_endpoints,
        metavar="HOST:PORT",
        help="the other hub servers' cluster addresses"
        " (repeatable, or comma-separated), e.g. hub2.pref.example:6222",
    )
    conf.add_argument(
        "--leaf",
        required=True,
        type=_endpoint,
        metavar="HOST:PORT",
        help="where the city HQs' leaf nodes connect, e.g. 0.0.0.0:7422",
    )
    conf.add_argument(
        "--http",
        type=_endpoint,
        metavar="HOST:PORT",
        help="monitoring endpoint (/leafz), e.g. 127.0.0.1:8222 (default: none)",
    )
    conf.add_argument(
        "--store",
        required=True,
        metavar="DIR",
        help="the JetStream folder on the server (an absolute path)",
    )
    conf.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="where the server's certificate, key"
        " and ca.crt sit on its machine (default: this prefecture home's files)",
    )
    conf.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="FILE",
        help="the configuration file to write (owner-only)",
    )
    conf.set_defaults(handler=_hub_config)

    for action in (init, server, client, city, revoke, listing, authz, conf):
        action.add_argument(
            "--home",
            metavar="DIR",
            help="prefecture home (default: $MESHDESK_PREFECTURE_HOME, else the user data folder)",
        )
        action.add_argument("--json", action="store_true", help="print one JSON object")


def add_hub_join_parser(hub_actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hub join`` under the ``hub`` command (whose other actions run the hub)."""
    join = hub_actions.add_parser(
        "join", help="import the prefecture's hub credential into this city HQ"
    )
    join.add_argument("credential", metavar="FILE", help="the credential the prefecture issued")
    join.add_argument(
        "--yes",
        action="store_true",
        help="the prefecture CA fingerprint has been checked: do not ask (scripts)",
    )
    join.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="file whose first line is the credential's passphrase (if it is protected)",
    )
    join.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME)")
    join.add_argument("--json", action="store_true", help="print one JSON object")
    join.set_defaults(handler=_join)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if args.passphrase_file is None:
        return None
    return read_passphrase(Path(args.passphrase_file))


def _home(args: argparse.Namespace, env: Env) -> PrefectureHome:
    return PrefectureHome.resolve(args.home, env)


def _init(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    ca = home.init(args.name, now=_now())
    if args.json:
        _emit(
            {"prefecture": ca.name, "prefecture_id": str(ca.prefecture_id), "home": str(home.path)}
        )
        return 0
    print(f"Created the hub CA of {ca.name} in {home.path}")
    print_fields([("prefecture", ca.name), ("CA fingerprint", str(ca.prefecture_id))])
    print("Cities compare this fingerprint when they join; read it to them or print it.")
    return 0


def _issue_server(args: argparse.Namespace, env: Env) -> int:
    files = _home(args, env).issue_server(args.server, args.host, now=_now())
    return _issued(args, files, f"Signed a certificate for hub server {files.name}; its NATS"
                   " tls block names:", ("cert_file", "key_file", "ca_file"),
                   "Issue server certificates before city credentials: each credential"
                   " carries them.")  # fmt: skip


def _issue_client(args: argparse.Namespace, env: Env) -> int:
    files = _home(args, env).issue_client(args.client, now=_now())
    return _issued(args, files, f"Signed a client certificate for the hub client {files.name}:",
                   ("certificate", "key", "prefecture CA"),
                   "Render the hub servers' authorization again (it admits this client) and"
                   " reload them.")  # fmt: skip


def _issued(
    args: argparse.Namespace, files: ServerFiles, heading: str, labels: tuple[str, str, str],
    hint: str,
) -> int:  # fmt: skip
    """Say where a certificate, its key and the CA went (or print them as JSON)."""
    result = {k: str(v) for k, v in dataclasses.asdict(files).items()}
    if args.json:
        _emit(result)
        return 0
    print(heading)
    paths = (result["cert_path"], result["key_path"], result["ca_path"])
    print_fields(list(zip(labels, paths, strict=True)))
    print(hint)
    return 0


def _issue_city(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    out = Path(args.out)
    cred = home.issue_city(
        args.code,
        name=args.name,
        urls=args.hub,
        out=out,
        replace=args.replace,
        passphrase=_passphrase(args),
        now=_now(),
    )
    result = {
        "city_code": cred.city_code,
        "city_name": cred.city_name,
        "serial": f"{cred.cert.serial_number:x}",
        "prefecture_id": str(cred.prefecture_id),
        "servers": len(cred.servers),
        "credential": str(out),
        "protected": args.passphrase_file is not None,
    }
    if args.json:
        _emit(result)
        return 0
    print(f"Wrote the hub credential of {cred.city_name} ({cred.city_code}) to {out}.")
    print("It holds the city's private key: hand it over on a USB stick, not by e-mail", end="")
    print(" (the passphrase separately)." if args.passphrase_file else ".")
    print_fields(
        [
            ("city", f"{cred.city_code} {cred.city_name}"),
            ("CA fingerprint", str(cred.prefecture_id)),
            ("hub servers", str(len(cred.servers))),
            ("hub URLs", ", ".join(cred.urls) or "-"),
        ]
    )
    print("Reload the hub servers' NATS configuration for the city to be let in.")
    return 0


def _revoke(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    code = municipality_code(args.code)
    roster = home.revoke_city(code, reason=args.reason, now=_now())
    revoked = [e for e in roster.city(code) if e.revoked]
    result = {
        "city_code": code,
        "revoked_credentials": [f"{e.serial:x}" for e in revoked],
        "revocation_list": roster.revocations.number,
    }
    if args.json:
        _emit(result)
        return 0
    print(
        f"Revoked city {result['city_code']}: revocation list #{roster.revocations.number} "
        "signed and stored."
    )
    print("Reload the hub servers' NATS configuration: the city's leaf node is refused, and")
    print("the hub's consumer drops whatever the city still sends.")
    return 0


def _list(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    roster = home.load_roster()
    rows = [e.to_json() for e in roster.entries]
    cities = roster.entries
    if args.json:
        _emit(
            {
                "prefecture_id": str(home.load_ca().prefecture_id),
                "revocation_list": roster.revocations.number,
                "cities": rows,
            }
        )
        return 0
    if not cities:
        print("no city admitted yet")
    for e in cities:
        state = "admitted"
        if e.revoked_at is not None:
            state = f"REVOKED {e.revoked_at:%Y-%m-%d}: {e.reason}"
        print(f"{e.code}  {e.name}  issued {e.issued_at:%Y-%m-%d}  {e.serial:x}  {state}")
    return 0


def _authorization(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    text = hub_authorization(
        home.load_roster(), home.client_subjects(), now=_now(), account=args.account
    )
    if args.json:
        _emit({"authorization": text})
    else:
        sys.stdout.write(text)
    return 0


def _endpoint(text: str) -> Endpoint:
    try:
        return Endpoint.parse(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _endpoints(text: str) -> list[Endpoint]:
    return [_endpoint(part) for part in text.split(",") if part.strip()]


def _absolute(option: str, value: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        raise UsageError(f"{option} {value}: give an absolute path (as on the hub server)")
    return path


def _hub_config(args: argparse.Namespace, env: Env) -> int:
    home = _home(args, env)
    routes = tuple(r for group in args.route for r in group)
    tls_dir = None if args.tls_dir is None else _absolute("--tls-dir", args.tls_dir)
    plan = HubServerPlan(args.server, args.listen, args.cluster, args.leaf, routes,
                         _absolute("--store", args.store), http=args.http,
                         tls_dir=tls_dir)  # fmt: skip
    out = Path(args.out).absolute()
    command = ["meshdesk", "prefecture", "hub-config", plan.name, "--home", str(home.path),
               "--listen", str(plan.listen), "--cluster", str(plan.cluster),
               *(a for r in routes for a in ("--route", str(r))), "--leaf", str(plan.leaf),
               *(() if plan.http is None else ("--http", str(plan.http))),
               "--store", str(plan.store_dir),
               *(() if tls_dir is None else ("--tls-dir", str(tls_dir))),
               "--out", str(out)]  # fmt: skip
    try:
        write_hub_server_config(home, plan, out, now=_now(), command=command)
    except ValueError as exc:  # a path or name NATS configuration cannot hold
        raise UsageError(str(exc)) from None
    cities = [e.code for e in home.load_roster().active()]
    result = {"server": plan.name, "config": str(out), "admitted_cities": cities}
    if args.json:
        _emit(result)
        return 0
    print(f"Wrote the NATS configuration of hub server {plan.name} to {out} (owner-only).")
    print_fields([("admitted cities", ", ".join(cities) or "none"),
                  ("start", f"nats-server -c {out}")])  # fmt: skip
    print("After `meshdesk prefecture revoke` (or issue-city), run this command again and")
    print("reload the server: nats-server --signal reload (or kill -HUP <pid>).")
    return 0


def _join(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    plan = plan_join(home, Path(args.credential), passphrase=_passphrase(args), now=_now())
    cred = plan.credential
    confirmed = args.yes
    if plan.pins and not confirmed and not args.json:
        print(f"Hub credential for city {cred.city_code} ({cred.city_name})")
        print(f"from the prefecture {cred.prefecture}, whose CA fingerprint is:")
        print(f"    {plan.fingerprint}")
        print("Compare it with the fingerprint the prefecture gave you (phone, paper).")
        if sys.stdin.isatty():
            answer = input("Does it match? Type yes to pin this prefecture CA: ")
            confirmed = answer.strip().lower() in ("yes", "y", "はい")
    files = join_hub(home, plan, confirmed=confirmed)
    result = {
        "city_code": cred.city_code,
        "city_name": cred.city_name,
        "prefecture": cred.prefecture,
        "prefecture_id": str(cred.prefecture_id),
        "pinned_now": plan.pins,
        "hub_dir": str(files.dir),
    }
    if args.json:
        _emit(result)
        return 0
    pinned = "pinned now" if plan.pins else "pinned earlier, unchanged"
    print(f"Joined the prefecture hub as city {cred.city_code} ({cred.city_name}).")
    print_fields(
        [
            ("prefecture CA", f"{cred.prefecture_id} ({pinned})"),
            ("files", str(files.dir)),
            ("hub URLs", ", ".join(cred.urls) or "-"),
        ]
    )
    print(f"Delete {args.credential} now: it holds the city's hub key.")
    return 0
