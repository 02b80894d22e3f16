"""The drill's network: one lab LAN (:class:`meshdesk.lab.Lab`) wired as the scenario says.

Every node gets a lab host (``hI``) on one bridge. The scenario's topology is then
played on that bridge: a host with no allowed peer at all has its cable pulled
(:meth:`~meshdesk.lab.Lab.cut`); pairs of hosts that are both plugged in but must
not reach each other (sites that meet only through a courier, a site-to-site link
that is down) are separated in the switch (:meth:`~meshdesk.lab.Lab.separate`).
Loss on a link is netem loss on the hosts of both sites (it impairs everything such
a host sends); latency needs the kernel's sch_netem and is reported, not faked,
when it is missing.

The harness runs blocking commands; here they run in a worker thread, and its
``LabError`` becomes a ``DrillError`` (the drill's exit status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from meshdesk.errors import DrillError, LabError, LabUnsupported
from meshdesk.lab import CHECKOUT_SCRIPT, Lab, LabProcess
from meshdesk.lab import lab_problems as _machine_problems
from meshdesk.lab import new_prefix as _new_lab_prefix

__all__ = ["LAB_SCRIPT", "LabNet", "lab_problems", "new_prefix"]

LAB_SCRIPT = CHECKOUT_SCRIPT
_STEM = "dr"
_T = TypeVar("_T")


def lab_problems() -> list[str]:
    """Why this machine cannot run lab drills (empty: it can)."""
    return [f"lab mode {problem}" for problem in _machine_problems(LAB_SCRIPT)]


def new_prefix() -> str:
    """A fresh ``dr`` + 4 hex lab prefix that no namespace on this machine uses."""
    try:
        return _new_lab_prefix(_STEM)
    except LabError as exc:
        raise DrillError(str(exc)) from exc


async def _in_thread(call: Callable[..., _T], *args: object) -> _T:
    try:
        return await asyncio.to_thread(call, *args)
    except LabUnsupported:
        raise
    except LabError as exc:
        raise DrillError(str(exc)) from exc


class LabNet:
    """One lab of ``hosts`` hosts under ``prefix``, and the wiring put on it."""

    def __init__(self, prefix: str, hosts: int) -> None:
        self.prefix = prefix
        self.hosts = [f"h{i}" for i in range(1, hosts + 1)]
        #: Host name -> its IPv4 address on the lab LAN (known once the lab is up).
        self.addresses: dict[str, str] = {}
        self._lab = Lab(hosts, stem=_STEM, prefix=prefix, script=LAB_SCRIPT)
        self._cut: set[str] = set()
        self._blocked: frozenset[tuple[str, str]] = frozenset()
        self._loss: dict[str, float] = {}

    @property
    def is_up(self) -> bool:
        return self._lab.is_up

    async def up(self) -> None:
        try:
            await self._lab.aopen()
        except LabError as exc:
            raise DrillError(str(exc)) from exc
        names = [host.name for host in self._lab.hosts]
        if names != self.hosts:
            raise DrillError(f"lab {self.prefix} came up with hosts {names}, not {self.hosts}")
        self.addresses = self._lab.addresses()

    async def down(self) -> None:
        """Stop what runs in the lab and tear it down; idempotent."""
        try:
            await self._lab.aclose()
        except LabError as exc:
            raise DrillError(str(exc)) from exc

    def popen(self, host: str, argv: Sequence[str], *, name: str, log: Path) -> LabProcess:
        """Start ``argv`` on ``host`` in its own process group, output appended to ``log``."""
        try:
            return self._lab.popen(host, argv, name=name, log=log)
        except LabError as exc:
            raise DrillError(str(exc)) from exc

    async def wire(self, allowed: set[tuple[str, str]]) -> None:
        """Make exactly the host pairs in ``allowed`` able to reach each other."""
        linked = {h for pair in allowed for h in pair}
        cut = set(self.hosts) - linked
        for host in sorted(cut - self._cut):
            await _in_thread(self._lab.cut, host)
        for host in sorted(self._cut - cut):
            await _in_thread(self._lab.restore, host)
        self._cut = cut
        plugged = sorted(linked)
        blocked = frozenset(
            (a, b)
            for i, a in enumerate(plugged)
            for b in plugged[i + 1 :]
            if (a, b) not in allowed and (b, a) not in allowed
        )
        if blocked != self._blocked:
            await _in_thread(self._lab.separate, blocked)
            self._blocked = blocked

    async def impair(self, host: str, loss_pct: float, latency_ms: float) -> bool:
        """Loss (and latency) on what ``host`` sends; False when latency is unsupported.

        Without sch_netem the latency is left out and the loss still applied.
        """
        if loss_pct <= 0 and latency_ms <= 0:
            if self._loss.pop(host, None) is not None:
                await _in_thread(self._lab.clear_netem, host)
            return True
        applied = True
        if latency_ms > 0:
            try:
                await _in_thread(self._netem, host, loss_pct, latency_ms)
            except LabUnsupported:
                applied = False
            else:
                self._loss[host] = loss_pct
                return True
        if loss_pct > 0:
            await _in_thread(self._netem, host, loss_pct, 0.0)
            self._loss[host] = loss_pct
        elif self._loss.pop(host, None) is not None:
            await _in_thread(self._lab.clear_netem, host)
        return applied

    def _netem(self, host: str, loss_pct: float, delay_ms: float) -> None:
        self._lab.netem(host, loss_pct=loss_pct, delay_ms=delay_ms)

    async def clear_impairments(self) -> None:
        for host in sorted(self._loss):
            await _in_thread(self._lab.clear_netem, host)
        self._loss.clear()
