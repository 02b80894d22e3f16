"""The discovery bench's lab: hosts, processes, and reading their JSON logs."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshdesk.errors import MeshdeskError

__all__ = [
    "DEFAULT_LAB",
    "LAB_ENV",
    "BenchLab",
    "LabHost",
    "LinkTimes",
    "Proc",
    "Progress",
    "entry_time",
    "find_event",
    "find_lab",
    "first_time",
    "links_in",
    "log_tail",
    "pid_alive",
    "read_log",
]

Progress = Callable[[str], None]

#: Where the lab script is found when neither ``--lab`` nor this variable names it.
LAB_ENV = "MESHDESK_LAB"
DEFAULT_LAB = Path("field-kit") / "lab"
#: The lab script of the checkout this package runs from (an editable install).
CHECKOUT_LAB = Path(__file__).resolve().parents[2] / "field-kit" / "lab"

_PREFIX_RE = re.compile(r"^bd[0-9a-f]{4}$")  # labs this bench makes
_LINKED_RE = re.compile(
    r"^linked with .*\((?P<peer>[A-Z0-9-]+)\) at \S+, (?P<way>outbound|inbound) via (?P<via>\S+)$"
)
_LOG_TAIL = 12  # lines of a process log shown when a step fails

# -- the lab ------------------------------------------------------------------------------


def find_lab(
    arg: str | None, env: Mapping[str, str], cwd: Path | None = None, *, what: str = "discovery"
) -> Path:
    """The lab script: ``--lab``, else ``$MESHDESK_LAB``, else the checkout's
    ``field-kit/lab`` (this package's source tree), else ``./field-kit/lab``.

    Raises:
        MeshdeskError: not root, or no lab script there.
    """
    lead = f"bench {what} needs root and the network lab script (field-kit/lab)"
    if arg:
        path, named = Path(arg), f"--lab {arg}"
    elif env.get(LAB_ENV):
        path, named = Path(env[LAB_ENV]), f"${LAB_ENV}={env[LAB_ENV]}"
    elif CHECKOUT_LAB.is_file():
        path, named = CHECKOUT_LAB, str(CHECKOUT_LAB)
    else:
        path, named = DEFAULT_LAB, f"./{DEFAULT_LAB} (give --lab PATH or set {LAB_ENV})"
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    if os.geteuid() != 0:
        raise MeshdeskError(f"{lead}; it runs as user {os.geteuid()}, not root")
    if not path.is_file():
        raise MeshdeskError(f"{lead}; there is no lab script at {named}")
    return path


@dataclass(frozen=True, slots=True)
class LabHost:
    name: str
    addr: str
    iface: str


@dataclass(slots=True)
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


class BenchLab:
    """One lab made by this bench and the processes started in it."""

    def __init__(self, script: Path, folder: Path, progress: Progress) -> None:
        self.script = script
        self.folder = folder
        self.progress = progress
        self.prefix = ""
        self.hosts: dict[str, LabHost] = {}
        self.procs: list[Proc] = []

    def cli(self, *args: str, timeout: float = 60) -> str:
        try:
            done = subprocess.run(
                ["bash", str(self.script), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise MeshdeskError(f"lab {args[0]} did not finish within {timeout:g} s") from exc
        if done.returncode != 0:
            error = done.stderr.strip().splitlines()
            raise MeshdeskError(f"lab {args[0]} failed: {error[-1] if error else done.returncode}")
        return done.stdout

    def clean_stale(self) -> None:
        """Remove labs this bench left behind when it died (their owner is gone)."""
        for lab in json.loads(self.cli("ls", "--json")):
            owner = lab.get("owner")
            mine = _PREFIX_RE.match(str(lab.get("prefix"))) and isinstance(owner, int)
            if mine and not pid_alive(owner):
                self.progress(f"removing lab {lab['prefix']} left by a dead run")
                self.cli("down", lab["prefix"])

    def up(self, hosts: int) -> None:
        for _ in range(5):
            self.prefix = f"bd{secrets.token_hex(2)}"
            try:
                out = self.cli(
                    "up", str(hosts), "--prefix", self.prefix, "--owner", str(os.getpid()), "--json"
                )
            except MeshdeskError as exc:
                if "already exists" in str(exc):
                    continue
                raise
            info = json.loads(out)
            self.hosts = {
                h["name"]: LabHost(h["name"], h["addr"], h["iface"]) for h in info["hosts"]
            }
            return
        raise MeshdeskError("no free lab prefix after 5 tries")  # pragma: no cover

    def spawn(self, host: str, argv: Sequence[str], name: str) -> Proc:
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["bash", str(self.script), "exec", self.prefix, host, "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench, which stops it in order
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def down(self) -> None:
        """Tear the lab down; a failure is reported, never raised (we are cleaning up)."""
        if not self.prefix:
            return
        try:
            self.cli("down", self.prefix)
        except MeshdeskError as exc:
            self.progress(f"WARNING: {exc}; remove it with: {self.script} down {self.prefix}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
