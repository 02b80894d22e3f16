"""``meshdesk drill --mode lab``: the smoke scenario with real nodes in a namespaced LAN.

The drill makes its own lab (prefix ``dr`` + 4 hex), runs ``meshdesk run`` per node,
plays the timeline in wall time (smoke: time_scale 1, about a minute plus the drain)
and tears everything down. This is the CI run of acceptance point 4 in lab mode.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

MESHDESK = str(Path(sys.executable).parent / "meshdesk")
#: Bound for the whole smoke drill: 60 s of timeline, at most 60 s of drain, set-up.
DRILL_TIMEOUT = 400


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_smoke_drill_in_lab_mode_loses_nothing_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run(
        [MESHDESK, "drill", "smoke", "--mode", "lab", "--report", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=DRILL_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted((out / "lab-logs").glob("*.log"))
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}{logs}"
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(proc.stdout)
    assert report["mode"] == "lab"
    assert report["lost_records"] == 0
    assert report["converged"] is True
    assert report["cases_created"] > 0
    assert report["reach_hq_p95_s"] is not None
    assert len(report["digests"]) == 3
    assert len(set(report["digests"].values())) == 1
    # Centre b's outage shows in its link timeline (it lost HQ and got it back).
    linked = [state for _, state in report["sites"]["centre-b"]["linked_to_hq"]]
    assert False in linked
    assert linked[-1] is True
    for name in ("report.md", "report.html", "backlog.png", "links.png"):
        assert (out / name).stat().st_size > 0, name
    # The lab it made is gone: processes and namespaces.
    prefix = re.search(r"in lab (dr[0-9a-f]{4})", " ".join(report["notes"]))
    assert prefix is not None, report["notes"]
    assert not {ns for ns in _netns() if ns.startswith(prefix.group(1) + "-")}
