"""``meshdesk bench call``: call setup, CPU and frame rate beside a raw aiortc pair.

Needs root: aioice ignores loopback, so the bench makes its own one-host network
lab (``field-kit/lab``, a namespace with a veth) and runs each pair there in its
own process, one after the other: a raw aiortc pair, then a meshdesk pair (call
legs, SDP through the wire codec, meshdesk's encoder profile), with the same
synthetic 640×480@30 media. ``setup_ms_p50`` is dial → first remote video frame.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshdesk.bench._discovery_lab import BenchLab, find_lab
from meshdesk.errors import MeshdeskError

__all__ = ["add_parser", "run"]


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = benches.add_parser(
        "call", help="call setup, CPU and fps beside a raw aiortc pair (root; network lab)"
    )
    bench.add_argument("--rounds", type=int, default=7, help="setups per side (default 7)")
    bench.add_argument(
        "--seconds", type=float, default=8.0, help="seconds of media measured for CPU and fps"
    )
    bench.add_argument("--lab", metavar="PATH", help="the lab script (default ./field-kit/lab)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=run)


def _progress(quiet: bool) -> Any:
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    return say


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if os.geteuid() != 0:
        raise MeshdeskError(
            "bench call needs root: it makes a network namespace (aioice ignores loopback)"
        )
    if args.rounds < 1 or args.seconds <= 0:
        raise MeshdeskError("--rounds must be at least 1 and --seconds positive")
    script = find_lab(args.lab, env)
    say = _progress(args.json)
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-call-") as folder:
        lab = BenchLab(script, Path(folder), say)
        lab.clean_stale()
        lab.up(1)
        try:
            results = {}
            for mode in ("raw", "meshdesk"):
                say(f"{mode}: {args.rounds} setups, then {args.seconds:g} s of media")
                argv = [sys.executable, "-m", "meshdesk.bench._call_worker", mode,
                        str(args.rounds), str(args.seconds)]  # fmt: skip
                out = lab.cli("exec", lab.prefix, "h1", "--", *argv, timeout=300)
                results[mode] = json.loads(out.strip().splitlines()[-1])
        finally:
            lab.down()
    ours, raw = results["meshdesk"], results["raw"]
    report = {
        "setup_ms_p50": ours["setup_ms_p50"],
        "raw_setup_ms_p50": raw["setup_ms_p50"],
        "cpu_pct_per_endpoint": ours["cpu_pct_per_endpoint"],
        "raw_cpu_pct_per_endpoint": raw["cpu_pct_per_endpoint"],
        "cpu_ratio": round(ours["cpu_pct_per_endpoint"] / raw["cpu_pct_per_endpoint"], 2)
        if raw["cpu_pct_per_endpoint"]
        else None,
        "fps_received": ours["fps_received"],
        "raw_fps_received": raw["fps_received"],
        "setup_ms": ours["setup_ms"],
        "raw_setup_ms": raw["setup_ms"],
        "video": "640x480@30 synthetic",
        "rounds": args.rounds,
        "seconds": args.seconds,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"setup (dial → first video)  meshdesk {report['setup_ms_p50']} ms"
              f"   raw aiortc {report['raw_setup_ms_p50']} ms  (p50)")  # fmt: skip
        print(f"CPU per endpoint            meshdesk {report['cpu_pct_per_endpoint']} %"
              f"   raw aiortc {report['raw_cpu_pct_per_endpoint']} %")  # fmt: skip
        print(f"fps received                meshdesk {report['fps_received']}"
              f"   raw aiortc {report['raw_fps_received']}")  # fmt: skip
    return 0
