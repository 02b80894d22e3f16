"""The drill's network: one ``field-kit/lab`` LAN whose wiring follows the scenario.

Every node gets a lab host (``hI``) on one bridge. The scenario's topology is then
played on that bridge: a host with no allowed peer at all has its cable pulled
(``lab cut``); pairs of hosts that are both plugged in but must not reach each
other (sites that meet only through a courier, a site-to-site link that is down)
are separated by an nftables table of our own in the switch namespace that drops
frames between their two bridge ports. Loss on a link is ``lab netem --loss`` on the
hosts of both sites (it impairs everything such a host sends); latency needs the
kernel's sch_netem and is reported, not faked, when it is missing.

Only labs this process made are ever torn down (``lab down PREFIX``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import meshdesk
from meshdesk.errors import DrillError

__all__ = ["EX_UNSUPPORTED", "LAB_SCRIPT", "LabNet", "lab_problems", "new_prefix"]

LAB_SCRIPT = Path(meshdesk.__file__).resolve().parents[1] / "field-kit" / "lab"
EX_UNSUPPORTED = 3
_TABLE = "drill_pairs"
_TOOLS = ("ip", "nft")


def lab_problems() -> list[str]:
    """Why this machine cannot run lab drills (empty: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("lab mode needs root (network namespaces); run it with sudo")
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"lab mode needs {', '.join(missing)} (apt-get install iproute2 nftables)")
    if not LAB_SCRIPT.is_file():
        problems.append(f"lab mode needs {LAB_SCRIPT} (run from a meshdesk checkout)")
    return problems


def _netns_names() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False, timeout=30
    )
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def new_prefix() -> str:
    """A fresh ``dr`` + 4 hex lab prefix that no namespace on this machine uses."""
    taken = {name.rsplit("-", 1)[0] for name in _netns_names()}
    for _ in range(100):
        prefix = f"dr{secrets.token_hex(2)}"
        if prefix not in taken:
            return prefix
    raise DrillError("no free lab prefix after 100 tries")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class LabResult:
    returncode: int
    stdout: str
    stderr: str


async def _run(argv: Sequence[str], *, stdin: bytes | None = None) -> LabResult:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return LabResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


class LabNet:
    """One lab of ``hosts`` hosts under ``prefix``, and the wiring put on it."""

    def __init__(self, prefix: str, hosts: int) -> None:
        self.prefix = prefix
        self.hosts = [f"h{i}" for i in range(1, hosts + 1)]
        self.is_up = False
        #: Host name -> its IPv4 address on the lab LAN (known once the lab is up).
        self.addresses: dict[str, str] = {}
        self._cut: set[str] = set()
        self._blocked: frozenset[tuple[str, str]] = frozenset()
        self._loss: dict[str, float] = {}

    async def lab(self, *args: str, allow: Iterable[int] = ()) -> LabResult:
        """``field-kit/lab ARGS``; a status outside 0 and ``allow`` raises DrillError."""
        result = await _run(["bash", str(LAB_SCRIPT), *args])
        if result.returncode != 0 and result.returncode not in allow:
            raise DrillError(
                f"field-kit/lab {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.strip().removeprefix('lab: ')}"
            )
        return result

    async def up(self) -> None:
        out = await self.lab(
            "up", str(len(self.hosts)), "--prefix", self.prefix, "--owner", str(os.getpid()),
            "--json",
        )  # fmt: skip
        self.is_up = True
        info = json.loads(out.stdout)
        names = [h["name"] for h in info["hosts"]]
        if names != self.hosts:
            raise DrillError(f"lab {self.prefix} came up with hosts {names}, not {self.hosts}")
        self.addresses = {str(h["name"]): str(h["addr"]) for h in info["hosts"]}

    async def down(self) -> None:
        """Tear the lab down (its processes and namespaces); idempotent."""
        if self.is_up:
            await self.lab("down", self.prefix)
            self.is_up = False

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["bash", str(LAB_SCRIPT), "exec", self.prefix, host, "--", *argv]

    async def wire(self, allowed: set[tuple[str, str]]) -> None:
        """Make exactly the host pairs in ``allowed`` able to reach each other."""
        linked = {h for pair in allowed for h in pair}
        cut = set(self.hosts) - linked
        for host in sorted(cut - self._cut):
            await self.lab("cut", self.prefix, host)
        for host in sorted(self._cut - cut):
            await self.lab("restore", self.prefix, host)
        self._cut = cut
        plugged = sorted(linked)
        blocked = frozenset(
            (a, b)
            for i, a in enumerate(plugged)
            for b in plugged[i + 1 :]
            if (a, b) not in allowed and (b, a) not in allowed
        )
        if blocked != self._blocked:
            await self._filter(blocked)
            self._blocked = blocked

    async def _filter(self, blocked: frozenset[tuple[str, str]]) -> None:
        rules = "".join(
            f'        iifname "{self.prefix}-{a}" oifname "{self.prefix}-{b}" drop\n'
            f'        iifname "{self.prefix}-{b}" oifname "{self.prefix}-{a}" drop\n'
            for a, b in sorted(blocked)
        )
        # Declare, delete, define: one atomic replacement of our table.
        script = (
            f"table bridge {_TABLE}\ndelete table bridge {_TABLE}\n"
            f"table bridge {_TABLE} {{\n    chain forward {{\n"
            f"        type filter hook forward priority -10; policy accept;\n{rules}    }}\n}}\n"
        )
        argv = ["ip", "netns", "exec", f"{self.prefix}-sw", "nft", "-f", "-"]
        result = await _run(argv, stdin=script.encode())
        if result.returncode != 0:
            raise DrillError(f"nft in lab {self.prefix} failed: {result.stderr.strip()}")

    async def impair(self, host: str, loss_pct: float, latency_ms: float) -> bool:
        """Loss (and latency) on what ``host`` sends; False when latency is unsupported.

        Without sch_netem the latency is left out and the loss still applied.
        """
        if loss_pct <= 0 and latency_ms <= 0:
            if self._loss.pop(host, None) is not None:
                await self.lab("netem", self.prefix, host, "--clear")
            return True
        applied = True
        if latency_ms > 0:
            result = await self.lab(
                "netem", self.prefix, host, "--loss", f"{loss_pct:g}", "--delay", f"{latency_ms:g}",
                allow=(EX_UNSUPPORTED,),
            )  # fmt: skip
            if result.returncode == 0:
                self._loss[host] = loss_pct
                return True
            applied = False
        if loss_pct > 0:
            await self.lab("netem", self.prefix, host, "--loss", f"{loss_pct:g}")
            self._loss[host] = loss_pct
        elif self._loss.pop(host, None) is not None:
            await self.lab("netem", self.prefix, host, "--clear")
        return applied

    async def clear_impairments(self) -> None:
        for host in sorted(self._loss):
            await self.lab("netem", self.prefix, host, "--clear")
        self._loss.clear()
