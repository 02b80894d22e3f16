"""Drill scenarios: TOML files of sites, topology and a timeline, parsed and checked.

See ``field-kit/scenarios/README.md`` for the format. :func:`load_scenario` reads a
file; :func:`parse_scenario` parses text. Every problem is reported with the line
that holds it (syntax errors from ``tomllib``, semantic ones located with
:mod:`meshdesk.drill._lines`) in one :class:`ScenarioError`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from meshdesk.drill._build import Parser, build
from meshdesk.drill._lines import key_lines
from meshdesk.drill.model import Scenario, ScenarioError

__all__ = ["load_scenario", "parse_scenario"]


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file.

    Raises:
        ScenarioError: unreadable, not TOML, or not a playable scenario (with lines).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), [(None, f"cannot read: {exc}")]) from exc
    return parse_scenario(text, source=str(path))


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    """Parse and check scenario ``text``; see :func:`load_scenario`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ScenarioError(source, [(int(match.group(1)) if match else None, message)]) from exc
    parser = Parser(data, key_lines(text), source)
    scenario = build(parser)
    if parser.problems or scenario is None:
        problems = sorted(parser.problems, key=lambda p: p[0] or 0)
        raise ScenarioError(source, problems or [(None, "not a scenario")])
    return scenario
