"""``meshdesk bench call``: call setup, CPU and frame rate beside a raw aiortc pair.

Needs root: aioice ignores loopback, so the bench makes its own one-host network
lab (``field-kit/lab``, two namespaces on a bridge). ``setup_ms_p50`` is a real
meshdesk call end to end: two ``meshdesk run`` nodes in h1 and h2, linked, and
``call_start`` over the caller's control socket → the caller's first remote video
frame (see :mod:`meshdesk.bench._call_e2e`). Then, in h1, one process at a time: a
raw aiortc pair (``raw_setup_ms_p50``, ``raw_cpu_pct_per_endpoint``) and a pair of
meshdesk call legs with SDP through the wire codec (``legs_setup_ms_p50``, the CPU
and fps figures), all with the same synthetic 640×480@30 media.
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

from meshdesk.bench._call_e2e import measure_end_to_end
from meshdesk.bench._discovery_lab import close_lab, find_lab
from meshdesk.errors import MeshdeskError
from meshdesk.lab import Lab

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
    script = find_lab(args.lab, env, what="call")
    say = _progress(args.json)
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-call-") as folder:
        lab = Lab(2, stem="bc", script=script, log_dir=Path(folder) / "logs")
        lab.open()
        try:
            say(f"end to end: {args.rounds} calls between two nodes")
            try:
                e2e = measure_end_to_end(lab, Path(folder), args.rounds, say)
            finally:
                lab.stop_processes()
            results = {}
            for mode in ("raw", "meshdesk"):
                say(f"{mode}: {args.rounds} setups, then {args.seconds:g} s of media")
                argv = [sys.executable, "-m", "meshdesk.bench._call_worker", mode,
                        str(args.rounds), str(args.seconds)]  # fmt: skip
                out = lab.run("h1", argv, timeout=300).stdout
                results[mode] = json.loads(out.strip().splitlines()[-1])
        finally:
            close_lab(lab, say)
    ours, raw = results["meshdesk"], results["raw"]
    report = {
        "setup_ms_p50": e2e["setup_ms_p50"],
        "raw_setup_ms_p50": raw["setup_ms_p50"],
        "legs_setup_ms_p50": ours["setup_ms_p50"],
        "cpu_pct_per_endpoint": ours["cpu_pct_per_endpoint"],
        "raw_cpu_pct_per_endpoint": raw["cpu_pct_per_endpoint"],
        "cpu_ratio": round(ours["cpu_pct_per_endpoint"] / raw["cpu_pct_per_endpoint"], 2)
        if raw["cpu_pct_per_endpoint"]
        else None,
        "fps_received": ours["fps_received"],
        "raw_fps_received": raw["fps_received"],
        "setup_ms": e2e["setup_ms"],
        "node_setup_ms": e2e["node_setup_ms"],
        "legs_setup_ms": ours["setup_ms"],
        "raw_setup_ms": raw["setup_ms"],
        "video": "640x480@30 synthetic",
        "rounds": args.rounds,
        "seconds": args.seconds,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"setup (dial → first video)  meshdesk call {report['setup_ms_p50']} ms"
              f"   legs {report['legs_setup_ms_p50']} ms"
              f"   raw aiortc {report['raw_setup_ms_p50']} ms  (p50)")  # fmt: skip
        print(f"CPU per endpoint            meshdesk {report['cpu_pct_per_endpoint']} %"
              f"   raw aiortc {report['raw_cpu_pct_per_endpoint']} %")  # fmt: skip
        print(f"fps received                meshdesk {report['fps_received']}"
              f"   raw aiortc {report['raw_fps_received']}")  # fmt: skip
    return 0
