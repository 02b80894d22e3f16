"""What a drill scenario is, once parsed: nodes, links between sites, a timeline."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from meshdesk.errors import DrillError

__all__ = [
    "ROLES",
    "Action",
    "Announce",
    "BundleTrip",
    "Call",
    "CallJoin",
    "Consultations",
    "Courier",
    "Edge",
    "LinkChange",
    "LinkQuality",
    "NodeSpec",
    "Power",
    "Revoke",
    "Scenario",
    "ScenarioError",
    "edge",
    "parse_duration",
]

ROLES = ("hq", "center", "desk")
#: A link between two sites (names sorted); a site's own LAN is ``(site, site)``.
Edge = tuple[str, str]
_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$"
)


class ScenarioError(DrillError):
    """A scenario that cannot be played; ``problems`` are ``(line, message)``."""

    def __init__(self, source: str, problems: list[tuple[int | None, str]]) -> None:
        self.source = source
        self.problems = problems
        parts = [
            f"{source}:{line}: {msg}" if line else f"{source}: {msg}" for line, msg in problems
        ]
        super().__init__("; ".join(parts))


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``1.5``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"500ms"``.

    Raises:
        ValueError: anything else, or a negative number.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match and any(match.groups()):
            h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
            return h * 3600 + m * 60 + s + ms / 1000
    raise ValueError(f'{value!r} is not a duration (like 90, "90s", "10m", "1h30m")')


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    site: str
    role: str
    departments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkChange:
    """Links go down (``up`` False) or come back; ``site`` set when a whole site is cut."""

    at: float
    up: bool
    edges: tuple[Edge, ...]
    site: str | None
    line: int = 0


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """Frame loss (0..1) and one-way latency (seconds) on links; 0 and 0 clear them."""

    at: float
    edges: tuple[Edge, ...]
    loss: float
    latency: float
    line: int = 0


@dataclass(frozen=True, slots=True)
class Power:
    """Power loss (kill -9) when ``on`` is False; a restart when True."""

    at: float
    node: str
    on: bool
    line: int = 0


@dataclass(frozen=True, slots=True)
class Consultations:
    """Consultations arrive at ``site`` (Poisson, ``per_minute``) until ``until``."""

    at: float
    site: str
    per_minute: float
    until: float
    categories: tuple[tuple[str, float], ...]
    urgency: tuple[tuple[str, float], ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    at: float
    call_id: str
    caller: str  # site
    callee: str  # site
    duration: float
    line: int = 0


@dataclass(frozen=True, slots=True)
class CallJoin:
    """A department (any node listing it) or a site joins a running call."""

    at: float
    call_id: str
    department: str | None
    site: str | None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Courier:
    """The courier laptop ``node`` arrives at ``site`` (None: it is on the road)."""

    at: float
    node: str
    site: str | None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Revoke:
    """HQ revokes ``node`` (reported stolen); the list spreads along links."""

    at: float
    node: str
    reason: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class Announce:
    """HQ posts an announcement to ``sites`` (empty: every site); at each addressed
    site an operator reads it ``read_after`` seconds after the site's node has it."""

    at: float
    title: str
    severity: str
    sites: tuple[str, ...]
    read_after: float
    line: int = 0


@dataclass(frozen=True, slots=True)
class BundleTrip:
    """``courier`` (a person, not a node) carries a USB bundle of everything a node of
    ``source`` holds at ``at`` to ``target``, where it is imported ``travel`` s later."""

    at: float
    courier: str
    source: str
    target: str
    travel: float
    line: int = 0


Action = (
    LinkChange | LinkQuality | Power | Consultations | Call | CallJoin | Courier | Revoke
    | Announce | BundleTrip
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration: float
    seed: int
    time_scale: float
    tick: float
    sample: float
    drain: float
    sim_only: bool
    sites: tuple[str, ...]
    nodes: tuple[NodeSpec, ...]
    edges: frozenset[Edge]
    timeline: tuple[Action, ...]
    source: str = ""
    node_by_name: Mapping[str, NodeSpec] = field(default_factory=dict)
    #: Scenarios (names, in this one's folder) played too in sim mode, so that the
    #: report sets this mesh's sync cost beside theirs (prefecture-1000: 100, 300).
    compare: tuple[str, ...] = ()

    @property
    def hq_nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.role == "hq")


def edge(a: str, b: str) -> Edge:
    return (a, b) if a <= b else (b, a)
