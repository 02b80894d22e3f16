"""``meshdesk bench web``: a citizen joining from a real browser, beside a raw page.

Needs root and Debian's chromium (driven by Playwright, :mod:`meshdesk.lab.phone`):
the bench makes a two-host network lab (stem ``bw``). In h1 a real desk node
(``meshdesk run``, synthetic media) serves the real page; the phone is chromium in
h2 with fake camera and microphone. Each round: an invitation, the page opened,
"start" tapped, the code admitted over the control socket, and the clock runs from
the phone seeing the admission to its first remote video frame (``join_ms``, both
ends read in the page). With the last round's call up, the desk process's CPU over
``--seconds`` is ``desk_cpu_pct_per_citizen`` (percent of one core).

Then the same browser and fake media against the baseline (:mod:`._web_raw`): one
aiohttp page and one aiortc answer with the same synthetic media, nothing else;
``raw_join_ms`` from the page starting its peer connection to the first frame, and
``raw_cpu_pct`` of that server process. Targets (issue 13): join ≤ 1,000 ms p50,
CPU ≤ 1.3 × raw.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from meshdesk import control
from meshdesk.bench._discovery_lab import close_lab, find_lab, log_tail
from meshdesk.config import CallSettings, Config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError
from meshdesk.identity import Role
from meshdesk.identity.webpki import WebCA
from meshdesk.lab import Lab, LabProcess
from meshdesk.lab.phone import (
    browser_problems,
    goto,
    new_phone,
    phone_browser,
    run_coroutine,
)

__all__ = ["add_parser", "run"]

_CONFIG = Config(calls=CallSettings(auto_accept=True, media="synthetic", playback="off"))
_RAW_PORT = 8443
#: Bounds (no product limit) for start-up and for one join.
_START_LIMIT = 30.0
_JOIN_LIMIT_MS = 20_000
JOIN_TARGET_MS = 1000.0
CPU_TARGET_RATIO = 1.3

Say = Callable[[str], None]


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = benches.add_parser(
        "web",
        help="a citizen joining from chromium: join time and desk CPU beside a raw "
        "aiohttp+aiortc page (root; network lab)",
    )
    bench.add_argument("--rounds", type=int, default=5, help="joins per side (default 5)")
    bench.add_argument(
        "--seconds", type=float, default=8.0, help="seconds of one call measured for CPU"
    )
    bench.add_argument("--lab", metavar="PATH", help="the lab script (default ./field-kit/lab)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=run)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_pct(pid: int, seconds: float) -> float:
    """Percent of one core ``pid`` used over the next ``seconds``."""
    cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return round(100.0 * (_cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0), 1)


def _first_frame_ms(page: Any) -> float:
    """Wait for the page's first remote video frame; ms since it started connecting."""
    page.wait_for_function(
        "() => window.meshdesk && window.meshdesk.times.firstFrame !== null",
        timeout=_JOIN_LIMIT_MS,
    )
    times = page.evaluate("window.meshdesk.times")
    return round(float(times["firstFrame"]) - float(times["admitted"]), 1)


def _control(sock: Path, op: str, args: Mapping[str, Any] | None = None) -> Any:
    return run_coroutine(lambda: control.call(sock, op, args))


def _start_desk(lab: Lab, folder: Path, say: Say) -> tuple[LabProcess, Path]:
    spec = HomeSpec("desk", Role.HQ, config=_CONFIG)
    city = run_coroutine(lambda: build_deployment(folder / "city", "bench web", [spec]))
    home = city.homes["desk"]
    host = lab.host("h1")
    argv = [str(Path(sys.executable).parent / "meshdesk"), "run", "--home", str(home.path),
            "--listen", "0.0.0.0:7420", "--interface", host.iface]  # fmt: skip
    desk = lab.popen("h1", argv, name="desk")
    deadline = time.monotonic() + _START_LIMIT
    while True:
        if desk.poll() is not None:
            raise MeshdeskError(f"bench web: the desk node exited:\n{log_tail(desk.log)}")
        try:
            _control(home.control_socket, "invite_list")
            break
        except MeshdeskError:
            if time.monotonic() > deadline:
                raise MeshdeskError("bench web: the desk node did not start") from None
            time.sleep(0.2)
    say(f"desk node up in {host.name} ({host.addr})")
    return desk, home.control_socket


def _real(lab: Lab, browser: Any, folder: Path, rounds: int, seconds: float, say: Say) -> Any:
    desk, sock = _start_desk(lab, folder, say)
    joins: list[float] = []
    idle = _cpu_pct(desk.pid, min(seconds, 3.0))
    cpu = 0.0
    for index in range(rounds):
        invite = _control(sock, "invite_new")
        page = new_phone(browser)
        goto(page, str(invite["url"]))
        page.click("#go")
        page.wait_for_selector("#code:not(:empty)", timeout=_JOIN_LIMIT_MS)
        code = page.inner_text("#code")
        _control(sock, "invite_admit", {"code": code})
        joins.append(_first_frame_ms(page))
        if index == rounds - 1:
            cpu = _cpu_pct(desk.pid, seconds)
        for call in _control(sock, "calls"):
            if call["state"] != "ended":
                _control(sock, "call_hangup", {"call_id": call["call_id"]})
        page.context.close()
        say(f"  real join {index + 1}/{rounds}: {joins[-1]} ms")
    desk.stop()
    return joins, cpu, idle


def _raw(lab: Lab, browser: Any, folder: Path, rounds: int, seconds: float, say: Say) -> Any:
    host = lab.host("h1")
    now = dt.datetime.now(dt.UTC)
    subca = WebCA.create("bench", now=now).issue_subca("raw", "raw", now=now)
    key, cert = subca.issue_leaf([host.addr], now=now)
    (folder / "raw.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "raw.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    argv = [sys.executable, "-m", "meshdesk.bench._web_raw", str(_RAW_PORT),
            str(folder / "raw.pem"), str(folder / "raw.key")]  # fmt: skip
    server = lab.popen("h1", argv, name="raw")
    deadline = time.monotonic() + _START_LIMIT
    while "ready" not in server.log_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise MeshdeskError(f"bench web: the raw page did not start:\n{log_tail(server.log)}")
        time.sleep(0.1)
    joins: list[float] = []
    cpu = 0.0
    for index in range(rounds):
        page = new_phone(browser)
        goto(page, f"https://{host.addr}:{_RAW_PORT}/")
        page.click("#go")
        joins.append(_first_frame_ms(page))
        if index == rounds - 1:
            cpu = _cpu_pct(server.pid, seconds)
        page.evaluate("fetch('/close', {method: 'POST'})")
        page.context.close()
        say(f"  raw join {index + 1}/{rounds}: {joins[-1]} ms")
    server.stop()
    return joins, cpu


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.rounds < 1 or args.seconds <= 0:
        raise MeshdeskError("--rounds must be at least 1 and --seconds positive")
    script = find_lab(args.lab, env, what="web")
    problems = browser_problems()
    if problems:
        raise MeshdeskError("bench web needs a browser: " + "; ".join(problems))

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-web-") as name:
        folder = Path(name)
        lab = Lab(2, stem="bw", script=script, log_dir=folder / "logs")
        lab.open()
        try:
            with phone_browser(folder, lab.host("h2").netns) as browser:
                say(f"real page and desk node: {args.rounds} joins")
                joins, cpu, idle = _real(lab, browser, folder, args.rounds, args.seconds, say)
                say(f"raw aiohttp + aiortc page: {args.rounds} joins")
                raw_joins, raw_cpu = _raw(lab, browser, folder, args.rounds, args.seconds, say)
        finally:
            close_lab(lab, say)
    report = {
        "join_ms_p50": statistics.median(joins),
        "raw_join_ms_p50": statistics.median(raw_joins),
        "desk_cpu_pct_per_citizen": cpu,
        "raw_cpu_pct": raw_cpu,
        "cpu_ratio": round(cpu / raw_cpu, 2) if raw_cpu else None,
        "desk_idle_cpu_pct": idle,
        "join_ms": joins,
        "raw_join_ms": raw_joins,
        "targets": {"join_ms_p50": JOIN_TARGET_MS, "cpu_ratio": CPU_TARGET_RATIO},
        "rounds": args.rounds,
        "seconds": args.seconds,
        "browser": "Debian chromium, fake camera and microphone, in a lab namespace",
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"join (admitted → first frame)  meshdesk {report['join_ms_p50']} ms"
            f"   raw page {report['raw_join_ms_p50']} ms  (p50; target ≤ {JOIN_TARGET_MS:g})"
        )
        print(f"server CPU, one citizen        meshdesk {cpu} %   raw page {raw_cpu} %"
              f"   ratio {report['cpu_ratio']} (target ≤ {CPU_TARGET_RATIO})")  # fmt: skip
    return 0
