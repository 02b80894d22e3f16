"""Shared helpers for lab tests that run real ``meshdesk run`` nodes.

The same patterns as ``test_links_lab.py``: kits are provisioned with the CLI in the
root namespace (no network needed), ``meshdesk run`` runs inside a lab host, and each
node is read through its control socket (``HOME/control.sock``, a file, reachable
from the root namespace) and its log.

Not a test module (the leading underscore keeps pytest from collecting it); the lab
directory is on ``sys.path`` because the tests directory is not a package.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from meshdesk import control

if TYPE_CHECKING:
    from conftest import Lab, LabHost

MESHDESK = str(Path(sys.executable).parent / "meshdesk")
PORT = 7420
#: Generous bound for start-up, mDNS and dialling (no stated product limit).
SETTLE = 10.0
#: The product's limit for marking a lost peer down (dead_after 5 s + one tick).
MARKED_DOWN_WITHIN = 6.0


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


class Deployment:
    """A deployment made with the CLI: an HQ home holding the CA, and provisioned kits."""

    def __init__(self, root: Path, name: str, *, hq: str = "hq") -> None:
        root.mkdir(parents=True)
        self.root = root
        self.homes: dict[str, Path] = {hq: root / hq}
        self.hq = hq
        created = meshdesk_cli(
            "deployment", "create", "--home", self.homes[hq], "--name", name,
            "--node-name", hq, "--site", "本庁", "--json",
        )  # fmt: skip
        self.id = json.loads(created)["deployment_id"]

    def provision(self, name: str, *, role: str = "center", depts: Iterable[str] = ()) -> Path:
        """Issue a kit on HQ (with ``--dept`` for each of ``depts``) and ``init`` a home."""
        kit = self.root / f"{name}.kit"
        home = self.homes[name] = self.root / name
        dept_args = [arg for dept in depts for arg in ("--dept", dept)]
        meshdesk_cli(
            "deployment", "issue", "--home", self.homes[self.hq], "--name", name,
            "--site", f"site-{name}", "--role", role, *dept_args, "--out", kit, "--json",
        )  # fmt: skip
        meshdesk_cli("init", "--home", home, "--kit", kit, "--deployment-id", self.id, "--json")
        return home


@dataclass
class RunningNode:
    """A ``meshdesk run`` process on a lab host, seen through its control socket and log."""

    name: str
    home: Path
    host: LabHost
    proc: subprocess.Popen[str]
    log: Path
    _log_mark: int = field(default=0, repr=False)

    @property
    def control_socket(self) -> Path:
        return self.home / "control.sock"

    def call(self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 10.0) -> Any:
        assert self.proc.poll() is None, f"{self.name} exited: {self.log_text()[-2000:]}"
        return asyncio.run(control.call(self.control_socket, op, args, wait=wait))

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
        """``meshdesk case list --json``."""
        result: list[dict[str, Any]] = self.case("list")
        return result

    def show(self, case_id: str) -> dict[str, Any]:
        """``meshdesk case show ID --json``."""
        result: dict[str, Any] = self.case("show", id=case_id)
        return result

    def kill9(self) -> None:
        """SIGKILL the node's process group: no goodbye, no clean store close."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def peer(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.peers() if p["name"] == name), None)

    def mark_log(self) -> None:
        """Remember where the log ends now; :meth:`log_since_mark` reads what follows."""
        self._log_mark = len(self.log.read_bytes())

    def log_since_mark(self) -> str:
        return self.log.read_bytes()[self._log_mark :].decode(errors="replace")


def start_node(
    lab: Lab, host_name: str, name: str, home: Path, *extra: str, wait_until: Any
) -> RunningNode:
    """Start ``meshdesk run`` for ``home`` on ``host_name``; returns once it answers."""
    host = lab.host(host_name)
    argv = [
        MESHDESK, "run", "--home", str(home), "--listen", f"0.0.0.0:{PORT}",
        "--interface", host.iface, *extra,
    ]  # fmt: skip
    proc = lab.popen(host_name, argv)
    node = RunningNode(name, home, host, proc, lab.log_path(proc))
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
