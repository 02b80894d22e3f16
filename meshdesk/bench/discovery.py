"""``meshdesk bench discovery``: how fast a new node links with the peers on its LAN.

The bench builds a throw-away LAN with the network lab (``field-kit/lab``: network
namespaces on a bridge, never the machine's own interfaces) and a throw-away
deployment, starts P nodes in hosts h1..hP and waits until they are linked. Then,
``runs`` times each, alternating which goes first:

- **meshdesk**: a fresh ``meshdesk run`` process joins from host h(P+1); measured
  until it is linked (mutual TLS and hello done) with every one of the P peers. It
  is then stopped (SIGTERM) and the bench waits until every peer saw its link go
  down and heard its mDNS goodbye. The joiner listens on a fresh port each run
  (``--listen 0.0.0.0:0``): the peers keep redialling the address it left, and a
  redial landing on its new listener would be counted as discovery.
- **raw zeroconf** (the baseline): a plain service is registered in h1 by a small
  python-zeroconf script; a fresh browser process in h(P+1) is measured until it
  has resolved that service. A browser that runs for the whole bench in its own
  host h(P+2) also times registration → sighting (RFC 6762 probing, announcement).

Only the process under test binds mDNS in h(P+1). python-zeroconf's first browse
query asks for unicast replies (QU), and when several sockets share port 5353 on a
host (SO_REUSEPORT) the kernel gives each unicast datagram to one of them: a second
mDNS socket there (another browser, avahi-daemon) takes the replies and the fresh
one sees its peers only at its second query, ≈ 1.1 s later.

Times cross processes, so they are wall-clock (``time.time()``, one machine's
clock): the helpers print them with full precision, the nodes' ``--log-json``
lines to the millisecond. Each run's figures:

- ``linked_s``: from the joiner's start — its code imported, ``meshdesk.cli.main``
  about to run ``run`` (a line the bench's launcher prints) — until the first
  ``linked with`` log line of the last of the P peers to link (a link replaced by
  the duplicate tie-break right after does not count again).
- ``process_linked_s``: the same end, from the moment the bench spawned
  ``lab exec`` (includes the lab wrapper, Python's start-up and imports).
- ``zeroconf_baseline_s``: the fresh browser, after its imports and before it
  creates ``Zeroconf``, until the service is resolved (``zeroconf_process_baseline_s``
  from the spawn, as above).
- ``zeroconf_register_to_seen_s``: from ``async_register_service`` in h1 until the
  running browser in h(P+1) has resolved the service.

Progress goes to stderr; stdout carries only the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zeroconf

from meshdesk import control
from meshdesk.bench._discovery_lab import (
    DEFAULT_LAB,
    LAB_ENV,
    Progress,
    close_lab,
    entry_time,
    find_event,
    find_lab,
    first_time,
    links_in,
    log_tail,
    read_log,
)
from meshdesk.bench._discovery_scripts import BROWSER, NODE_LAUNCHER, REGISTRAR, WATCHER
from meshdesk.bench._stats import Row, Summary, format_table, require_at_least
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError, UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.lab import Lab, LabHost, LabProcess

__all__ = [
    "DiscoveryBenchConfig",
    "DiscoveryBenchResult",
    "add_parser",
    "find_lab",
    "handle",
    "run_discovery_bench",
]

_T = TypeVar("_T")

#: The product's target for ``linked_p50_s``.
TARGET_LINKED_P50_S = 0.5
#: Fewest runs that give a p95 worth printing.
MIN_RUNS = 10
MAX_RUNS = 500
MAX_PEERS = 20
PEER_PORT = 7420
#: The baseline's service type: not meshdesk's, so the nodes never look at it.
BASELINE_TYPE = "_mdbench._tcp.local."

_POLL = 0.02  # seconds between looks at a log or a control socket
_SETUP_TIMEOUT = 30.0
_STEP_TIMEOUT = 15.0  # one link, exit, goodbye or resolution
_HELPER_BOUND = 60  # seconds a per-run helper process lives at most

# -- configuration and result ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscoveryBenchConfig:
    """What one ``bench discovery`` run does.

    Attributes:
        runs: How many times the joiner (and the baseline) is measured.
        peers: How many running nodes the joiner links with.
        min_runs: Fewest runs accepted (10, for a meaningful p95; tests lower it).

    Raises:
        UsageError: too few or too many runs or peers.
    """

    runs: int = 10
    peers: int = 2
    min_runs: int = MIN_RUNS

    def __post_init__(self) -> None:
        require_at_least("--min-runs", self.min_runs)
        require_at_least("--runs", self.runs, self.min_runs)
        require_at_least("--peers", self.peers)
        if self.runs > MAX_RUNS:
            raise UsageError(f"--runs must be at most {MAX_RUNS}, got {self.runs}")
        if self.peers > MAX_PEERS:
            raise UsageError(f"--peers must be at most {MAX_PEERS}, got {self.peers}")


@dataclass(frozen=True, slots=True)
class DiscoveryBenchResult:
    """Every run's durations, in seconds.

    Attributes:
        config: The run's configuration.
        linked: joiner's start (meshdesk imported) → linked with all peers.
        process_linked: spawn of ``lab exec`` → linked with all peers.
        python_start: spawn → the launcher's first statement (lab wrapper, Python).
        imports: the launcher's first statement → meshdesk imported.
        node_startup: meshdesk imported → mDNS browsing (identity, store, listener).
        browse_linked: mDNS browsing → linked with all peers.
        baseline: fresh zeroconf browser, after imports → service resolved.
        process_baseline: spawn → service resolved.
        register_to_seen: ``async_register_service`` → resolved by a running browser.
        first_links: how each peer's first link came about (``outbound via mdns``,
            ``outbound via exchange``, ``inbound``), counted over all runs.
        relinks: links made again in the same run (duplicate tie-break).
    """

    config: DiscoveryBenchConfig
    linked: Summary
    process_linked: Summary
    python_start: Summary
    imports: Summary
    node_startup: Summary
    browse_linked: Summary
    baseline: Summary
    process_baseline: Summary
    register_to_seen: Summary
    first_links: Mapping[str, int]
    relinks: int

    @property
    def meets_target(self) -> bool:
        return self.linked.median <= TARGET_LINKED_P50_S

    def _figures(self) -> dict[str, Summary]:
        return {
            "linked": self.linked,
            "process_linked": self.process_linked,
            "zeroconf_baseline": self.baseline,
            "zeroconf_process_baseline": self.process_baseline,
            "zeroconf_register_to_seen": self.register_to_seen,
        }

    def _breakdown(self) -> dict[str, Summary]:
        return {
            "python_start": self.python_start,
            "imports": self.imports,
            "node_startup": self.node_startup,
            "browse_linked": self.browse_linked,
        }

    def to_json(self) -> dict[str, Any]:
        """The result as one JSON object: p50 and p95 of each figure, then samples."""
        out: dict[str, Any] = {
            "bench": "discovery",
            "runs": self.config.runs,
            "peers": self.config.peers,
            "target_linked_p50_s": TARGET_LINKED_P50_S,
            "meets_target": self.meets_target,
        }
        for name, summary in self._figures().items():
            out[f"{name}_p50_s"] = round(summary.median, 6)
            out[f"{name}_p95_s"] = round(summary.p95, 6)
        for name, summary in self._breakdown().items():
            out[f"{name}_p50_s"] = round(summary.median, 6)
        out["first_links"] = dict(self.first_links)
        out["relinks"] = self.relinks
        out["samples_s"] = {
            name: [round(s, 6) for s in summary.samples]
            for name, summary in (self._figures() | self._breakdown()).items()
        }
        out["python"] = platform.python_version()
        out["zeroconf"] = zeroconf.__version__
        return out

    def format_table(self) -> str:
        """The result as a table: meshdesk | raw zeroconf | ratio, in milliseconds."""
        c = self.config

        def ms(summary: Summary) -> str:
            return f"{summary.median * 1000:,.0f} ms"

        pairs = [
            ("start", self.linked, self.baseline),
            ("spawn", self.process_linked, self.process_baseline),
        ]
        rows = [
            Row(
                f"{start} -> linked / resolved, {q} (ms)",
                _ms(ours, p95=q == "p95"),
                _ms(base, p95=q == "p95"),
                digits=1,
            )
            for start, ours, base in pairs
            for q in ("p50", "p95")
        ]
        links = ", ".join(f"{n} {how}" for how, n in sorted(self.first_links.items()))
        verdict = "met" if self.meets_target else "MISSED"
        notes = [
            f"meshdesk: a fresh `meshdesk run` in h{c.peers + 1} until linked (mutual TLS +"
            f" hello) with all {c.peers} running peers;",
            "  start = meshdesk imported, its main() about to run; spawn = `lab exec` started.",
            "raw zeroconf: a fresh AsyncServiceBrowser process in the same host until it has",
            "  resolved a service registered in h1; start = after imports, before Zeroconf().",
            f"meshdesk's time, p50: lab exec + Python start {ms(self.python_start)},"
            f" imports {ms(self.imports)},",
            f"  node start-up (identity, store, TLS listener) {ms(self.node_startup)},"
            f" mDNS browse -> linked {ms(self.browse_linked)}.",
            f"zeroconf register -> resolved by a running browser: p50 {ms(self.register_to_seen)},"
            f" p95 {self.register_to_seen.p95 * 1000:,.0f} ms.",
            f"first links: {links}; {self.relinks} replaced by the duplicate tie-break.",
            f"target linked p50 <= {TARGET_LINKED_P50_S * 1000:.0f} ms: {verdict}.",
        ]
        title = (
            f"meshdesk bench discovery: a new node joins {c.peers} linked peers,"
            f" {c.runs} runs, lab of {c.peers + 2} hosts"
        )
        return format_table(title, rows, headers=("meshdesk", "raw zeroconf"), notes=notes)


def _ms(summary: Summary, *, p95: bool = False) -> float:
    """The median (or p95) of ``summary`` in milliseconds."""
    return (summary.p95 if p95 else summary.median) * 1000


# -- the run ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    home: NodeHome
    node_id: str


async def _make_deployment(root: Path, peers: int) -> list[_Node]:
    """HQ plus ``peers`` + 1 provisioned nodes; the last one is the joiner."""
    names = [*(f"peer{i}" for i in range(1, peers + 1)), "joiner"]
    specs = [HomeSpec("HQ", Role.HQ, folder="hq"), *(HomeSpec(name) for name in names)]
    deployment = await build_deployment(root, "bench discovery", specs)
    return [_Node(name, deployment.homes[name], deployment.node_id(name)) for name in names]


def _peer_states(node: _Node) -> dict[str, str] | None:
    """``node_id -> state`` from a node's control socket; None while it is not up."""
    try:
        peers = asyncio.run(control.call(node.home.control_socket, "peers", wait=2.0))
    except MeshdeskError:
        return None
    return {str(p["node_id"]): str(p["state"]) for p in peers}


class _Bench:
    def __init__(self, config: DiscoveryBenchConfig, lab: Lab, progress: Progress) -> None:
        self.config = config
        self.lab = lab
        self.progress = progress
        self.python = sys.executable
        self.token = secrets.token_hex(3)
        self.samples: dict[str, list[float]] = {}
        self.first_links: Counter[str] = Counter()
        self.relinks = 0
        self.peers: list[tuple[_Node, LabProcess]] = []
        self.joiner: _Node | None = None
        self.watcher: LabProcess | None = None

    @property
    def joiner_host(self) -> LabHost:
        return self.lab.host(f"h{self.config.peers + 1}")

    @property
    def watcher_host(self) -> LabHost:
        return self.lab.host(f"h{self.config.peers + 2}")

    def fail(self, message: str, *procs: LabProcess) -> MeshdeskError:
        for proc in procs:
            self.progress(f"last lines of {proc.name}'s log:\n{log_tail(proc.log)}")
        return MeshdeskError(f"bench discovery: {message}")

    def wait(
        self, what: str, check: Callable[[], _T | None], procs: Sequence[LabProcess], timeout: float
    ) -> _T:
        """Poll ``check`` until it returns a value; fail if a process ends or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value is not None:
                return value
            for proc in procs:
                if proc.poll() is not None:
                    status = proc.returncode
                    raise self.fail(f"{proc.name} exited ({status}) while {what}", proc)
            if time.monotonic() > deadline:
                raise self.fail(f"timed out after {timeout:g} s {what}", *procs)
            time.sleep(_POLL)

    def node_argv(
        self, node: _Node, host: LabHost, *, listen: str, bound: int, verbose: bool
    ) -> list[str]:
        args = ["-v"] if verbose else []
        args += ["run", "--home", str(node.home.path), "--listen", listen]
        args += ["--interface", host.iface, "--log-json"]
        return [self.python, "-c", NODE_LAUNCHER, str(bound), *args]

    # -- setup ----------------------------------------------------------------------------

    def setup(self, nodes: list[_Node]) -> None:
        c = self.config
        *existing, self.joiner = nodes
        # Long enough for every run, short enough that nothing lingers if the bench dies.
        bound = int(_SETUP_TIMEOUT + c.runs * 4 * _STEP_TIMEOUT)
        start = time.monotonic()
        for index, node in enumerate(existing, start=1):
            host = self.lab.host(f"h{index}")
            argv = self.node_argv(
                node, host, listen=f"0.0.0.0:{PEER_PORT}", bound=bound, verbose=False
            )
            self.peers.append((node, self.lab.popen(host.name, argv, name=node.name)))
        procs = [proc for _, proc in self.peers]
        for node, _ in self.peers:
            others = {n.node_id for n in existing if n is not node}

            def linked(node: _Node = node, others: set[str] = others) -> bool | None:
                states = _peer_states(node)
                if states is None:
                    return None
                return True if all(states.get(o) == "linked" for o in others) else None

            self.wait(f"waiting for {node.name} to link with its peers", linked, procs, 30)
        self.progress(f"{c.peers} peers running and linked after {time.monotonic() - start:.1f} s")
        host = self.watcher_host
        self.watcher = self.lab.popen(
            host.name,
            [self.python, "-c", WATCHER, host.addr, BASELINE_TYPE, str(bound)],
            name="watcher",
        )
        watcher = self.watcher
        self.wait(
            "starting the zeroconf watcher",
            lambda: find_event(read_log(watcher.log), "ready"),
            [watcher],
            _STEP_TIMEOUT,
        )

    # -- one run of each --------------------------------------------------------------------

    def measure_meshdesk(self, run: int) -> str:
        joiner = self.joiner
        assert joiner is not None
        peer_ids = {node.node_id for node, _ in self.peers}
        goodbye = f"mDNS: {joiner.node_id} left the network"
        heard = {node.name: self._count(proc.log, goodbye) for node, proc in self.peers}
        host = self.joiner_host
        argv = self.node_argv(joiner, host, listen="0.0.0.0:0", bound=_HELPER_BOUND, verbose=True)
        spawned = time.time()
        proc = self.lab.popen(host.name, argv, name=f"joiner-{run}")

        def up() -> list[dict[str, Any]] | None:
            entries = read_log(proc.log)
            ready = first_time(entries, "ready") is not None
            return (
                entries
                if ready and len(links_in(entries, peer_ids).first) == len(peer_ids)
                else None
            )

        entries = self.wait(
            f"waiting for the joiner to link with all {len(peer_ids)} peers",
            up,
            [proc],
            _STEP_TIMEOUT,
        )
        links = links_in(entries, peer_ids)
        python = first_time(entries, "python running")
        imported = first_time(entries, "meshdesk imported")
        browsing = first_time(entries, "mDNS browsing")
        if python is None or imported is None or browsing is None:
            raise self.fail("the joiner's log lacks its start lines", proc)
        linked = max(at for at, _ in links.first.values())
        self.first_links.update(how for _, how in links.first.values())
        self.relinks += links.count - len(links.first)
        self._add("linked", linked - imported)
        self._add("process_linked", linked - spawned)
        self._add("python_start", python - spawned)
        self._add("imports", imported - python)
        self._add("node_startup", browsing - imported)
        self._add("browse_linked", linked - browsing)

        status = proc.stop(_STEP_TIMEOUT)
        if status != 0:
            raise self.fail(f"the joiner exited with status {status} on SIGTERM", proc)
        for node, peer_proc in self.peers:

            def noticed(node: _Node = node, log: Path = peer_proc.log) -> bool | None:
                if self._count(log, goodbye) <= heard[node.name]:
                    return None
                states = _peer_states(node)
                return (
                    True if states is not None and states.get(joiner.node_id) != "linked" else None
                )

            self.wait(
                f"waiting for {node.name} to notice the joiner's goodbye",
                noticed,
                [peer_proc],
                _STEP_TIMEOUT,
            )
        return (
            f"meshdesk linked in {(linked - imported) * 1000:.0f} ms"
            f" ({(linked - spawned) * 1000:.0f} ms from spawn)"
        )

    def measure_zeroconf(self, run: int) -> str:
        watcher = self.watcher
        assert watcher is not None
        h1, host = self.lab.host("h1"), self.joiner_host
        name = f"bench-{self.token}-{run}"
        full = f"{name}.{BASELINE_TYPE}".lower()
        registrar = self.lab.popen(
            "h1",
            [self.python, "-c", REGISTRAR, h1.addr, name, BASELINE_TYPE, str(_HELPER_BOUND)],
            name=f"registrar-{run}",
        )
        seen = self.wait(
            "waiting for the running browser to see the baseline service",
            lambda: find_event(read_log(watcher.log), "seen", full),
            [registrar, watcher],
            _STEP_TIMEOUT,
        )
        self.wait(
            "waiting for the baseline service's announcements",
            lambda: find_event(read_log(registrar.log), "announced"),
            [registrar],
            _STEP_TIMEOUT,
        )
        registering = find_event(read_log(registrar.log), "registering")
        assert registering is not None  # the registrar prints it before "announced"
        self._add("zeroconf_register_to_seen", entry_time(seen) - entry_time(registering))

        spawned = time.time()
        browser = self.lab.popen(
            host.name,
            [self.python, "-c", BROWSER, host.addr, BASELINE_TYPE, full, str(_STEP_TIMEOUT)],
            name=f"browser-{run}",
        )
        try:
            status = browser.wait(_STEP_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            raise self.fail("the fresh zeroconf browser did not finish", browser) from None
        resolved = find_event(read_log(browser.log), "resolved")
        if status != 0 or resolved is None:
            raise self.fail(f"the fresh zeroconf browser failed ({status})", browser)
        baseline = float(resolved["end"]) - float(resolved["start"])
        self._add("zeroconf_baseline", baseline)
        self._add("zeroconf_process_baseline", float(resolved["end"]) - spawned)

        status = registrar.stop(_STEP_TIMEOUT)
        if status != 0:
            raise self.fail(f"the baseline registrar exited with status {status}", registrar)
        self.wait(
            "waiting for the running browser to hear the baseline's goodbye",
            lambda: find_event(read_log(watcher.log), "removed", full),
            [watcher],
            _STEP_TIMEOUT,
        )
        return (
            f"zeroconf resolved in {baseline * 1000:.0f} ms,"
            f" register -> seen {(entry_time(seen) - entry_time(registering)) * 1000:.0f} ms"
        )

    def _add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    @staticmethod
    def _count(log: Path, text: str) -> int:
        return sum(1 for entry in read_log(log) if text in str(entry.get("msg", "")))

    def result(self) -> DiscoveryBenchResult:
        s = {name: Summary.of(values) for name, values in self.samples.items()}
        return DiscoveryBenchResult(
            config=self.config,
            linked=s["linked"],
            process_linked=s["process_linked"],
            python_start=s["python_start"],
            imports=s["imports"],
            node_startup=s["node_startup"],
            browse_linked=s["browse_linked"],
            baseline=s["zeroconf_baseline"],
            process_baseline=s["zeroconf_process_baseline"],
            register_to_seen=s["zeroconf_register_to_seen"],
            first_links=dict(self.first_links),
            relinks=self.relinks,
        )


def _stderr(line: str) -> None:
    print(f"bench discovery: {line}", file=sys.stderr, flush=True)


def run_discovery_bench(
    config: DiscoveryBenchConfig, lab_script: Path, progress: Progress = _stderr
) -> DiscoveryBenchResult:
    """Build a lab and a deployment, measure ``config.runs`` times, tear everything down.

    Blocking (it starts processes and polls); call it from a thread in async code. The
    lab, its processes and the temporary deployment are removed on every exit,
    including errors and Ctrl-C.

    Args:
        config: What to run.
        lab_script: ``field-kit/lab`` (see :func:`find_lab`).
        progress: Called with one line per phase and run.

    Raises:
        MeshdeskError: the lab cannot be built, or a step failed or timed out.
    """
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshdesk-bench-")))
        lab = Lab(config.peers + 2, stem="bd", script=lab_script, log_dir=folder / "logs")
        stack.callback(close_lab, lab, progress)  # its processes first, then the lab
        lab.open()
        progress(f"lab {lab.prefix} up: {config.peers + 2} hosts")
        nodes = asyncio.run(_make_deployment(folder / "nodes", config.peers))
        bench = _Bench(config, lab, progress)
        bench.setup(nodes)
        for run in range(1, config.runs + 1):
            # Alternate who goes first, so drift does not favour one side.
            if run % 2:
                lines = [bench.measure_meshdesk(run), bench.measure_zeroconf(run)]
            else:
                lines = list(reversed([bench.measure_zeroconf(run), bench.measure_meshdesk(run)]))
            progress(f"run {run}/{config.runs}: {'; '.join(lines)}")
        return bench.result()
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: ExitStack may swallow)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the bench runs, so the lab is still torn down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- command line ------------------------------------------------------------------------


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``discovery`` to the ``bench`` sub-commands."""
    parser = benches.add_parser(
        "discovery",
        help="a new node's mDNS discovery and links vs raw zeroconf (needs root, lab)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    defaults = DiscoveryBenchConfig()
    parser.add_argument(
        "--runs",
        type=int,
        default=defaults.runs,
        metavar="N",
        help=f"times the new node joins (at least {MIN_RUNS}, for the p95;"
        f" default: {defaults.runs})",
    )
    parser.add_argument(
        "--peers",
        type=int,
        default=defaults.peers,
        metavar="P",
        help=f"running nodes the new node links with (default: {defaults.peers})",
    )
    parser.add_argument(
        "--lab",
        metavar="PATH",
        help=f"the network lab script (default: ${LAB_ENV}, else ./{DEFAULT_LAB})",
    )
    parser.add_argument("--min-runs", type=int, default=MIN_RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run ``bench discovery`` from parsed arguments; print the table or the JSON."""
    config = DiscoveryBenchConfig(runs=args.runs, peers=args.peers, min_runs=args.min_runs)
    lab = find_lab(args.lab, env)
    with _sigterm_as_interrupt():
        result = run_discovery_bench(config, lab)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.format_table())
    return 0
