"""Turning parsed TOML into a :class:`~meshdesk.drill.model.Scenario`, collecting problems."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from meshdesk.cases.model import Category, Urgency
from meshdesk.drill._lines import KeyLines, line_of
from meshdesk.drill.model import (
    ROLES,
    Action,
    Announce,
    BundleTrip,
    Call,
    CallJoin,
    Consultations,
    Courier,
    Edge,
    LinkChange,
    LinkQuality,
    NodeSpec,
    Power,
    Revoke,
    Scenario,
    edge,
    parse_duration,
)

__all__ = ["Parser", "build"]

Path = tuple[str | int, ...]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


class Parser:
    def __init__(self, data: dict[str, Any], lines: KeyLines, source: str) -> None:
        self.data = data
        self.lines = lines
        self.source = source
        self.problems: list[tuple[int | None, str]] = []

    def fail(self, path: Path, message: str) -> None:
        self.problems.append((line_of(self.lines, path), message))

    def get(
        self,
        table: Mapping[str, Any],
        path: Path,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        if key not in table:
            if default is ...:
                self.fail(path, f"{_dotted(path)} needs '{key}'")
            return None if default is ... else default
        value = table[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            self.fail((*path, key), f"'{key}' must be {_kind_name(kind)}, not {value!r}")
            return None if default is ... else default
        return value

    def duration(
        self, table: Mapping[str, Any], path: Path, key: str, default: Any = ...
    ) -> float | None:
        if key not in table:
            if default is ...:
                self.fail(path, f"{_dotted(path)} needs '{key}'")
                return None
            return float(default) if default is not None else None
        try:
            return parse_duration(table[key])
        except ValueError as exc:
            self.fail((*path, key), f"'{key}': {exc}")
            return None

    def check_keys(self, table: Mapping[str, Any], path: Path, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.fail(
                    (*path, key), f"unknown key '{key}' in {_dotted(path) or 'the top level'}"
                )


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_ACTIONS = {
    "link_down": {"site", "between", "for"},
    "link_up": {"site", "between"},
    "link_quality": {"site", "between", "loss", "latency", "for"},
    "power_loss": {"node", "for"},
    "restart": {"node"},
    "consultations": {"site", "per_minute", "until", "for", "categories", "urgency"},
    "call": {"id", "from", "to", "duration"},
    "call_join": {"call", "department", "site"},
    "courier": {"node", "site", "stay"},
    "revoke": {"node", "reason"},
    "announce": {"title", "severity", "to", "read_after"},
    "bundle": {"courier", "from", "to", "travel"},
}
_DEFAULT_CATEGORIES = (
    ("welfare_eldercare", 3.0),
    ("medical", 2.0),
    ("supplies", 2.0),
    ("housing", 1.0),
)
_DEFAULT_URGENCY = (("immediate", 1.0), ("high", 2.0), ("normal", 5.0), ("low", 2.0))


def build(p: Parser) -> Scenario | None:
    """Check the document and build the scenario; problems go to ``p.problems``."""
    data = p.data
    p.check_keys(data, (), {"drill", "sites", "topology", "timeline"})
    drill = p.get(data, (), "drill", dict, {})
    path: Path = ("drill",)
    p.check_keys(
        drill,
        path,
        {
            "name",
            "description",
            "duration",
            "seed",
            "time_scale",
            "tick",
            "sample",
            "drain",
            "sim_only",
            "compare",
        },
    )
    name = p.get(drill, path, "name", str)
    description = p.get(drill, path, "description", str, "")
    duration = p.duration(drill, path, "duration")
    seed = p.get(drill, path, "seed", int, 1)
    time_scale = p.get(drill, path, "time_scale", (int, float), 1.0)
    if time_scale is not None and not 0 < time_scale <= 10:
        p.fail((*path, "time_scale"), "'time_scale' must be above 0 and at most 10")
    tick = p.duration(drill, path, "tick", 1.0)
    sample = p.duration(drill, path, "sample", 10.0)
    drain = p.duration(drill, path, "drain", 1800.0)
    sim_only = p.get(drill, path, "sim_only", bool, False)
    compare = p.get(drill, path, "compare", list, [])
    if not all(isinstance(c, str) and _NAME.match(c) for c in compare):
        p.fail((*path, "compare"), "'compare' must list scenario names (files in this folder)")
        compare = []
    for key, value in (("tick", tick), ("sample", sample)):
        if value is not None and value <= 0:
            p.fail((*path, key), f"'{key}' must be above 0")
    nodes, sites = _sites(p, data)
    edges = _topology(p, data, sites)
    timeline = _timeline(p, data, sites, {n.name: n for n in nodes}, edges, duration)
    if (
        p.problems
        or name is None
        or duration is None
        or tick is None
        or sample is None
        or drain is None
    ):
        return None
    if not [n for n in nodes if n.role == "hq"]:
        p.fail(("sites",), "no node has role 'hq': a drill measures what reaches HQ")
        return None
    return Scenario(
        name=name,
        description=description,
        duration=duration,
        seed=seed,
        time_scale=float(time_scale),
        tick=tick,
        sample=sample,
        drain=drain,
        sim_only=sim_only,
        sites=tuple(sites),
        nodes=tuple(nodes),
        edges=frozenset(edges),
        timeline=tuple(sorted(timeline, key=lambda a: a.at)),
        source=p.source,
        node_by_name={n.name: n for n in nodes},
        compare=tuple(compare),
    )


def _name(p: Parser, table: Mapping[str, Any], path: Path, key: str = "name") -> str | None:
    value = p.get(table, path, key, str)
    if value is not None and not _NAME.match(value):
        p.fail(
            (*path, key), f"'{key}' {value!r}: use letters, digits, '-', '_' or '.' (at most 48)"
        )
        return None
    return str(value) if value is not None else None


def _departments(
    p: Parser, table: Mapping[str, Any], path: Path, default: tuple[str, ...]
) -> tuple[str, ...]:
    value = p.get(table, path, "departments", list, list(default))
    if not all(isinstance(d, str) and d for d in value):
        p.fail((*path, "departments"), "'departments' must be a list of names")
        return ()
    return tuple(value)


def _sites(p: Parser, data: Mapping[str, Any]) -> tuple[list[NodeSpec], list[str]]:
    raw = p.get(data, (), "sites", list)
    nodes: list[NodeSpec] = []
    sites: list[str] = []
    seen: set[str] = set()
    for i, site in enumerate(raw or []):
        path: Path = ("sites", i)
        if not isinstance(site, dict):
            p.fail(path, "each entry of 'sites' must be a table ([[sites]])")
            continue
        p.check_keys(site, path, {"name", "role", "departments", "nodes"})
        name = _name(p, site, path)
        if name is None:
            continue
        if name in sites:
            p.fail((*path, "name"), f"site {name!r} is defined twice")
        sites.append(name)
        role = p.get(site, path, "role", str, "center")
        if role not in ROLES:
            p.fail((*path, "role"), f"role {role!r} is not one of {', '.join(ROLES)}")
        depts = _departments(p, site, path, ())
        members = p.get(site, path, "nodes", list, [])
        if not members:
            members = [{"name": name}]
        for j, member in enumerate(members):
            npath: Path = (*path, "nodes", j)
            if not isinstance(member, dict):
                p.fail(npath, "each node must be a table ([[sites.nodes]])")
                continue
            p.check_keys(member, npath, {"name", "role", "departments"})
            node_name = _name(p, member, npath)
            node_role = p.get(member, npath, "role", str, role)
            if node_role not in ROLES:
                p.fail((*npath, "role"), f"role {node_role!r} is not one of {', '.join(ROLES)}")
            node_depts = _departments(p, member, npath, depts)
            if node_name is None:
                continue
            if node_name in seen:
                p.fail((*npath, "name"), f"node {node_name!r} is defined twice")
            seen.add(node_name)
            nodes.append(NodeSpec(node_name, name, node_role, node_depts))
    if raw is not None and not sites:
        p.fail(("sites",), "a scenario needs at least one site")
    return nodes, sites


def _site_list(p: Parser, value: object, path: Path, sites: list[str], *, pair: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        p.fail(path, "must be a list of site names")
        return []
    if pair and len(value) != 2:
        p.fail(path, f"a link joins exactly two sites, not {len(value)}")
        return []
    out = []
    for name in value:
        if name not in sites:
            p.fail(path, f"unknown site {name!r}")
        else:
            out.append(name)
    return out


def _topology(p: Parser, data: Mapping[str, Any], sites: list[str]) -> set[Edge]:
    topo = p.get(data, (), "topology", dict, {})
    p.check_keys(topo, ("topology",), {"networks", "links"})
    edges: set[Edge] = {(s, s) for s in sites}  # a site's own LAN
    for i, network in enumerate(p.get(topo, ("topology",), "networks", list, [])):
        members = _site_list(p, network, ("topology", "networks", i), sites, pair=False)
        edges.update(edge(a, b) for a in members for b in members if a != b)
    for i, link in enumerate(p.get(topo, ("topology",), "links", list, [])):
        members = _site_list(p, link, ("topology", "links", i), sites, pair=True)
        if len(members) == 2 and members[0] != members[1]:
            edges.add(edge(*members))
    return edges


def _mix(
    p: Parser,
    table: Mapping[str, Any],
    path: Path,
    key: str,
    allowed: set[str],
    default: tuple[tuple[str, float], ...],
) -> tuple[tuple[str, float], ...]:
    raw = p.get(table, path, key, dict, None)
    if raw is None:
        return default
    out = []
    for name, weight in raw.items():
        if name not in allowed:
            p.fail((*path, key), f"'{key}': {name!r} is not one of {', '.join(sorted(allowed))}")
        elif isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            p.fail((*path, key), f"'{key}': the weight of {name!r} must be a number ≥ 0")
        else:
            out.append((name, float(weight)))
    if raw and not any(w > 0 for _, w in out):
        p.fail((*path, key), f"'{key}' needs a weight above 0")
    return tuple(out) or default


def _edges_of(
    p: Parser, entry: Mapping[str, Any], path: Path, sites: list[str], edges: set[Edge]
) -> tuple[tuple[Edge, ...], str | None]:
    if ("site" in entry) == ("between" in entry):
        p.fail(path, "give either 'site' (all of its links) or 'between' (one link)")
        return (), None
    if "site" in entry:
        site = p.get(entry, path, "site", str)
        if site not in sites:
            p.fail((*path, "site"), f"unknown site {site!r}")
            return (), None
        found = tuple(sorted(e for e in edges if site in e and e[0] != e[1]))
        if not found:
            p.fail((*path, "site"), f"site {site!r} has no links in [topology]")
        return found, site
    pair = _site_list(p, entry["between"], (*path, "between"), sites, pair=True)
    if len(pair) != 2:
        return (), None
    link = edge(*pair)
    if link not in edges:
        p.fail((*path, "between"), f"[topology] has no link between {pair[0]!r} and {pair[1]!r}")
        return (), None
    return (link,), None


def _timeline(
    p: Parser,
    data: Mapping[str, Any],
    sites: list[str],
    nodes: Mapping[str, NodeSpec],
    edges: set[Edge],
    duration: float | None,
) -> list[Action]:
    out: list[Action] = []
    end = duration if duration is not None else float("inf")
    calls: set[str] = set()
    departments = {d for n in nodes.values() for d in n.departments}
    for i, entry in enumerate(p.get(data, (), "timeline", list, [])):
        path: Path = ("timeline", i)
        if not isinstance(entry, dict):
            p.fail(path, "each timeline entry must be a table ([[timeline]])")
            continue
        action = p.get(entry, path, "action", str)
        at = p.duration(entry, path, "at")
        if action is None or at is None:
            continue
        if action not in _ACTIONS:
            p.fail((*path, "action"), f"unknown action {action!r} (one of {', '.join(_ACTIONS)})")
            continue
        p.check_keys(entry, path, {"at", "action", *_ACTIONS[action]})
        if at > end:
            p.fail((*path, "at"), f"'at' is after the end of the drill ({end:g} s)")
        line = line_of(p.lines, path) or 0
        span = p.duration(entry, path, "for", None) if "for" in entry else None

        def node_of(entry: Mapping[str, Any] = entry, path: Path = path) -> str | None:
            key = "node"
            node = p.get(entry, path, key, str)
            if node is not None and node not in nodes:
                p.fail((*path, key), f"unknown node {node!r}")
                return None
            return str(node) if node is not None else None

        if action in ("link_down", "link_up"):
            found, site = _edges_of(p, entry, path, sites, edges)
            if found:
                out.append(LinkChange(at, action == "link_up", found, site, line))
                if span is not None:
                    out.append(LinkChange(at + span, True, found, site, line))
        elif action == "link_quality":
            found, _ = _edges_of(p, entry, path, sites, edges)
            loss = p.get(entry, path, "loss", (int, float), 0.0)
            latency = p.duration(entry, path, "latency", 0.0)
            if not 0 <= loss < 1:
                p.fail(
                    (*path, "loss"),
                    "'loss' is a fraction of frames, from 0 up to (not including) 1",
                )
            elif found and latency is not None:
                out.append(LinkQuality(at, found, float(loss), latency, line))
                if span is not None:
                    out.append(LinkQuality(at + span, found, 0.0, 0.0, line))
        elif action in ("power_loss", "restart"):
            node = node_of()
            if node is not None:
                out.append(Power(at, node, action == "restart", line))
                if span is not None:
                    out.append(Power(at + span, node, True, line))
        elif action == "consultations":
            site = p.get(entry, path, "site", str)
            if site not in sites:
                p.fail((*path, "site"), f"unknown site {site!r}")
            rate = p.get(entry, path, "per_minute", (int, float))
            if rate is not None and not 0 < rate <= 600:
                p.fail((*path, "per_minute"), "'per_minute' must be above 0 and at most 600")
            until = p.duration(entry, path, "until", None) if "until" in entry else None
            if until is None:
                until = at + span if span is not None else end
            if until < at:
                p.fail((*path, "until"), "'until' is before 'at'")
            cats = _mix(
                p, entry, path, "categories", {c.value for c in Category}, _DEFAULT_CATEGORIES
            )
            urg = _mix(p, entry, path, "urgency", {u.value for u in Urgency}, _DEFAULT_URGENCY)
            if site in sites and rate is not None:
                out.append(Consultations(at, site, float(rate), min(until, end), cats, urg, line))
        elif action == "call":
            call_id = _name(p, entry, path, "id")
            ends = [p.get(entry, path, k, str) for k in ("from", "to")]
            for key, site in zip(("from", "to"), ends, strict=True):
                if site is not None and site not in sites:
                    p.fail((*path, key), f"unknown site {site!r}")
            length = p.duration(entry, path, "duration")
            if call_id in calls:
                p.fail((*path, "id"), f"call {call_id!r} is placed twice")
            if call_id is not None and length is not None and all(s in sites for s in ends):
                calls.add(call_id)
                out.append(Call(at, call_id, str(ends[0]), str(ends[1]), length, line))
        elif action == "call_join":
            call_id = p.get(entry, path, "call", str)
            if call_id is not None and call_id not in calls:
                p.fail((*path, "call"), f"no call {call_id!r} is placed before this line")
            dept = p.get(entry, path, "department", str, None)
            site = p.get(entry, path, "site", str, None)
            if (dept is None) == (site is None):
                p.fail(path, "give either 'department' or 'site' that joins the call")
            elif dept is not None and dept not in departments:
                p.fail((*path, "department"), f"no node lists department {dept!r}")
            elif site is not None and site not in sites:
                p.fail((*path, "site"), f"unknown site {site!r}")
            elif call_id is not None:
                out.append(CallJoin(at, call_id, dept, site, line))
        elif action == "courier":
            node = node_of()
            site = p.get(entry, path, "site", str, None)
            if site is not None and site not in sites:
                p.fail((*path, "site"), f"unknown site {site!r}")
            stay = p.duration(entry, path, "stay", None) if "stay" in entry else None
            if node is not None:
                out.append(Courier(at, node, site, line))
                if stay is not None:
                    out.append(Courier(at + stay, node, None, line))
        elif action == "revoke":
            node = node_of()
            reason = p.get(entry, path, "reason", str, "reported stolen")
            if node is not None and nodes[node].role == "hq":
                p.fail((*path, "node"), "an HQ node cannot be revoked in a drill (HQ revokes)")
            elif node is not None:
                out.append(Revoke(at, node, reason, line))
        elif action == "announce":
            title = p.get(entry, path, "title", str)
            severity = p.get(entry, path, "severity", str, "info")
            to = p.get(entry, path, "to", list, [])
            read_after = p.duration(entry, path, "read_after", 60.0)
            if severity not in ("info", "warning", "severe"):
                p.fail((*path, "severity"), "'severity' is one of info, warning, severe")
            unknown = [s for s in to if s not in sites]
            if unknown:
                p.fail((*path, "to"), f"unknown sites {unknown!r}")
            if not any(n.role == "hq" for n in nodes.values()):
                p.fail(path, "only HQ posts announcements, and this scenario has no HQ")
            elif title and read_after is not None and not unknown:
                out.append(Announce(at, title, str(severity), tuple(to), read_after, line))
        elif action == "bundle":
            courier = p.get(entry, path, "courier", str, "staff")
            ends = [p.get(entry, path, k, str) for k in ("from", "to")]
            for key, site in zip(("from", "to"), ends, strict=True):
                if site is not None and site not in sites:
                    p.fail((*path, key), f"unknown site {site!r}")
            travel = p.duration(entry, path, "travel", 0.0)
            if travel is not None and all(s in sites for s in ends):
                out.append(BundleTrip(at, str(courier), str(ends[0]), str(ends[1]), travel, line))
    return out
