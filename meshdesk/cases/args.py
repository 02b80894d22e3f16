"""Checked arguments of case operations (JSON-shaped: from the control socket or the CLI).

Each helper raises :class:`~meshdesk.errors.UsageError` with one line naming the key.
Shared by :mod:`meshdesk.cases.ops` and the console's fake node, so both refuse the
same input the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshdesk.cases.model import Category, Status, Urgency
from meshdesk.errors import UsageError

__all__ = ["choice_arg", "need_arg", "text_arg", "texts_arg"]


def text_arg(args: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        if required:
            raise UsageError(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key} must be text")
    return value


def need_arg(args: Mapping[str, Any], key: str) -> str:
    value = text_arg(args, key)
    assert value is not None
    return value


def choice_arg(
    args: Mapping[str, Any], key: str, allowed: type[Category | Urgency | Status]
) -> str:
    value = need_arg(args, key)
    known = [str(m) for m in allowed]
    if value not in known:
        raise UsageError(f"unknown {key} {value!r}; choose one of: {', '.join(known)}")
    return value


def texts_arg(args: Mapping[str, Any], key: str) -> list[str]:
    value = args.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{key} must be a list of names")
    return list(value)
