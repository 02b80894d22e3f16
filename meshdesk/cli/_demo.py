"""``meshdesk demo``: a newcomer's first minute.

A throw-away deployment (HQ and two evacuation centres) is provisioned from kits,
the three nodes run as ``meshdesk run`` processes — in network namespaces of the
field-kit lab when run as root (mDNS discovery and calls work there), otherwise on
loopback with static peers — a few sample cases in Japanese and English are opened
at the centres, and the console attaches to HQ. Quitting the console stops
everything the demo started. Without a terminal (CI, scripts) it runs the same
setup, prints what it saw (links, cases synced to HQ) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.config import CallSettings, load_config
from meshdesk.errors import LabError, MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.lab import CHECKOUT_SCRIPT, Lab, lab_problems
from meshdesk.ops.cases import every_case

__all__ = ["SAMPLE_CASES", "demo"]

Env = Mapping[str, str]

#: (centre index, arguments of ``case new``) opened once the nodes run.
SAMPLE_CASES: tuple[tuple[int, dict[str, Any]], ...] = (
    (
        1,
        {
            "name": "山田 花子",
            "furigana": "やまだ はなこ",
            "age": 78,
            "category": "medical",
            "urgency": "immediate",
            "summary": "常用薬（血圧）が残り1日分",
            "consent": ["welfare"],
        },
    ),
    (
        1,
        {
            "name": "佐藤 一郎",
            "category": "housing",
            "urgency": "normal",
            "summary": "自宅が半壊。仮設住宅の申込方法を知りたい",
        },
    ),
    (
        2,
        {
            "name": "Maria Santos",
            "category": "safety_missing",
            "urgency": "high",
            "language": "pt",
            "summary": "Looking for her son; last seen near the station",
        },
    ),
    (
        2,
        {
            "name": "John Miller",
            "category": "supplies",
            "urgency": "low",
            "summary": "Needs baby formula and diapers",
        },
    ),
)

LINK_WITHIN = 45.0
_PORT = 7010
_STOP_GRACE = 15.0
#: What the demo's nodes answer calls with (written into each home's config).
_CALLS = CallSettings(auto_accept=True, media="synthetic")


def _say(text: str) -> None:
    print(text, flush=True)


class _Nodes:
    """Runs the demo's node processes (loopback or lab namespaces); stops them all."""

    def __init__(self, root: Path, homes: dict[str, NodeHome], *, namespaces: bool) -> None:
        self.root, self.homes, self.namespaces = root, homes, namespaces
        self.procs: list[subprocess.Popen[bytes]] = []  # loopback mode
        self.lab: Lab | None = None  # namespace mode: the lab owns the processes
        self.meshdesk = str(Path(sys.executable).parent / "meshdesk")

    def start(self) -> None:
        names = list(self.homes)
        if self.namespaces:
            self.lab = Lab(len(names), stem="mddemo", script=CHECKOUT_SCRIPT, log_dir=self.root)
            self.lab.open()
            prefix = self.lab.prefix
            _say(f"== Building a lab LAN {prefix} (network namespaces) with field-kit/lab")
            for index, name in enumerate(names, start=1):
                argv = [
                    self.meshdesk, "run", "--home", str(self.homes[name].path),
                    "--listen", f"0.0.0.0:{_PORT}", "--interface", "eth0",
                ]  # fmt: skip
                self.lab.popen(f"h{index}", argv, name=name, log=self.root / f"{name}.log")
            return
        first = names[0]
        self._spawn(first, self._loopback(first, []))

    def _loopback(self, name: str, peers: list[str]) -> list[str]:
        argv = [
            self.meshdesk,
            "run",
            "--home",
            str(self.homes[name].path),
            "--listen",
            "127.0.0.1:0",
            "--no-mdns",
            "--web-listen",
            "127.0.0.1:0",
            "--web-redirect",
            "127.0.0.1:0",
        ]
        return argv + [arg for peer in peers for arg in ("--peer", peer)]

    def start_rest(self, hq_port: int) -> None:
        if not self.namespaces:
            for name in list(self.homes)[1:]:
                self._spawn(name, self._loopback(name, [f"127.0.0.1:{hq_port}"]))

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.root / f"{name}.log").open("wb") as log:
            self.procs.append(
                subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.lab is not None:
            try:
                self.lab.stop_processes(grace=_STOP_GRACE)
                self.lab.close()
            except LabError as exc:
                _say(f"== WARNING: {exc}; remove what is left with: make lab-clean")
        _say("== Stopped every node the demo started")


async def _wait(what: str, check: Any, seconds: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise MeshdeskError(f"demo: {what} did not happen within {seconds:g} s")
        await asyncio.sleep(0.2)


async def _linked(hq: NodeHome, count: int) -> list[dict[str, Any]] | None:
    peers = await control.try_call(hq.control_socket, "peers")
    linked = [p for p in peers or [] if p["state"] == "linked"]
    return linked if len(linked) >= count else None


async def _setup(nodes: _Nodes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    homes = list(nodes.homes.values())
    hq = homes[0]
    nodes.start()
    status = await _wait("HQ starting", lambda: control.try_call(hq.control_socket, "status"), 30)
    nodes.start_rest(int(status["listen_port"]))
    for home in homes[1:]:
        await _wait(
            f"{home.path.name} starting",
            lambda h=home: control.try_call(h.control_socket, "status"),
            30,
        )
    how = "mDNS on the lab LAN" if nodes.namespaces else "static peers on loopback"
    _say(f"== Nodes running; discovering each other by {how} …")
    linked = await _wait("HQ linking to both centres", lambda: _linked(hq, 2), LINK_WITHIN)
    made = []
    for centre, args in SAMPLE_CASES:
        case = await control.call(
            homes[centre].control_socket,
            "case_new",
            {"operator": "demo", **args},
        )
        made.append(case)

    async def synced() -> list[dict[str, Any]] | None:
        cases = [
            case async for case in every_case(functools.partial(control.call, hq.control_socket))
        ]
        ids = {c["id"] for c in cases}
        return cases if all(c["id"] in ids for c in made) else None

    at_hq = await _wait("the sample cases reaching HQ", synced, 30)
    return linked, at_hq


async def _run(nodes: _Nodes, *, interactive: bool, env: Env) -> int:
    linked, cases = await _setup(nodes)
    for peer in linked:
        found = ", ".join(peer["found_by"])
        _say(f"   HQ ↔ {peer['name']} @ {peer['site']}: linked (found by {found})")
    _say(f"== {len(cases)} sample cases synced to HQ:")
    for case in cases:
        _say(f"   {case['urgency']:<9} {case['category']:<15} {case.get('name')} ({case['site']})")
    if not interactive:
        _say("== No terminal: not opening the console. Run `make demo` in a terminal to use it.")
        return 0
    from meshdesk.tui.app import MeshdeskApp
    from meshdesk.tui.client import SocketNode
    from meshdesk.tui.i18n import choose_language

    hq = next(iter(nodes.homes.values()))
    app = MeshdeskApp(
        SocketNode(hq.control_socket), lang=choose_language(None, env, "ja"), operator="demo"
    )
    await app.run_async()
    return 0


def _calls_config(home: NodeHome) -> None:
    """The demo's nodes answer calls at once, with a test pattern and tone."""
    home.write_config(replace(load_config(home.config_path), calls=_CALLS))


def _use_namespaces(args: argparse.Namespace) -> bool:
    """Lab namespaces when root can make them here (mDNS and calls work there)."""
    return not args.loopback and not lab_problems(CHECKOUT_SCRIPT, tools=("ip",))


def demo(args: argparse.Namespace, env: Env) -> int:
    """Provision the demo deployment, run it, attach the console (or report, headless)."""
    if args.dir is not None:
        root = Path(args.dir).absolute()
        root.mkdir(parents=True, exist_ok=True)
        code = _demo_at(root, args, env)
        _say(f"The demo deployment is kept in {root}.")
        return code
    with tempfile.TemporaryDirectory(prefix="meshdesk-demo-") as tmp:
        code = _demo_at(Path(tmp), args, env)
    _say("The demo deployment was in a temporary folder and is gone now.")
    return code


def _demo_at(root: Path, args: argparse.Namespace, env: Env) -> int:
    from meshdesk.cli._commands import demo_provision

    homes = {home.path.name: home for home in demo_provision(root)}
    if args.provision_only:
        return 0
    for home in homes.values():
        _calls_config(home)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.no_console
    nodes = _Nodes(root, homes, namespaces=_use_namespaces(args))
    try:
        return asyncio.run(_run(nodes, interactive=interactive, env=env))
    finally:
        nodes.stop()
