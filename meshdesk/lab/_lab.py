"""A lab: built on entry, its programs and wiring, torn down on exit."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from meshdesk.errors import LabError, LabUnsupported
from meshdesk.lab._machine import find_script, new_prefix, pid_alive, run_command
from meshdesk.lab._process import TERM_GRACE, LabProcess

__all__ = ["Lab", "LabHost"]

log = logging.getLogger("meshdesk.lab")

_EX_UNSUPPORTED = 3  # field-kit/lab: not supported on this machine
_SCRIPT_TIMEOUT = 60.0
_PAIRS_TABLE = "lab_pairs"  # our nftables table in the switch (the script's are lab_*_hI)
_UP_TRIES = 5  # fresh prefixes tried when another run takes ours at the same moment


def _number(value: float) -> str:
    if not value >= 0:
        raise ValueError(f"lab impairments are non-negative numbers, got {value}")
    return f"{value:.6f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class LabHost:
    """One host of a lab, as ``field-kit/lab up --json`` describes it."""

    name: str  # "h1"
    netns: str  # "md3f2a-h1"
    addr: str  # "10.231.0.11"
    iface: str  # "eth0"


class _State(enum.Enum):
    NEW = "new"
    UP = "up"
    CLOSED = "closed"


# Stems whose stale labs this process has removed already (once per process is enough:
# a lab goes stale only when the run that owns it dies).
_cleaned: set[tuple[Path, str]] = set()
_cleaned_lock = threading.Lock()


class Lab:
    """A lab of ``hosts`` hosts, and the programs and impairments put on it.

    Args:
        hosts: How many hosts (``h1..hN``).
        stem: Start of the prefix (``md`` tests, ``dr`` drills, ``bd``/``bc`` benches,
            ``mddemo`` the demo): 1-6 characters a-z0-9, starting with a letter.
        prefix: Use exactly this prefix instead of a fresh one.
        script: The lab script (default: :func:`find_script`).
        log_dir: Where program logs go (default: a temporary folder removed at close).
        subnet: The lab's /24 as ``A.B.C`` (default: the script's).
    """

    def __init__(
        self,
        hosts: int,
        *,
        stem: str = "md",
        prefix: str | None = None,
        script: Path | None = None,
        log_dir: Path | None = None,
        subnet: str | None = None,
    ) -> None:
        self.size = hosts
        self.stem = stem
        self.script = script if script is not None else find_script()
        self.prefix = prefix or ""
        self.hosts: list[LabHost] = []
        self.processes: list[LabProcess] = []
        self._fixed_prefix = prefix is not None
        self._subnet = subnet
        self._log_dir = log_dir
        self._own_log_dir = False
        self._state = _State.NEW
        self._lock = threading.Lock()  # open and close never overlap (async cancellation)

    def __repr__(self) -> str:
        return f"Lab({self.prefix or self.stem + '…'!r}, {self.size} hosts, {self._state.value})"

    # -- lifecycle -------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._state is _State.UP

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            raise LabError("the lab is not up yet")
        return self._log_dir

    def open(self) -> Lab:
        """Build the lab (``lab up``); returns once every host is there.

        Raises:
            LabError: the script failed (the message is its error), or no fresh prefix.
        """
        with self._lock:
            if self._state is not _State.NEW:
                raise LabError(f"{self!r} cannot be opened again")
            self._clean_stale()
            tries = 1 if self._fixed_prefix else _UP_TRIES
            for _ in range(tries):
                if not self._fixed_prefix:
                    self.prefix = new_prefix(self.stem)
                args = ["up", str(self.size), "--prefix", self.prefix, "--owner", str(os.getpid())]
                if self._subnet is not None:
                    args += ["--subnet", self._subnet]
                try:
                    out = self.cli(*args, "--json")
                except LabError as exc:
                    if "already exists" in str(exc) and not self._fixed_prefix:
                        continue  # another run took this prefix a moment ago
                    raise
                break
            else:
                raise LabError(f"no free lab prefix after {tries} tries")
            self._state = _State.UP
            info = json.loads(out)
            self.hosts = [
                LabHost(h["name"], h["netns"], h["addr"], h["iface"]) for h in info["hosts"]
            ]
            if self._log_dir is None:
                self._log_dir = Path(tempfile.mkdtemp(prefix=f"meshdesk-lab-{self.prefix}-"))
                self._own_log_dir = True
            else:
                self._log_dir.mkdir(parents=True, exist_ok=True)
            return self

    def close(self) -> None:
        """Stop every program the lab started, then tear the lab down; idempotent.

        Raises:
            LabError: ``lab down`` failed (the lab may be left; ``make lab-clean``).
        """
        with self._lock:
            if self._state is not _State.UP:
                self._state = _State.CLOSED
                return
            self._state = _State.CLOSED
            try:
                self.stop_processes()
            finally:
                try:
                    self.cli("down", self.prefix)
                finally:
                    if self._own_log_dir and self._log_dir is not None:
                        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close_after(exc)

    async def aopen(self) -> Lab:
        """:meth:`open` in a worker thread; cancelled, it removes what it built."""
        try:
            await asyncio.to_thread(self.open)
        except BaseException:
            # Cancelled while the script runs: close waits for open (the lock) and
            # removes what it built.
            await asyncio.to_thread(self.close)
            raise
        return self

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread; idempotent."""
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> Lab:
        return await self.aopen()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.aclose()
        except LabError as error:
            if exc is None:
                raise
            exc.add_note(f"and tearing down lab {self.prefix} failed: {error}")

    def _close_after(self, exc: BaseException | None) -> None:
        """Close; a teardown error never hides the error that ended the block."""
        try:
            self.close()
        except LabError as error:
            if exc is None:
                raise
            exc.add_note(f"and tearing down lab {self.prefix} failed: {error}")

    def _clean_stale(self) -> None:
        """Remove labs of our stem whose owner process is gone (a run that died)."""
        key = (self.script, self.stem)
        with _cleaned_lock:
            if key in _cleaned:
                return
            ours = re.compile(rf"{re.escape(self.stem)}[0-9a-f]{{4}}")
            for lab in json.loads(self.cli("ls", "--json")):
                owner, prefix = lab.get("owner"), str(lab.get("prefix"))
                if ours.fullmatch(prefix) and isinstance(owner, int) and not pid_alive(owner):
                    log.warning("removing lab %s left by a dead run (owner pid %d)", prefix, owner)
                    self.cli("down", prefix)
            _cleaned.add(key)

    # -- the script ------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = _SCRIPT_TIMEOUT) -> str:
        """``field-kit/lab ARGS``; its stdout.

        Raises:
            LabUnsupported: exit status 3, the machine cannot do it.
            LabError: any other failure; the message is the script's error line.
        """
        done = run_command(["bash", str(self.script), *args], timeout=timeout)
        if done.returncode == 0:
            return done.stdout
        error = done.stderr.strip().splitlines()
        reason = error[-1].removeprefix("lab: ") if error else f"exit {done.returncode}"
        if done.returncode == _EX_UNSUPPORTED:
            raise LabUnsupported(f"lab {args[0]}: {reason}")
        raise LabError(f"lab {' '.join(args)} failed (exit {done.returncode}): {reason}")

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise KeyError(f"lab {self.prefix} has no host {name!r} (hosts: {names})")

    def addresses(self) -> dict[str, str]:
        """Host name → its IPv4 address on the lab LAN."""
        return {host.name: host.addr for host in self.hosts}

    # -- programs in hosts -----------------------------------------------------------

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` in ``host`` (``lab exec``, which execs:
        the program keeps the pid of the process spawned for it)."""
        if isinstance(argv, str):
            raise TypeError("argv is a sequence of arguments, not a string")
        return ["bash", str(self.script), "exec", self.prefix, self.host(host).name, "--", *argv]

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        *,
        name: str | None = None,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> LabProcess:
        """Start ``argv`` in ``host`` in the background; the lab stops it at teardown.

        Args:
            name: For logs and messages (default: the program's file name).
            log: Its output file, appended to (default: a new file in the log folder).
            env: Added to (not replacing) this process's environment.
        """
        if not self.is_up:
            raise LabError(f"{self!r} is not up")
        name = name or Path(argv[0]).name
        if log is None:
            log = self.log_dir / f"{host}-{len(self.processes) + 1}-{name}.log"
        command = self.argv(host, argv)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,  # its own group: stopped together, not by our Ctrl-C
            )
        process = LabProcess(name, self.host(host), popen, log)
        self.processes.append(process)
        return process

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        timeout: float = 30,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` to completion, capturing its stdout and stderr.

        Raises:
            LabError: ``check`` and it failed (its output attached as notes), or it ran
                longer than ``timeout`` (it is killed).
        """
        command = self.argv(host, argv)
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=None if env is None else {**os.environ, **env},
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"on {host}: {argv[0]} ran longer than {timeout:g} s") from exc
        if check and done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            error = LabError(
                f"on {host}: {' '.join(argv)} exited {done.returncode}"
                + (f": {lines[-1]}" if lines else "")
            )
            error.add_note(f"stdout: {done.stdout[-4000:]!r}")
            error.add_note(f"stderr: {done.stderr[-4000:]!r}")
            raise error
        return done

    def stop_processes(self, grace: float = TERM_GRACE) -> None:
        """SIGTERM every running program's group, SIGKILL those alive after ``grace``."""
        running = [p for p in self.processes if p.alive]
        for process in running:
            process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()

    def log_tails(self, limit: int = 4000) -> Iterator[tuple[str, str]]:
        """``(description, last characters of its log)`` for every program started."""
        for process in self.processes:
            tail = process.log_text()[-limit:]
            yield f"{process.name} pid {process.pid} ({process.log.name})", tail

    # -- wiring ----------------------------------------------------------------------

    def cut(self, host: str) -> None:
        """Pull the host's cable: its eth0 stays up but loses carrier."""
        self.cli("cut", self.prefix, self.host(host).name)

    def restore(self, host: str) -> None:
        """Plug the cable back in."""
        self.cli("restore", self.prefix, self.host(host).name)

    def netem(
        self, host: str, *, loss_pct: float = 0, delay_ms: float = 0, jitter_ms: float = 0
    ) -> None:
        """Impair what ``host`` sends, replacing any earlier impairment.

        Raises:
            LabUnsupported: delay or jitter on a kernel without sch_netem (loss alone
                works everywhere).
        """
        numbers = ["--loss", _number(loss_pct), "--delay", _number(delay_ms)]
        self.cli(
            "netem", self.prefix, self.host(host).name, *numbers, "--jitter", _number(jitter_ms)
        )

    def clear_netem(self, host: str) -> None:
        self.cli("netem", self.prefix, self.host(host).name, "--clear")

    def block_multicast(self, host: str) -> None:
        """The switch drops multicast to and from ``host``; unicast still flows."""
        self.cli("block-multicast", self.prefix, self.host(host).name)

    def unblock_multicast(self, host: str) -> None:
        self.cli("unblock-multicast", self.prefix, self.host(host).name)

    def separate(self, pairs: Iterable[tuple[str, str]]) -> None:
        """The switch drops every frame between the two hosts of each pair (both ways);
        the hosts still reach everyone else. Replaces the previous set; empty clears.

        One nftables table of ours in the switch namespace, replaced atomically.
        """
        rules = ""
        for a, b in sorted({tuple(sorted(pair)) for pair in pairs}):
            port_a, port_b = self.host(a).netns, self.host(b).netns
            rules += f'        iifname "{port_a}" oifname "{port_b}" drop\n'
            rules += f'        iifname "{port_b}" oifname "{port_a}" drop\n'
        # Declare, delete, define: one atomic replacement of our table.
        script = (
            f"table bridge {_PAIRS_TABLE}\ndelete table bridge {_PAIRS_TABLE}\n"
            f"table bridge {_PAIRS_TABLE} {{\n    chain forward {{\n"
            f"        type filter hook forward priority -10; policy accept;\n{rules}    }}\n}}\n"
        )
        done = run_command(
            ["ip", "netns", "exec", f"{self.prefix}-sw", "nft", "-f", "-"], stdin=script
        )
        if done.returncode != 0:
            raise LabError(f"nft in lab {self.prefix} failed: {done.stderr.strip()}")
