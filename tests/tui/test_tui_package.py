"""The console's public surface, and the rule that the core never imports it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import meshdesk.tui


def _modules() -> list[ModuleType]:
    found = [meshdesk.tui]
    for info in pkgutil.walk_packages(meshdesk.tui.__path__, "meshdesk.tui."):
        if not any(part.startswith("_") for part in info.name.split(".")[2:]):
            found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_dunder_all_is_complete_and_true(module: ModuleType) -> None:
    exported = module.__all__
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", None) == module.__name__:
            assert name in exported, f"{module.__name__}.{name} is public but not in __all__"


def test_the_core_and_the_cli_never_import_the_console() -> None:
    probe = (
        "import sys, meshdesk, meshdesk.node, meshdesk.cli, meshdesk.bench, meshdesk.cases;"
        "from meshdesk.cli import build_parser; build_parser();"
        "print(sorted(m for m in sys.modules if m.startswith(('meshdesk.tui', 'textual'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
