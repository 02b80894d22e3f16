"""``meshdesk drill SCENARIO --report DIR [--mode sim|lab] [--seed N]``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import meshdesk
from meshdesk.config import Config, load_config
from meshdesk.drill.report import LANGS
from meshdesk.drill.run import MODES, run_drill
from meshdesk.drill.sim import Progress
from meshdesk.errors import MeshdeskError, UsageError
from meshdesk.home import NodeHome

__all__ = ["add_drill_parser", "find_scenario"]

Env = Mapping[str, str]


def find_scenario(name: str, cwd: Path | None = None) -> Path:
    """A scenario file by path, or by the name of a shipped scenario (``smoke``).

    Raises:
        UsageError: nothing of that name.
    """
    path = Path(name)
    if path.is_file():
        return path
    roots = [(cwd or Path.cwd()) / "field-kit" / "scenarios"]
    roots.append(Path(meshdesk.__file__).resolve().parents[1] / "field-kit" / "scenarios")
    for root in roots:
        candidate = root / f"{name}.toml"
        if candidate.is_file():
            return candidate
    raise UsageError(f"no scenario file {name!r} (and no shipped scenario of that name)")


class _Printer:
    """Live progress: one rewritten line on a terminal, a line per tenth otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._next = 0.0
        self._phase = ""

    def __call__(self, p: Progress) -> None:
        line = (
            f"[{p.phase}] t={p.t / 60:6.1f}/{p.duration / 60:.1f} min  cases {p.cases}"
            f"  at HQ {p.reached}  backlog {p.backlog}  links {p.links}"
        )
        if self._tty:
            self._stream.write("\r\x1b[K" + line)
            self._stream.flush()
        elif p.t >= self._next or p.phase != self._phase:
            self._stream.write(line + "\n")
            self._next = p.t + p.duration / 10
            self._phase = p.phase

    def done(self) -> None:
        if self._tty:
            self._stream.write("\n")


def _node_language(env: Env) -> str:
    """The report's default language: this machine's node's (``[node] language``),
    else the default of a new node (Japanese)."""
    try:
        home = NodeHome.resolve(None, env)
        if home.config_path.exists():
            return load_config(home.config_path).node.language
    except MeshdeskError:
        pass  # no readable node here: the default
    return Config().node.language


def _term_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _drill(args: argparse.Namespace, env: Env) -> int:
    scenario = find_scenario(args.scenario)
    printer = _Printer(sys.stderr)
    # A lab drill owns namespaces and node processes: on SIGTERM (a service manager,
    # `kill`) unwind exactly as on Ctrl-C, so its clean-up runs.
    previous = signal.signal(signal.SIGTERM, _term_as_interrupt)
    try:
        report: dict[str, Any] = run_drill(
            scenario,
            Path(args.report),
            mode=args.mode,
            seed=args.seed,
            progress=None if args.quiet else printer,
            lang=args.lang or _node_language(env),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        printer.done()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(
            f"drill {report['scenario']} ({report['mode']}, seed {report['seed']}): PASS — "
            f"{report['cases_created']} cases, 0 lost, converged, reach HQ p95 "
            f"{report['reach_hq_p95_s']} s; report in {args.report}"
        )
    return 0


def add_drill_parser(commands: Any) -> None:
    """Register ``meshdesk drill`` on the CLI's subcommands."""
    drill = commands.add_parser(
        "drill",
        help="run a disaster drill scenario and write an after-action report",
        description=(
            "Play a drill scenario (a TOML file, or a shipped name: smoke, yokote-12, "
            "flood-courier, stolen-laptop, prefecture-100, prefecture-300,"
            " prefecture-1000). Exit 0 when nothing was lost "
            "and every store converged, 13 when the check failed, 12 for a bad scenario."
        ),
    )
    drill.add_argument("scenario", metavar="SCENARIO", help="scenario file or shipped name")
    drill.add_argument("--report", required=True, metavar="DIR", help="folder for the report")
    drill.add_argument(
        "--mode",
        choices=MODES,
        default="sim",
        help=(
            "sim: every node in one process on a virtual clock; lab: real meshdesk run "
            "processes in network namespaces (needs root; wall time = scenario time x "
            "time_scale)"
        ),
    )
    drill.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    drill.add_argument(
        "--lang", choices=LANGS, help="language of report.md and .html (default: the node's)"
    )
    drill.add_argument("--quiet", action="store_true", help="no live progress")
    drill.add_argument("--json", action="store_true", help="print the report as JSON")
    drill.set_defaults(handler=_drill)
