"""The discovery bench's lab side: finding the lab script, and reading JSON logs.

The lab itself, its hosts and processes are :class:`meshdesk.lab.Lab`'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshdesk.errors import LabError, MeshdeskError
from meshdesk.lab import LAB_ENV, Lab, find_script

__all__ = [
    "DEFAULT_LAB",
    "LAB_ENV",
    "LinkTimes",
    "Progress",
    "close_lab",
    "entry_time",
    "find_event",
    "find_lab",
    "first_time",
    "links_in",
    "log_tail",
    "read_log",
]

Progress = Callable[[str], None]

#: Where the lab script is found when neither ``--lab`` nor ``$MESHDESK_LAB`` names it
#: and this package does not run from a checkout.
DEFAULT_LAB = Path("field-kit") / "lab"

_LINKED_RE = re.compile(
    r"^linked with .*\((?P<peer>[A-Z0-9-]+)\) at \S+, (?P<way>outbound|inbound) via (?P<via>\S+)$"
)
_LOG_TAIL = 12  # lines of a process log shown when a step fails


def find_lab(
    arg: str | None, env: Mapping[str, str], cwd: Path | None = None, *, what: str = "discovery"
) -> Path:
    """The lab script: ``--lab``, else ``$MESHDESK_LAB``, else the checkout's
    ``field-kit/lab`` (this package's source tree), else ``./field-kit/lab``.

    Raises:
        MeshdeskError: not root, or no lab script there.
    """
    lead = f"bench {what} needs root and the network lab script (field-kit/lab)"
    if os.geteuid() != 0:
        raise MeshdeskError(f"{lead}; it runs as user {os.geteuid()}, not root")
    try:
        return find_script(arg, env, cwd)
    except LabError as exc:
        raise MeshdeskError(f"{lead}; {exc}") from exc


def close_lab(lab: Lab, progress: Progress) -> None:
    """Tear a bench's lab down; a failure is reported, never raised (we are cleaning
    up, and the figures measured are still good)."""
    try:
        lab.close()
    except LabError as exc:
        progress(f"WARNING: {exc}; remove it with: {lab.script} down {lab.prefix}")


# -- logs ---------------------------------------------------------------------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON-object lines of a log so far (a half-written last line is skipped)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        out.append(entry)
    return out


def entry_time(entry: Mapping[str, Any]) -> float:
    """An entry's wall-clock time: the launcher's ``t``, or a node log's ISO ``ts``."""
    if "t" in entry:
        return float(entry["t"])
    return dt.datetime.fromisoformat(str(entry["ts"])).timestamp()


def first_time(entries: Sequence[Mapping[str, Any]], msg_prefix: str) -> float | None:
    for entry in entries:
        if str(entry.get("msg", "")).startswith(msg_prefix):
            return entry_time(entry)
    return None


def find_event(
    entries: Sequence[Mapping[str, Any]], event: str, name: str | None = None
) -> Mapping[str, Any] | None:
    for entry in entries:
        if entry.get("event") == event and (name is None or entry.get("name") == name):
            return entry
    return None


@dataclass(frozen=True, slots=True)
class LinkTimes:
    """When the joiner first linked with each peer, and how."""

    first: dict[str, tuple[float, str]]
    count: int


def links_in(entries: Sequence[Mapping[str, Any]], peers: set[str]) -> LinkTimes:
    first: dict[str, tuple[float, str]] = {}
    count = 0
    for entry in entries:
        match = _LINKED_RE.match(str(entry.get("msg", "")))
        if match is None or match["peer"] not in peers:
            continue
        count += 1
        how = match["way"] if match["via"] == match["way"] else f"{match['way']} via {match['via']}"
        first.setdefault(match["peer"], (entry_time(entry), how))
    return LinkTimes(first, count)


def log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(f"    {line}" for line in lines[-_LOG_TAIL:]) or "    (empty log)"
