"""The lab tier: real processes on a LAN made of network namespaces (``field-kit/lab``).

A lab is a switch namespace with a bridge and hosts ``h1..hN`` on it; nothing in it is
linked to the machine's own network. Tests get labs from ``lab_factory``::

    pytestmark = pytest.mark.lab

    def test_two_nodes_link(lab_factory, wait_until):
        lab = lab_factory(2)
        node = lab.popen("h1", [sys.executable, "-m", "meshdesk", ...])
        lab.cut("h2")
        ...

Every lab is torn down after its test, processes first, even when the test failed; a
failed test's report carries the tail of each process log. On a laptop without root
or network namespaces the lab tests skip; under ``CI=true`` they fail instead, since CI
must really run them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

LAB_SCRIPT = Path(__file__).resolve().parents[2] / "field-kit" / "lab"
TOOLS = ("ip", "nft", "ping")  # iproute2, nftables, iputils-ping
PREFIX_RE = re.compile(r"^md[0-9a-f]{4}$")  # the labs these fixtures make
EX_UNSUPPORTED = 3  # field-kit/lab: not supported on this machine
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for popen'd processes
LOG_TAIL = 4000  # characters of each process log shown for a failed test


@dataclass(frozen=True)
class LabHost:
    name: str  # "h1"
    netns: str  # "md3f2a-h1"
    addr: str  # "10.231.0.11"
    iface: str  # "eth0"


class LabError(RuntimeError):
    """``field-kit/lab`` failed; the message is its error output."""


def lab_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``field-kit/lab ARGS``; raise :class:`LabError` unless it succeeds.

    A command the machine cannot do (exit status 3: e.g. ``netem --delay`` on a kernel
    without sch_netem) skips the test instead: no package install fixes a kernel.
    """
    __tracebackhide__ = True
    proc = subprocess.run(
        ["bash", str(LAB_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode == EX_UNSUPPORTED:
        # Not the "needs root/namespaces" kind of skip (those fail under CI=true):
        # the machine lacks a kernel feature.
        pytest.skip(f"kernel feature missing: {proc.stderr.strip().removeprefix('lab: ')}")
    if proc.returncode != 0:
        raise LabError(f"lab {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (network namespaces)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing tools: {', '.join(missing)} (run .ci/run or apt-get install)")
    if not problems:
        probe = f"mdprobe{os.getpid() % 100000}"
        made = subprocess.run(
            ["ip", "netns", "add", probe], capture_output=True, text=True, check=False
        )
        if made.returncode != 0:
            problems.append(f"ip netns is unusable: {made.stderr.strip()}")
        else:
            subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return problems


@functools.cache
def _lab_problems() -> tuple[str, ...]:
    return tuple(_problems())


def require_lab() -> None:
    """Skip (on a laptop) or fail (under ``CI=true``) unless labs can be built here."""
    problems = _lab_problems()
    if not problems:
        return
    message = "lab: " + "; ".join(problems)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} — CI must run the lab tier", pytrace=False)
    pytest.skip(message)


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def new_prefix() -> str:
    """A fresh ``md`` + 4 hex prefix that no namespace on this machine uses yet."""
    taken = {name.rsplit("-", 1)[0] for name in _netns_names()}
    for _ in range(100):
        prefix = f"md{secrets.token_hex(2)}"
        if prefix not in taken:
            return prefix
    raise LabError("no free lab prefix after 100 tries")  # pragma: no cover


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def _clean_stale_labs() -> None:
    """Remove labs of ours left by test runs that died; live runs' labs are kept."""
    for lab in json.loads(lab_cli("ls", "--json").stdout):
        owner = lab.get("owner")
        if PREFIX_RE.match(lab["prefix"]) and isinstance(owner, int) and not _pid_alive(owner):
            lab_cli("down", lab["prefix"])


class Lab:
    """A running lab: its hosts, and the processes and impairments put on them.

    ``host`` arguments are host names (``"h1"``). ``run``/``popen`` start ``argv``
    inside the host's namespace through ``ip netns exec``; ``env`` adds to (does not
    replace) the current environment.
    """

    def __init__(self, prefix: str, hosts: Sequence[LabHost], log_dir: Path) -> None:
        self.prefix = prefix
        self.hosts = list(hosts)
        self._log_dir = log_dir
        self._procs: list[subprocess.Popen[str]] = []
        self._logs: dict[int, Path] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, hosts={[h.name for h in self.hosts]})"

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise KeyError(f"lab {self.prefix} has no host {name!r} (hosts: {names})")

    def _argv(self, host: str, argv: Sequence[str]) -> list[str]:
        if isinstance(argv, str):
            raise TypeError("argv is a sequence of arguments, not a string")
        return ["ip", "netns", "exec", self.host(host).netns, *argv]

    @staticmethod
    def _env(env: Mapping[str, str] | None) -> dict[str, str] | None:
        return None if env is None else {**os.environ, **env}

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        timeout: float = 30,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` to completion, capturing stdout and stderr.

        Raises:
            subprocess.CalledProcessError: ``check`` and a non-zero exit (the output
                is attached as notes, so the report shows it).
            subprocess.TimeoutExpired: it ran longer than ``timeout`` (it is killed).
        """
        __tracebackhide__ = True
        proc = subprocess.run(
            self._argv(host, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            error = subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            )
            error.add_note(f"on {host}: stdout: {proc.stdout[-LOG_TAIL:]!r}")
            error.add_note(f"on {host}: stderr: {proc.stderr[-LOG_TAIL:]!r}")
            raise error
        return proc

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` on ``host`` in the background; it is stopped at teardown.

        stdout and stderr go to ``log_path`` (default: a file in a per-lab temporary
        directory; :meth:`log_path` tells which). The process leads its own process
        group, which teardown sends SIGTERM and, after 5 s, SIGKILL.
        """
        if self._closed:
            raise LabError(f"lab {self.prefix} is closed")
        if log_path is None:
            log_path = self._log_dir / f"{host}-{len(self._procs) + 1}-{Path(argv[0]).name}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                self._argv(host, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env=self._env(env),
                start_new_session=True,
            )
        self._procs.append(proc)
        self._logs[proc.pid] = log_path
        return proc

    def log_path(self, proc: subprocess.Popen[str]) -> Path:
        """The file that a process from :meth:`popen` writes its output to."""
        return self._logs[proc.pid]

    def cut(self, host: str) -> None:
        """Pull the host's cable: its eth0 stays up but loses carrier."""
        lab_cli("cut", self.prefix, self.host(host).name)

    def restore(self, host: str) -> None:
        lab_cli("restore", self.prefix, self.host(host).name)

    def netem(
        self, host: str, *, loss_pct: float = 0, delay_ms: float = 0, jitter_ms: float = 0
    ) -> None:
        """Impair what ``host`` sends, replacing any earlier impairment.

        Delay and jitter need the kernel's sch_netem: without it the test is skipped.
        """
        lab_cli(
            "netem",
            self.prefix,
            self.host(host).name,
            "--loss",
            _number(loss_pct),
            "--delay",
            _number(delay_ms),
            "--jitter",
            _number(jitter_ms),
        )

    def clear_netem(self, host: str) -> None:
        lab_cli("netem", self.prefix, self.host(host).name, "--clear")

    def block_multicast(self, host: str) -> None:
        """The switch drops multicast to and from ``host``; unicast still flows."""
        lab_cli("block-multicast", self.prefix, self.host(host).name)

    def unblock_multicast(self, host: str) -> None:
        lab_cli("unblock-multicast", self.prefix, self.host(host).name)

    def stop_processes(self) -> None:
        """SIGTERM every process from :meth:`popen`, SIGKILL the ones alive after 5 s."""
        running = [proc for proc in self._procs if proc.poll() is None]
        for proc in running:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=TERM_GRACE)

    def close(self) -> None:
        """Stop the processes and tear the lab down; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop_processes()
        finally:
            lab_cli("down", self.prefix)

    def log_tails(self) -> Iterator[tuple[str, str]]:
        for pid, path in self._logs.items():
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                yield f"pid {pid} ({path.name})", text[-LOG_TAIL:]


def _number(value: float) -> str:
    if value < 0:
        raise ValueError(f"lab impairments are non-negative, got {value}")
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def make_lab(n: int, log_dir: Path, *, subnet: str | None = None) -> Lab:
    """Build a lab of ``n`` hosts under a fresh prefix (see ``lab_factory``)."""
    prefix = new_prefix()
    args = ["up", str(n), "--prefix", prefix, "--owner", str(os.getpid()), "--json"]
    if subnet is not None:
        args += ["--subnet", subnet]
    info = json.loads(lab_cli(*args).stdout)
    hosts = [LabHost(h["name"], h["netns"], h["addr"], h["iface"]) for h in info["hosts"]]
    (log_dir / prefix).mkdir(parents=True, exist_ok=True)
    return Lab(prefix, hosts, log_dir / prefix)


LabFactory = Callable[..., Lab]
_LABS_KEY = pytest.StashKey[list[Lab]]()


@pytest.fixture(autouse=True)
def _lab_required() -> None:
    """Every test in this tier needs a machine that can build labs."""
    require_lab()


@pytest.fixture
def lab_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[LabFactory, None, None]:
    """``make_lab(n, *, subnet=None) -> Lab``; every lab made is torn down afterwards."""
    require_lab()
    _clean_stale_labs()
    labs: list[Lab] = []
    request.node.stash[_LABS_KEY] = labs
    log_dir = tmp_path_factory.mktemp("lab-logs")

    def factory(n: int, *, subnet: str | None = None) -> Lab:
        lab = make_lab(n, log_dir, subnet=subnet)
        labs.append(lab)
        return lab

    yield factory
    errors: list[BaseException] = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as exc:  # tear down the others all the same
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def lab_prefix() -> Generator[str, None, None]:
    """A fresh prefix for driving ``field-kit/lab`` by hand; ``lab down`` afterwards."""
    prefix = new_prefix()
    yield prefix
    lab_cli("down", prefix)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the lab processes' logs to a failed test's report."""
    report = yield
    if report.when == "call" and report.failed:
        for lab in item.stash.get(_LABS_KEY, []):
            for name, tail in lab.log_tails():
                report.sections.append((f"lab {lab.prefix} {name}", tail))
    return report
