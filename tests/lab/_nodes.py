"""Shared helpers for lab tests that run real ``meshdesk run`` nodes.

Deployments are built with the deployment builder (:mod:`meshdesk.deploy`, the
operations behind ``deployment create``/``issue``/``init``) in the root namespace (no
network needed), ``meshdesk run`` runs inside a lab host, and each node is read
through its control socket (``HOME/control.sock``, a file, reachable from the root
namespace) and its log.

Not a test module (the leading underscore keeps pytest from collecting it); the lab
directory is on ``sys.path`` because the tests directory is not a package.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from meshdesk import control
from meshdesk.config import Config
from meshdesk.deploy import Deployment, HomeSpec, build_deployment
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.lab import Lab, LabHost, LabProcess
from meshdesk.lab.phone import run_coroutine

if TYPE_CHECKING:
    from waits import WaitUntil

MESHDESK = str(Path(sys.executable).parent / "meshdesk")
PORT = 7420
#: Generous bound for start-up, mDNS and dialling (no stated product limit).
SETTLE = 10.0
#: The product's limit for marking a lost peer down (dead_after 5 s + one tick).
MARKED_DOWN_WITHIN = 6.0


class LabFactory(Protocol):
    """The ``lab_factory`` fixture: a lab of ``n`` hosts, torn down after the test."""

    def __call__(self, n: int, *, subnet: str | None = None) -> Lab: ...


def meshdesk_cli(*args: str | Path) -> str:
    """Run the meshdesk CLI in the root namespace; its stdout, or fail with stderr."""
    __tracebackhide__ = True
    argv = [MESHDESK, *map(str, args)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr}", pytrace=False)
    return proc.stdout


def hq_spec(name: str = "hq", *, config: Config | None = None) -> HomeSpec:
    """The HQ node that creates a test deployment (site 本庁)."""
    return HomeSpec(name, Role.HQ, "本庁", config=config or Config())


def member(
    name: str,
    *,
    role: Role = Role.CENTER,
    depts: Iterable[str] = (),
    config: Config | None = None,
) -> HomeSpec:
    """Another node of a test deployment, at its own site ``site-NAME``."""
    return HomeSpec(name, role, f"site-{name}", tuple(depts), config or Config())


def deployment(root: Path, name: str, *nodes: HomeSpec) -> Deployment:
    """:func:`~meshdesk.deploy.build_deployment` for a (synchronous) test."""
    return asyncio.run(build_deployment(root, name, nodes))


@dataclass
class RunningNode:
    """A ``meshdesk run`` process on a lab host, seen through its control socket and log."""

    name: str
    home: NodeHome
    host: LabHost
    proc: LabProcess
    _log_mark: int = field(default=0, repr=False)

    @property
    def control_socket(self) -> Path:
        return self.home.control_socket

    @property
    def log(self) -> Path:
        return self.proc.log

    def call(self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 10.0) -> Any:
        assert self.proc.poll() is None, f"{self.name} exited: {self.log_text()[-2000:]}"
        # In a worker thread while a Playwright browser keeps a loop running here.
        return run_coroutine(lambda: control.call(self.control_socket, op, args, wait=wait))

    def peers(self) -> list[dict[str, Any]]:
        """What ``meshdesk peers --json`` prints, through the same control call."""
        assert self.proc.poll() is None, f"{self.name} exited: {self.log_text()[-2000:]}"
        result: list[dict[str, Any]] = self.call("peers", wait=2.0)
        return result

    def states(self) -> dict[str, str]:
        """``{peer name: state}``."""
        return {peer["name"]: peer["state"] for peer in self.peers()}

    def answers(self) -> bool:
        try:
            self.peers()
        except control.NodeNotRunning:
            return False
        return True

    def case(self, op: str, **args: Any) -> Any:
        """One ``meshdesk case OP`` through the control socket (what the CLI sends)."""
        if op not in ("list", "show"):
            args.setdefault("operator", f"op-{self.name}")
        return self.call(f"case_{op}", args)

    def cases(self) -> list[dict[str, Any]]:
        """Every case ``meshdesk case list --json`` prints: its pages, read in turn."""
        out: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.case("list", limit=1000, after=after)
            out += page["cases"]
            after = page["next"]
            if after is None:
                return out

    def show(self, case_id: str) -> dict[str, Any]:
        """``meshdesk case show ID --json``."""
        result: dict[str, Any] = self.case("show", id=case_id)
        return result

    def kill9(self) -> None:
        """SIGKILL the node's process group: no goodbye, no clean store close."""
        self.proc.kill(timeout=10)

    def log_text(self) -> str:
        return self.proc.log_text()

    def peer(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.peers() if p["name"] == name), None)

    def mark_log(self) -> None:
        """Remember where the log ends now; :meth:`log_since_mark` reads what follows."""
        self._log_mark = len(self.log.read_bytes())

    def log_since_mark(self) -> str:
        return self.log.read_bytes()[self._log_mark :].decode(errors="replace")


def start_node(
    lab: Lab,
    host_name: str,
    name: str,
    home: NodeHome,
    *extra: str,
    wait_until: WaitUntil,
    env: Mapping[str, str] | None = None,
) -> RunningNode:
    """Start ``meshdesk run`` for ``home`` on ``host_name``; returns once it answers.

    ``env`` is added to its environment (a test's own sound server, for instance).
    """
    host = lab.host(host_name)
    argv = [
        MESHDESK, "run", "--home", str(home.path), "--listen", f"0.0.0.0:{PORT}",
        "--interface", host.iface, *extra,
    ]  # fmt: skip
    node = RunningNode(name, home, host, lab.popen(host_name, argv, name=name, env=env))
    wait_until(node.answers, timeout=SETTLE, message=f"{name} on {host_name} answers")
    return node


def all_linked(nodes: list[RunningNode]) -> Callable[[], bool]:
    """Each node shows every other one ``linked``."""

    def check() -> bool:
        for node in nodes:
            states = node.states()
            if any(states.get(other.name) != "linked" for other in nodes if other is not node):
                return False
        return True

    return check


def not_linked(observers: list[RunningNode], name: str) -> Callable[[], bool]:
    """Every observer shows ``name`` as known but not ``linked``."""

    def check() -> bool:
        return all(obs.states().get(name, "linked") != "linked" for obs in observers)

    return check


def create_cases(node: RunningNode, count: int, **fields: Any) -> list[str]:
    """Open ``count`` cases on ``node`` in one event loop (fast); their ids in order."""
    categories = ["medical", "welfare_eldercare", "housing", "supplies", "other"]
    urgencies = ["immediate", "high", "normal", "low"]

    async def make() -> list[str]:
        ids = []
        for i in range(count):
            args = {
                "operator": f"op-{node.name}",
                "category": categories[i % len(categories)],
                "urgency": urgencies[i % len(urgencies)],
                "name": f"市民 {node.name}-{i}",
                **fields,
            }
            view = await control.call(node.control_socket, "case_new", args)
            ids.append(view["id"])
        return ids

    assert node.proc.poll() is None, f"{node.name} exited: {node.log_text()[-2000:]}"
    return asyncio.run(make())
