"""Running the ``meshdesk`` CLI in-process in tests: its exit code and both streams.

pytest puts this folder on ``sys.path``; a test module imports what it needs::

    from clirun import Cli, Run, cli_runner, fails, ok

and makes its own ``cli`` fixture from :func:`cli_runner` (which environment
variables it clears is the module's choice).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from meshdesk.cli import main

__all__ = ["Cli", "Run", "cli_runner", "fails", "ok"]


@dataclass
class Run:
    """One command's exit code, standard output and standard error."""

    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


Cli = Callable[..., Run]


def cli_runner(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``run("case", "list", ...)`` -> :class:`Run`, in this process."""

    def run(*argv: str) -> Run:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def ok(run: Run) -> Run:
    assert run.code == 0, run.err
    return run


def fails(run: Run, code: int, message: str) -> None:
    """The command failed with ``code`` and one line naming ``message`` (never a
    traceback)."""
    assert run.code == code, (run.code, run.out, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("meshdesk: error: ")
    assert message in lines[0], lines[0]
