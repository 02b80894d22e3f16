"""Announcements and USB bundle trips in lab mode, through the nodes' control ops.

An announcement is ``announce_new`` on the first running HQ node. Each poll asks
the running nodes of every addressed site that has not shown it yet
(``announce_list``): the first poll that finds it there is its delivery (± one
poll), and an operator of that node acknowledges it ``read_after`` scenario seconds
later (``announce_ack``). HQ's ``announce_show`` tells when HQ learned of the
reading. A bundle trip is ``bundle_export`` on the first running node of the
source into a folder of the drill, and ``bundle_import`` on the first running node
of the target ``travel`` seconds later: the real file, checked and stored by the
real node.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from meshdesk.drill import _labops as ops
from meshdesk.drill._labops import ControlNode
from meshdesk.drill.metrics import Recorder
from meshdesk.drill.model import Announce, BundleTrip
from meshdesk.errors import MeshdeskError

__all__ = ["LabNotices"]

Step = Callable[[], Awaitable[None]]


class LabNotices:
    """Carries out announcements and bundle trips; fills the recorder's tables."""

    def __init__(self, rec: Recorder, folder: Path, after: Callable[[float, Step], None]) -> None:
        self._rec = rec
        self._folder = folder
        self._after = after
        #: notice id -> (plan, addressed sites)
        self._posted: dict[str, tuple[Announce, tuple[str, ...]]] = {}
        self._trips = 0

    async def announce(
        self, plan: Announce, hq: ControlNode | None, all_sites: Iterable[str], now: float
    ) -> None:
        if hq is None:
            self._rec.notes.append(f"announcement {plan.title!r} not posted: no HQ node runs")
            return
        sites = plan.sites or tuple(all_sites)
        notice_id = await ops.announce(hq, title=plan.title, severity=plan.severity,
                                       sites=plan.sites)  # fmt: skip
        self._posted[notice_id] = (plan, sites)
        self._rec.announcements[notice_id] = {
            "title": plan.title,
            "severity": plan.severity,
            "posted_s": now,
            "sites": {
                s: {"delivered_s": None, "read_s": None, "read_known_at_hq_s": None}
                for s in sorted(sites)
            },
        }

    async def check(
        self, now: float, hq: ControlNode | None, running: Mapping[str, list[ControlNode]]
    ) -> None:
        """One poll: deliveries at the sites, and what HQ knows of the readings."""
        for notice_id, (plan, _) in self._posted.items():
            entry = self._rec.announcements[notice_id]
            for site, reach in entry["sites"].items():
                if reach["delivered_s"] is not None:
                    continue
                for node in running.get(site, []):
                    try:
                        held = notice_id in await ops.announcement_ids(node)
                    except MeshdeskError:
                        continue  # down, or going down
                    if held:
                        reach["delivered_s"] = now
                        at = now + plan.read_after
                        read = functools.partial(self._read, node, notice_id, reach, at)
                        self._after(at, read)
                        break
            if hq is None or all(r["read_known_at_hq_s"] for r in entry["sites"].values()):
                continue
            try:
                view = await ops.announcement_reach(hq, notice_id)
            except MeshdeskError:
                continue
            for site, rows in view.get("sites", {}).items():
                reach = entry["sites"].get(site)
                known = reach is None or reach["read_known_at_hq_s"] is not None
                if not known and any(row.get("read_at") for row in rows):
                    assert reach is not None
                    reach["read_known_at_hq_s"] = now

    async def _read(
        self, node: ControlNode, notice_id: str, reach: dict[str, Any], at: float
    ) -> None:
        try:
            await ops.acknowledge(node, notice_id)
        except MeshdeskError as exc:
            self._rec.notes.append(f"{node.name} could not acknowledge {notice_id}: {exc}")
            return
        reach["read_s"] = at

    async def depart(
        self,
        trip: BundleTrip,
        source: ControlNode | None,
        target_of: Callable[[], ControlNode | None],
        now: float,
    ) -> None:
        record: dict[str, Any] = {
            "courier": trip.courier, "from": trip.source, "to": trip.target,
            "left_s": now, "arrived_s": None, "events": 0, "new_events": 0,
        }  # fmt: skip
        self._rec.bundle_trips.append(record)
        if source is None:
            self._rec.notes.append(f"{trip.courier} found no running node at {trip.source}")
            return
        self._trips += 1
        path = self._folder / f"trip-{self._trips}-{trip.source}-{trip.target}.bundle"
        self._folder.mkdir(parents=True, exist_ok=True)
        record["events"] = await ops.bundle_export(source, str(path.absolute()))

        async def arrive() -> None:
            target = target_of()
            if target is None:
                self._rec.notes.append(f"{trip.courier} found no running node at {trip.target}")
                return
            record["new_events"] = await ops.bundle_import(target, str(path.absolute()))
            record["arrived_s"] = now + trip.travel

        self._after(now + trip.travel, arrive)
