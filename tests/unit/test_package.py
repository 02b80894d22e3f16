"""Packaging and public surface: layout, import mapping, complete ``__all__``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import meshdesk
from meshdesk.errors import MeshdeskError
from meshdesk.home import HOME_ENV, NodeHome

ROOT = Path(__file__).resolve().parents[2]


def test_sync_and_tui_folders_are_meshdesk_subpackages() -> None:
    sync = importlib.import_module("meshdesk.sync")
    tui = importlib.import_module("meshdesk.tui")
    assert Path(sync.__file__ or "").resolve().parent == ROOT / "sync"
    assert Path(tui.__file__ or "").resolve().parent == ROOT / "tui"


def test_installed_distribution_adds_no_generic_top_level_packages(tmp_path: Path) -> None:
    # -I: no current folder on sys.path, so only what the install provides is seen.
    probe = (
        "import importlib.util as u, meshdesk.sync, meshdesk.tui;"
        "print([n for n in ('sync', 'tui') if u.find_spec(n) is not None])"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_field_kit_holds_no_python() -> None:
    assert not list((ROOT / "field-kit").rglob("*.py"))


def _public_modules() -> list[ModuleType]:
    modules = [meshdesk]
    for info in pkgutil.walk_packages(meshdesk.__path__, "meshdesk."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


@pytest.mark.parametrize("module", _public_modules(), ids=lambda m: m.__name__)
def test_dunder_all_is_complete_and_true(module: ModuleType) -> None:
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} has no __all__"
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
    # Every public class or function defined in the module itself is exported.
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", None) == module.__name__:
            assert name in exported, f"{module.__name__}.{name} is public but not in __all__"


def test_every_error_is_in_the_documented_tree() -> None:
    from meshdesk import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, MeshdeskError)
        assert name in (errors.__doc__ or ""), f"{name} is missing from the documented tree"
        assert isinstance(cls.exit_code, int)
        assert cls.exit_code != 0


def test_home_resolution_order(tmp_path: Path) -> None:
    assert NodeHome.resolve(str(tmp_path / "a"), {HOME_ENV: "/elsewhere"}).path == tmp_path / "a"
    assert NodeHome.resolve(None, {HOME_ENV: str(tmp_path / "b")}).path == tmp_path / "b"
    default = NodeHome.resolve(None, {}).path
    assert default.is_absolute()
    assert "meshdesk" in default.parts
