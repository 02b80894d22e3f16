"""Where a key of a TOML document is written: line numbers for semantic errors.

``tomllib`` reports the line of a syntax error but gives no positions for a
document that parses. :func:`key_lines` scans the text the way TOML is laid out —
``[table]`` and ``[[array.of.tables]]`` headers, ``key = value`` lines (dotted and
quoted keys too) — and maps each path, with array-of-tables indexes, to the line
that writes it: ``("sites", 2, "nodes", 0, "role") -> 17``. Values that span
lines (multi-line arrays, strings) are attributed to their key's line; lines
inside them are skipped by tracking brackets and triple quotes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["KeyLines", "key_lines", "line_of"]

Path = tuple[str | int, ...]
KeyLines = dict[Path, int]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


def _open_brackets(text: str) -> int:
    """Net ``[``/``{`` minus ``]``/``}`` outside strings and comments on a line."""
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return depth


def key_lines(text: str) -> KeyLines:
    """Map every header and key path of ``text`` to its 1-based line number."""
    lines: KeyLines = {}
    counts: dict[Path, int] = {}
    table: Path = ()
    depth = 0
    in_multiline = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = ""
            continue
        if depth > 0:
            depth += _open_brackets(line)
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            names = _parts(header.group(2))
            path: Path = ()
            for name in names[:-1]:
                path = (*path, name)
                if path in counts:  # an array of tables: the current (last) element
                    path = (*path, counts[path] - 1)
            path = (*path, names[-1])
            if header.group(1) == "[[":
                index = counts.get(path, 0)
                counts[path] = index + 1
                path = (*path, index)
            lines.setdefault(path, number)
            table = path
            continue
        key = _KEY.match(line)
        if key is None:
            continue
        path = (*table, *_parts(key.group(1)))
        lines.setdefault(path, number)
        rest = line[key.end() :]
        for triple in ('"""', "'''"):
            if rest.count(triple) == 1:
                in_multiline = triple
        if not in_multiline:
            depth = max(0, _open_brackets(rest))
    return lines


def line_of(lines: KeyLines, path: Sequence[str | int]) -> int | None:
    """The line of ``path``, or of its longest prefix that has one."""
    for end in range(len(path), 0, -1):
        found = lines.get(tuple(path[:end]))
        if found is not None:
            return found
    return None
